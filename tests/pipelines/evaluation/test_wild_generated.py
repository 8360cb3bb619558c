"""Published generated images: scored as the service would, against human controls stored alike."""

from __future__ import annotations

import dataclasses
import io
import re
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.metrics import roc_auc_score

from ai_image_detection.calibration import PlattScaling
from ai_image_detection.contract import VERDICTS, verdict
from ai_image_detection.input_pipeline import Perturbation
from ai_image_detection.pipelines.evaluation.wild_generated import (
    PublishedScores,
    cross_fitted_answers,
    generator_folds,
    generator_of,
    score_published,
    template_name,
    wild_generated_report,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from ai_image_detection.tiling import tile_crops

SIZE = 32
WEBP_80 = Perturbation(kind="webp", quality=80)
IDENTITY = PlattScaling(slope=1.0, intercept=0.0)
BAND = (0.05, 0.9)
GENERATORS = {"flux": "^(dark|grey)"}
"""The dark and the grey template preview one generator; the bright one (two previews) is its own."""


def mean_pixel_model() -> keras.Model:
    """P(AI) = sigmoid((mean pixel - 128) / 16): bright is AI, dark human."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.full((3, 1), 1 / 48, dtype=np.float32), np.array([-8.0], dtype=np.float32)])
    return model


def expected_score(pixels: np.ndarray) -> float:
    """What the model says of an image: the mean over its tiles of each tile's P(AI)."""
    tiles = tile_crops(pixels, SIZE, 9).astype(np.float64)
    return float(np.mean(1 / (1 + np.exp(-(tiles.mean(axis=(1, 2, 3)) - 128) / 16))))


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def webp_round_trip(path: str) -> np.ndarray:
    encoded = io.BytesIO()
    Image.open(path).convert("RGB").save(encoded, format="WEBP", quality=80)
    return decoded(encoded.getvalue())


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return mean_pixel_model()


@pytest.fixture(scope="module")
def predictions(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Human controls (validation and unseen), a trained-on human and an AI image that must be left out."""
    folder = tmp_path_factory.mktemp("controls")
    rng = np.random.default_rng(3)
    rows = []
    layout = [
        ("validation", 0, 70.0),
        ("validation", 0, 150.0),
        ("unseen", 0, 100.0),
        ("unseen", 0, 135.0),
        ("train", 0, 40.0),
        ("validation", 1, 180.0),
    ]
    for index, (split, label, brightness) in enumerate(layout):
        path = folder / f"{split}-{index}.png"
        pixels = np.clip(rng.normal(brightness, 3.0, (48, 48 + 16 * index, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path)
        rows.append({"path": str(path), "split": split, "label": label, "probability_ai": 0.1 + 0.1 * index})
    return pd.DataFrame(rows).astype({"label": "Int8"})


def scores_of(model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame) -> PublishedScores:
    scores = score_published(
        model, published, predictions, IDENTITY, WEBP_80, GENERATORS, max_tiles=9, batch_size=4
    )
    assert scores is not None
    return scores


def report_of(model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame) -> dict:
    return wild_generated_report(scores_of(model, published, predictions), 0.5, BAND, cross_fitted=None)


def test_each_published_image_is_scored_as_uploaded_and_answered_at_the_band(
    model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame
) -> None:
    report = report_of(model, published, predictions)
    scores = {photo.member: expected_score(decoded(photo.data)) for photo in published}
    per_image = report["per_image"]
    assert [row["member"] for row in per_image] == sorted(scores, key=scores.__getitem__), "lowest first"
    for row in per_image:
        assert row["probability_ai"] == pytest.approx(scores[row["member"]], abs=1e-5)
        assert row["template"] == template_name(row["member"])
    assert [row["answer"] for row in per_image] == ["human", "inconclusive", "ai", "ai"]
    assert (report["images"], report["templates"]) == (4, 3)
    assert report["sources"] == ["templates-media==1.0: MIT"]
    assert report["answers"]["ai_images"] == {"human": 0.25, "inconclusive": 0.25, "ai": 0.5}
    assert (report["band_chosen_on_them"], report["answers_cross_fitted"]) == (False, None)


def test_the_controls_are_the_untrained_humans_re_saved_as_the_published_images_are(
    model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame
) -> None:
    report = report_of(model, published, predictions)
    controls = predictions[predictions["split"].isin(["validation", "unseen"]) & (predictions["label"] == 0)]
    resaved = np.array([expected_score(webp_round_trip(path)) for path in controls["path"]])
    generated = np.array([expected_score(decoded(photo.data)) for photo in published])
    labels = np.r_[np.ones(len(generated)), np.zeros(len(resaved))]
    assert report["human_controls"] == {
        "images": 4,
        "splits": ["validation", "unseen"],
        "resave": {"kind": "webp", "quality": 80},
    }
    assert report["at_threshold"]["roc_auc"] == pytest.approx(
        roc_auc_score(labels, np.r_[generated, resaved])
    )
    assert report["at_threshold"]["recall"] == pytest.approx(np.mean(generated >= 0.5))
    human_answers = [verdict(score, *BAND) for score in resaved]
    assert report["answers"]["human_images"]["human"] == pytest.approx(human_answers.count("human") / 4)
    as_stored = roc_auc_score(labels, np.r_[generated, controls["probability_ai"].to_numpy(dtype=float)])
    assert report["roc_auc_humans_as_stored"] == pytest.approx(as_stored)


def test_each_package_s_images_are_ranked_against_the_same_controls(
    model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame
) -> None:
    """The bright previews come from another package: each package gets its own AUROC and answers."""
    from_two = [
        dataclasses.replace(photo, package="presets", version="2.0") if "bright" in photo.member else photo
        for photo in published
    ]
    report = report_of(model, from_two, predictions)
    controls = predictions[predictions["split"].isin(["validation", "unseen"]) & (predictions["label"] == 0)]
    resaved = np.array([expected_score(webp_round_trip(path)) for path in controls["path"]])
    as_stored = controls["probability_ai"].to_numpy(dtype=float)
    expected = []
    for source in ("presets==2.0", "templates-media==1.0"):
        photos = [photo for photo in from_two if f"{photo.package}=={photo.version}" == source]
        generated = np.array([expected_score(decoded(photo.data)) for photo in photos])
        labels = np.r_[np.ones(len(generated)), np.zeros(len(resaved))]
        answers = [verdict(score, *BAND) for score in generated]
        expected.append(
            {
                "source": source,
                "images": len(photos),
                "roc_auc": pytest.approx(roc_auc_score(labels, np.r_[generated, resaved])),
                "roc_auc_humans_as_stored": pytest.approx(roc_auc_score(labels, np.r_[generated, as_stored])),
                "answers": {answer: answers.count(answer) / len(answers) for answer in VERDICTS},
            }
        )
    assert report["by_source"] == expected
    assert {row["member"]: row["source"] for row in report["per_image"]} == {
        photo.member: f"{photo.package}=={photo.version}" for photo in from_two
    }


def test_without_published_images_there_is_nothing_to_score_and_no_section(
    model: keras.Model, predictions: pd.DataFrame
) -> None:
    assert score_published(model, [], predictions, IDENTITY, WEBP_80, {}, max_tiles=9, batch_size=4) is None
    assert wild_generated_report(None, 0.5, BAND, cross_fitted=None) == {}


def test_the_two_halves_split_the_generators_and_alternate_over_the_controls(
    model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame
) -> None:
    scores = scores_of(model, published, predictions)
    assert list(scores.generated["member"]) == sorted(photo.member for photo in published)
    assert list(scores.generated["generator"]) == ["bright_t2i", "bright_t2i", "flux", "flux"]
    assert list(scores.generated["fold"]) == [0, 0, 1, 1], "no generator in both halves"
    report = wild_generated_report(scores, 0.5, BAND, cross_fitted=None)
    assert report["generators"] == {"count": 2, "halves": [["bright_t2i"], ["flux"]]}
    labels, values = scores.band_set()
    assert list(labels) == [1, 1, 1, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(values, np.r_[scores.generated["probability_ai"], scores.controls])
    for fold in (0, 1):
        labels, values = scores.band_set(fold)
        generated = scores.generated.loc[scores.generated["fold"] == fold, "probability_ai"]
        assert list(labels) == [1, 1, 0, 0]
        np.testing.assert_array_equal(values, np.r_[generated, scores.controls[fold::2]])


def test_each_half_is_answered_at_the_band_chosen_with_the_other(
    model: keras.Model, published: list[SourcePhoto], predictions: pd.DataFrame
) -> None:
    scores = scores_of(model, published, predictions)
    asked: list[list[tuple[np.ndarray, np.ndarray]]] = []
    bands = [(0.0, 0.95), (0.5, 0.5)]  # first for half 0 (everything inconclusive but the top), then half 1

    def chooser(sets: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
        asked.append(sets)
        return bands[len(asked) - 1]

    answers = cross_fitted_answers(scores, chooser)
    for sets, other in zip(asked, (1, 0), strict=True):
        (chosen_on,) = sets
        np.testing.assert_array_equal(chosen_on[1], scores.band_set(other)[1])
    generated = scores.generated
    expected = [
        verdict(score, *bands[fold])
        for score, fold in zip(generated["probability_ai"], generated["fold"], strict=True)
    ]
    assert answers.tolist() == expected, "each image answered at the band of the half it is not in"
    report = wild_generated_report(scores, 0.5, BAND, cross_fitted=answers)
    assert report["band_chosen_on_them"]
    shares = {name: expected.count(name) / 4 for name in ("human", "inconclusive", "ai")}
    assert report["answers_cross_fitted"] == shares
    by_member = {row["member"]: row["answer_cross_fitted"] for row in report["per_image"]}
    assert by_member == dict(zip(generated["member"], expected, strict=True))


@pytest.mark.parametrize(
    ("member", "template"),
    [
        ("pkg/templates/flux_schnell-1.webp", "flux_schnell"),
        ("pkg/templates/image_flux2_klein_9b_kv_image_edit-2.webp", "image_flux2_klein_9b_kv_image_edit"),
        ("pkg/templates/templates-6-key-frames-1.webp", "templates-6-key-frames"),
        ("pkg/templates/default.webp", "default"),
    ],
)
def test_the_template_is_the_file_name_without_its_preview_index(member: str, template: str) -> None:
    assert template_name(member) == template


@pytest.mark.parametrize(
    ("template", "generator"),
    [
        ("image_flux2_fp8", "flux2"),
        ("flux_schnell_full_text_to_image", "flux1"),
        ("flux1_krea_dev", "flux1"),
        ("image_qwen_image", "image_qwen_image"),
    ],
)
def test_a_template_previews_the_first_generator_whose_pattern_it_contains(
    template: str, generator: str
) -> None:
    assert generator_of(template, {"flux2": "flux2", "flux1": "^flux(1_|_)"}) == generator


def test_the_largest_generators_are_placed_first_each_in_the_emptier_half() -> None:
    folds = generator_folds(["c", "a", "a", "a", "b", "b", "d"])
    halves = [
        sorted({name for name, fold in zip("caaabbd", folds, strict=True) if fold == half}) for half in (0, 1)
    ]
    assert halves == [["a", "d"], ["b", "c"]], "a (3) in 0, b (2) in 1, c in 1 (2 < 3), d in 0 (3 < 4)"
    assert generator_folds([]).size == 0


def test_the_configured_generator_map_fits_the_catalog_s_published_images() -> None:
    """Every pattern names a published image, none names one another pattern names, none is listed twice.

    The first matching pattern wins, so an image two patterns match would be grouped by the order
    of the file, and a pattern that matches nothing is a generator the cross-fitting never sees.
    """
    root = Path(__file__).resolve().parents[3]
    catalog = yaml.safe_load((root / "conf/base/catalog.yml").read_text(encoding="utf-8"))
    evaluation = yaml.safe_load((root / "conf/base/parameters_evaluation.yml").read_text(encoding="utf-8"))
    patterns: dict[str, str] = evaluation["evaluation"]["wild_generated_generators"]
    members = [
        member for source in catalog["wild_generated_images"]["sources"] for member in source["members"]
    ]
    assert len(members) == len(set(members))
    templates = [template_name(member) for member in members]
    matched = {
        template: [name for name, pattern in patterns.items() if re.search(pattern, template)]
        for template in templates
    }
    assert {template: names for template, names in matched.items() if len(names) > 1} == {}
    assert set(patterns) - {names[0] for names in matched.values() if names} == set()
