"""The heads: P(AI) first, attribution second with its family names, both surviving save and load."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, OUTPUT_NAME
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.models.heads import FamilyAttribution, model_families
from ai_image_detection.models.zoo import probe_detector, probe_head

FAMILIES = ["human", "realcugan", "waifu2x"]


def test_a_detector_with_families_answers_both() -> None:
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]), FAMILIES)
    assert model.output_names == [OUTPUT_NAME, FAMILY_OUTPUT_NAME]
    probability, families = model.predict(np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)), verbose=0)
    assert probability.shape == (3, 1) and families.shape == (3, 3)
    np.testing.assert_allclose(families.sum(axis=1), 1.0, rtol=1e-5)
    assert model_families(model) == FAMILIES


def test_without_families_the_detector_has_one_output() -> None:
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]))
    assert len(model.outputs) == 1
    assert model_families(model) == []


def test_the_family_names_survive_saving(tmp_path: Path) -> None:
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]), FAMILIES)
    model.save(tmp_path / "detector.keras")
    reloaded = keras.saving.load_model(tmp_path / "detector.keras")
    assert model_families(reloaded) == FAMILIES
    images = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3))
    for before, after in zip(
        model.predict(images, verbose=0), reloaded.predict(images, verbose=0), strict=True
    ):
        np.testing.assert_allclose(after, before, rtol=1e-6)


@pytest.mark.parametrize(
    "families",
    [["realcugan", "human"], ["human"], ["human", "gan", "gan"]],
    ids=["human-not-first", "no-ai-family", "repeated"],
)
def test_malformed_families_are_refused(families: list[str]) -> None:
    with pytest.raises(ValueError, match="human' first"):
        FamilyAttribution(families)


def test_a_probe_ships_its_trained_heads_behind_the_extractor() -> None:
    image = keras.Input((16, 16, 3), name="image")
    extractor = keras.Model(image, keras.layers.GlobalAveragePooling2D()(image), name="feature_extractor")
    head = probe_head(3, FAMILIES, 0.0, [100.0, 100.0, 100.0], [400.0, 400.0, 400.0])
    detector = probe_detector(extractor, head)
    images = np.random.default_rng(2).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    features = images.mean(axis=(1, 2))
    for shipped, trained in zip(
        detector.predict(images, verbose=0), head.predict(features, verbose=0), strict=True
    ):
        np.testing.assert_allclose(shipped, trained, rtol=1e-5)
    assert model_families(detector) == FAMILIES, "found inside the nested head"
    standardised = head.get_layer("standardise")(features)
    np.testing.assert_allclose(np.asarray(standardised), (features - 100.0) / 20.0, rtol=1e-5)
