"""Input pipelines: crop without resampling, train-only augmentation, both resolutions."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.input_pipeline import (
    AugmentationParams,
    JpegOp,
    Perturbation,
    build_augmenter,
    decode,
    make_dataset,
    make_prediction_dataset,
    perturbed_pixels,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def project_params(**overrides: object) -> AugmentationParams:
    """The project's augmentation parameters, with ``overrides``."""
    values = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_augmentation.yml").read_text())[
        "augmentation"
    ]
    return AugmentationParams.model_validate({**values, **overrides})


OPS = (
    "flip",
    "rotation",
    "translation",
    "zoom",
    "shear",
    "gaussian_blur",
    "sharpness",
    "brightness",
    "contrast",
    "saturation",
    "hue",
    "jpeg",
)


def no_augmentation() -> AugmentationParams:
    """The project's parameters with every augmentation switched off."""
    params = project_params()
    return params.model_copy(
        update={op: getattr(params, op).model_copy(update={"probability": 0.0}) for op in OPS}
    )


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(8):
        pixels = rng.integers(0, 256, (400, 420, 3), dtype=np.uint8)
        path = folder / f"{index}.png"
        Image.fromarray(pixels).save(path)
        split = "validation" if index >= 6 else "train"
        rows.append({"path": str(path), "label": index % 2, "split": split})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("size", [224, 384])
def test_both_resolutions_give_batches_of_raw_pixels(manifest: pd.DataFrame, size: int) -> None:
    images, labels = next(
        iter(make_dataset(manifest, "train", size, 4, project_params(), seed=1, augment=None))
    )
    assert images.shape == (4, size, size, 3)
    assert images.dtype == tf.float32
    assert labels.shape == (4,)
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0


def test_validation_is_the_centre_crop_untouched(manifest: pd.DataFrame) -> None:
    batches = make_dataset(manifest, "validation", 224, 2, project_params(), seed=1)
    images, _ = next(iter(batches))
    original = np.asarray(Image.open(manifest.loc[6, "path"]), dtype=np.float32)
    top, left = (400 - 224) // 2, (420 - 224) // 2
    np.testing.assert_array_equal(images[0].numpy(), original[top : top + 224, left : left + 224])
    again, _ = next(iter(make_dataset(manifest, "validation", 224, 2, project_params(), seed=99)))
    np.testing.assert_array_equal(images.numpy(), again.numpy())


def test_training_crops_are_windows_of_the_original(manifest: pd.DataFrame) -> None:
    images, labels = next(
        iter(make_dataset(manifest, "train", 64, 1, project_params(shuffle_buffer=1), seed=3))
    )
    original = np.asarray(Image.open(manifest.loc[0, "path"]), dtype=np.float32)
    crop = images[0].numpy()
    windows = np.lib.stride_tricks.sliding_window_view(original, (64, 64, 3))[..., :, :, :]
    assert np.any(np.all(windows == crop, axis=(-3, -2, -1))), "a crop, not a resampled image"
    assert float(labels[0]) == 0.0


def test_disabled_augmentations_are_the_identity() -> None:
    image = tf.constant(np.random.default_rng(1).uniform(0, 255, (32, 32, 3)), dtype=tf.float32)
    np.testing.assert_array_equal(build_augmenter(no_augmentation(), seed=0)(image).numpy(), image.numpy())


def test_jpeg_reencoding_changes_pixels_and_keeps_the_range() -> None:
    params = no_augmentation().model_copy(
        update={"jpeg": JpegOp(probability=1.0, min_quality=30, max_quality=30)}
    )
    image = tf.constant(np.random.default_rng(2).uniform(0, 255, (32, 32, 3)), dtype=tf.float32)
    out = build_augmenter(params, seed=0)(image).numpy()
    assert out.shape == (32, 32, 3)
    assert not np.array_equal(out, image.numpy())
    assert out.min() >= 0 and out.max() <= 255


def test_a_split_without_labels_is_a_clear_error(manifest: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="no labelled 'test' rows"):
        make_dataset(manifest, "test", 64, 2, project_params(), seed=0)


@pytest.mark.parametrize(
    ("image_format", "options"),
    [
        ("JPEG", {"quality": 95, "subsampling": "4:2:0"}),
        ("JPEG", {"quality": 75, "subsampling": "4:4:4"}),
        ("JPEG", {"quality": 90, "subsampling": "4:2:2", "progressive": True}),
        ("PNG", {}),
    ],
)
def test_training_decodes_exactly_the_pixels_the_service_decodes(
    tmp_path: Path, image_format: str, options: dict[str, object]
) -> None:
    pixels = np.random.default_rng(3).integers(0, 256, (67, 93, 3), dtype=np.uint8)
    path = tmp_path / f"image.{image_format.lower()}"
    Image.fromarray(pixels).save(path, format=image_format, **options)

    decoded = decode(tf.constant(str(path))).numpy()

    served = np.asarray(decode_image(path.read_bytes(), ImageLimits(min_side=1)).pixels, dtype=np.float32)
    np.testing.assert_array_equal(decoded, served)


def _photo_like(seed: int = 0, size: int = 64) -> np.ndarray:
    """Smooth gradients plus grain: content that JPEG changes and resizing blurs."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, size)[None, :, None] + np.linspace(0, 40, size)[:, None, None]
    return np.clip(ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)


def test_a_resave_quality_saves_the_resized_image_as_jpeg_afterwards() -> None:
    pixels = _photo_like()
    lossless = perturbed_pixels(pixels, Perturbation(kind="downscale", factor=0.75))
    resaved = perturbed_pixels(pixels, Perturbation(kind="downscale", factor=0.75, resave_quality=60))
    assert lossless.shape == resaved.shape == (48, 48, 3)
    # exactly the resized file, re-encoded by the `jpeg` perturbation at that quality
    np.testing.assert_array_equal(resaved, perturbed_pixels(lossless, Perturbation(kind="jpeg", quality=60)))
    assert np.abs(resaved.astype(int) - lossless.astype(int)).mean() > 3, "the re-save changed the pixels"


@pytest.mark.parametrize("kind", ["jpeg", "webp"])
def test_a_re_encoding_perturbation_takes_its_quality_not_a_second_resave(kind: str) -> None:
    with pytest.raises(ValueError, match=f"a {kind} perturbation is the re-save itself"):
        Perturbation(kind=kind, quality=90, resave_quality=90)


def test_a_webp_perturbation_is_a_lossy_webp_file_decoded_again() -> None:
    pixels = _photo_like(size=50)
    resaved = perturbed_pixels(pixels, Perturbation(kind="webp", quality=40))
    encoded = io.BytesIO()
    Image.fromarray(pixels).save(encoded, format="WEBP", quality=40)
    np.testing.assert_array_equal(resaved, np.asarray(Image.open(encoded).convert("RGB")))
    assert np.abs(resaved.astype(int) - pixels.astype(int)).mean() > 3, "lossy: the pixels changed"


def test_a_webp_perturbation_works_inside_tf_data(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    Image.fromarray(_photo_like(size=40)).save(path)
    (batch,) = make_prediction_dataset([str(path)], 32, 1, Perturbation(kind="webp", quality=60))
    resaved = perturbed_pixels(_photo_like(size=40), Perturbation(kind="webp", quality=60))
    np.testing.assert_array_equal(batch.numpy()[0], resaved[4:36, 4:36].astype(np.float32))
