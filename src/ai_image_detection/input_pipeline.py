"""Input pipelines: tf.data from the image manifest, with train-only augmentation.

Images are cropped to the model's resolution, never squash-resized by default: resizing
resamples every pixel and erases the up-sampling fingerprints a detector needs (resize only
with ``resize: true``). Augmentations run per image, each with its own probability and
magnitude, on the training split only; validation data is only centre-cropped.

The robustness recipe of Wang et al. (2020), Gaussian blur plus JPEG re-encoding at a random
quality, is what lets a detector survive re-shared (re-compressed, resized) images.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any, Literal

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ai_image_detection.families import family_targets

Augment = Callable[[tf.Tensor], tf.Tensor]


class Op(BaseModel):
    """One augmentation: applied to an image with ``probability``, at ``magnitude``."""

    model_config = ConfigDict(extra="forbid")

    probability: float = Field(ge=0, le=1)
    magnitude: float = Field(ge=0)


class JpegOp(BaseModel):
    """JPEG re-encoding at a quality drawn uniformly from ``[min_quality, max_quality]``."""

    model_config = ConfigDict(extra="forbid")

    probability: float = Field(ge=0, le=1)
    min_quality: int = Field(ge=1, le=100)
    max_quality: int = Field(ge=1, le=100)


class AugmentationParams(BaseModel):
    """Parameters of the input pipelines (``conf/base/parameters_augmentation.yml``)."""

    model_config = ConfigDict(extra="forbid")

    resize: bool = False
    shuffle_buffer: int = Field(ge=1)
    cache: bool
    flip: Op
    rotation: Op
    translation: Op
    zoom: Op
    shear: Op
    gaussian_blur: Op
    sharpness: Op
    brightness: Op
    contrast: Op
    saturation: Op
    hue: Op
    jpeg: JpegOp
    grid_images_per_class: int = Field(ge=1)
    grid_augmented_versions: int = Field(ge=1)


def build_augmenter(params: AugmentationParams, seed: int) -> Augment:
    """Compose the augmentations into one per-image function (float32 ``[H, W, 3]``, 0–255).

    Args:
        params: Probability and magnitude of each augmentation.
        seed: Seed of the layers' random draws.

    Returns:
        A function applying each enabled augmentation with its probability, in a fixed order:
        geometry, blur/sharpness, colour, then JPEG (the last thing a re-shared image meets).
    """
    layers: list[tuple[float, keras.layers.Layer]] = []

    def add(op: Op, layer: Callable[[], keras.layers.Layer]) -> None:
        if op.probability > 0 and op.magnitude > 0:
            layers.append((op.probability, layer()))

    add(params.flip, lambda: keras.layers.RandomFlip("horizontal", seed=seed))
    add(params.rotation, lambda: keras.layers.RandomRotation(params.rotation.magnitude, seed=seed + 1))
    add(
        params.translation,
        lambda: keras.layers.RandomTranslation(
            params.translation.magnitude, params.translation.magnitude, seed=seed + 2
        ),
    )
    add(params.zoom, lambda: keras.layers.RandomZoom(params.zoom.magnitude, seed=seed + 3))
    add(
        params.shear,
        lambda: keras.layers.RandomShear(params.shear.magnitude, params.shear.magnitude, seed=seed + 4),
    )
    add(
        params.gaussian_blur,
        lambda: keras.layers.RandomGaussianBlur(
            1.0, kernel_size=5, sigma=params.gaussian_blur.magnitude, seed=seed + 5
        ),
    )
    add(
        params.sharpness,
        lambda: keras.layers.RandomSharpness(_around_half(params.sharpness.magnitude), seed=seed + 6),
    )
    add(params.brightness, lambda: keras.layers.RandomBrightness(params.brightness.magnitude, seed=seed + 7))
    add(params.contrast, lambda: keras.layers.RandomContrast(params.contrast.magnitude, seed=seed + 8))
    add(
        params.saturation,
        lambda: keras.layers.RandomSaturation(_around_half(params.saturation.magnitude), seed=seed + 9),
    )
    add(params.hue, lambda: keras.layers.RandomHue(params.hue.magnitude, seed=seed + 10))
    jpeg = params.jpeg

    def augment(image: tf.Tensor) -> tf.Tensor:
        for probability, layer in layers:
            image = _maybe(probability, _training_call(layer), image)
        if jpeg.probability > 0:
            image = _maybe(
                jpeg.probability, lambda x: reencode_jpeg(x, jpeg.min_quality, jpeg.max_quality), image
            )
        return tf.clip_by_value(image, 0.0, 255.0)

    return augment


def _training_call(layer: keras.layers.Layer) -> Augment:
    """Call a Keras preprocessing layer in training mode (its random branch)."""

    def call(image: tf.Tensor) -> tf.Tensor:
        return layer(image, training=True)

    return call


def _around_half(magnitude: float) -> tuple[float, float]:
    """Keras' sharpness and saturation factors leave an image unchanged at 0.5."""
    return max(0.0, 0.5 - magnitude), min(1.0, 0.5 + magnitude)


def _maybe(probability: float, transform: Augment, image: tf.Tensor) -> tf.Tensor:
    """Apply ``transform`` with ``probability`` (one draw per image)."""
    apply = tf.random.uniform([]) < probability
    return tf.cond(apply, lambda: tf.cast(transform(image), tf.float32), lambda: image)


def reencode_jpeg(image: tf.Tensor, min_quality: int, max_quality: int) -> tf.Tensor:
    """Encode and decode ``image`` as JPEG at a random quality (what re-sharing does)."""
    quality = tf.random.uniform([], min_quality, max_quality + 1, dtype=tf.int32)
    encoded = tf.image.adjust_jpeg_quality(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality)
    return tf.cast(encoded, tf.float32)


def decode(path: tf.Tensor) -> tf.Tensor:
    """Read and decode one manifest image to float32 RGB ``[H, W, 3]`` in 0–255.

    JPEGs are decoded with the accurate integer DCT, which gives exactly Pillow's pixels (what
    the service decodes with); TensorFlow's default fast DCT differs by about one grey level on
    average, as much as the traces a detector learns.
    """
    data = tf.io.read_file(path)
    image = tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
    )
    return tf.cast(tf.ensure_shape(image, (None, None, 3)), tf.float32)


def fit_to_size(image: tf.Tensor, size: int, *, training: bool, resize: bool) -> tf.Tensor:
    """Bring an image to ``size``×``size`` without resampling unless ``resize`` is asked for.

    Training takes a random crop, evaluation the centre crop; an image smaller than ``size``
    is padded with zeros (reflected content would invent structure).
    """
    if resize:
        return tf.image.resize(image, (size, size), antialias=True)
    image = tf.image.resize_with_crop_or_pad(
        image, tf.maximum(tf.shape(image)[0], size), tf.maximum(tf.shape(image)[1], size)
    )
    if training:
        return tf.image.random_crop(image, (size, size, 3))
    return tf.image.resize_with_crop_or_pad(image, size, size)


def make_dataset(
    manifest: pd.DataFrame,
    split: str,
    image_size: int,
    batch_size: int,
    params: AugmentationParams,
    seed: int,
    augment: Augment | None = None,
    families: Sequence[str] = (),
) -> tf.data.Dataset:
    """Build the tf.data pipeline of one split: decode, crop, (augment), batch, prefetch.

    Args:
        manifest: The image manifest (``path``, ``label``, ``split``).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        image_size: Side of the model input.
        batch_size: Images per batch.
        params: Caching, shuffling and resizing settings.
        seed: Shuffle seed (order is deterministic for a seed).
        augment: Per-image augmentation (training split only; ``None`` for evaluation).
        families: Attribution columns of the model (:func:`~ai_image_detection.families.
            attribution_families`); empty for a model without attribution.

    Returns:
        Batches of ``(images [B, S, S, 3] float32 0–255, labels [B] float32)``; with families,
        the targets are ``(labels, family targets [B] int32)`` (-1 where there is none).

    Raises:
        ValueError: If the split has no labelled rows.
    """
    rows = manifest[(manifest["split"] == split) & manifest["label"].notna()]
    if rows.empty:
        raise ValueError(
            f"the manifest has no labelled {split!r} rows; splits present: {sorted(set(manifest['split']))}"
        )
    training = split == "train"
    paths = tf.constant(rows["path"].astype(str).to_numpy())
    labels = tf.constant(rows["label"].astype("float32").to_numpy())
    targets = (labels, tf.constant(family_targets(rows, families))) if families else labels
    dataset = tf.data.Dataset.from_tensor_slices((paths, targets))
    dataset = dataset.map(lambda p, y: (decode(p), y), num_parallel_calls=tf.data.AUTOTUNE)
    if params.cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(
            min(params.shuffle_buffer, len(rows)), seed=seed, reshuffle_each_iteration=True
        )
    if training:
        # Sequential on purpose: random crops and augmentations then draw in element order, so
        # a seed reproduces the exact stream (parallel calls would race for the random state).
        # Decoding, the expensive part, stays parallel.
        def crop_and_augment(image: tf.Tensor, label: Any) -> tuple[tf.Tensor, Any]:
            image = fit_to_size(image, image_size, training=True, resize=params.resize)
            return (augment(image) if augment is not None else image), label

        dataset = dataset.map(crop_and_augment)
    else:
        dataset = dataset.map(
            lambda x, y: (fit_to_size(x, image_size, training=False, resize=params.resize), y),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    options = tf.data.Options()
    options.deterministic = True
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)


class Perturbation(BaseModel):
    """What a re-shared image goes through, for the robustness table.

    Attributes:
        kind: ``jpeg`` or ``webp`` (re-encode at ``quality``; lossy WebP is what much of the web
            serves), ``downscale`` (resize by ``factor``, antialiased), ``blur`` (Gaussian,
            ``sigma`` pixels) or ``centre_crop`` (keep the central ``factor`` of each side).
        quality: JPEG or WebP quality, for ``jpeg`` and ``webp``.
        factor: Scale or kept fraction, for ``downscale`` and ``centre_crop``.
        sigma: Standard deviation in pixels, for ``blur``.
        resave_quality: JPEG quality the changed image is then saved at, as a site or an app
            saves a photo it has resized; ``None`` keeps the change lossless (a PNG re-share).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jpeg", "webp", "downscale", "blur", "centre_crop"]
    quality: int = Field(default=75, ge=1, le=100)
    factor: float = Field(default=0.5, gt=0, le=1)
    sigma: float = Field(default=1.0, gt=0)
    resave_quality: int | None = Field(default=None, ge=1, le=100)

    def settings(self) -> dict[str, str | int | float]:
        """The kind and the fields it uses, as a report states them: ``{"kind": "webp", "quality": 80}``."""
        used = {"jpeg": ["quality"], "webp": ["quality"], "blur": ["sigma"]}.get(self.kind, ["factor"])
        if self.resave_quality is not None:
            used.append("resave_quality")
        return {"kind": self.kind, **{name: getattr(self, name) for name in used}}

    @model_validator(mode="after")
    def _one_jpeg_step(self) -> Perturbation:
        if self.kind in {"jpeg", "webp"} and self.resave_quality is not None:
            raise ValueError(
                f"a {self.kind} perturbation is the re-save itself: set quality, not resave_quality"
            )
        return self


def perturb(image: tf.Tensor, perturbation: Perturbation) -> tf.Tensor:
    """Apply a deterministic perturbation to a float32 RGB image in 0–255."""
    if perturbation.kind == "jpeg":
        return _jpeg(image, perturbation.quality)
    if perturbation.kind == "webp":
        return _webp(image, perturbation.quality)
    changed = _change(image, perturbation)
    return changed if perturbation.resave_quality is None else _jpeg(changed, perturbation.resave_quality)


def _jpeg(image: tf.Tensor, quality: int) -> tf.Tensor:
    """``image`` encoded as JPEG at ``quality`` and decoded again (rounded to 8 bits first)."""
    encoded = tf.image.adjust_jpeg_quality(
        tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8), quality
    )
    return tf.cast(encoded, tf.float32)


def _webp(image: tf.Tensor, quality: int) -> tf.Tensor:
    """``image`` encoded as lossy WebP at ``quality`` (Pillow's libwebp) and decoded again."""

    def resave(pixels: np.ndarray) -> np.ndarray:
        encoded = io.BytesIO()
        Image.fromarray(pixels).save(encoded, format="WEBP", quality=int(quality))
        return np.asarray(Image.open(encoded).convert("RGB"), dtype=np.float32)

    rounded = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    resaved = tf.numpy_function(resave, [rounded], tf.float32, stateful=False)
    return tf.ensure_shape(resaved, image.shape)


def _change(image: tf.Tensor, perturbation: Perturbation) -> tf.Tensor:
    """The resampling or filtering step of a perturbation other than ``jpeg``."""
    if perturbation.kind == "centre_crop":
        return tf.image.central_crop(image, perturbation.factor)
    if perturbation.kind == "downscale":
        size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * perturbation.factor), tf.int32)
        return tf.clip_by_value(tf.image.resize(image, size, antialias=True), 0.0, 255.0)
    radius = max(1, round(3 * perturbation.sigma))
    taps = tf.exp(-0.5 * (tf.range(-radius, radius + 1, dtype=tf.float32) / perturbation.sigma) ** 2)
    taps /= tf.reduce_sum(taps)
    kernel = tf.tile((taps[:, None] * taps[None, :])[:, :, None, None], (1, 1, 3, 1))
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    return tf.nn.depthwise_conv2d(padded, kernel, strides=(1, 1, 1, 1), padding="VALID")[0]


def perturbed_pixels(pixels: np.ndarray, perturbation: Perturbation) -> np.ndarray:
    """A decoded uint8 image after a perturbation, back to uint8 as a re-shared file would be."""
    changed = perturb(tf.constant(pixels, dtype=tf.float32), perturbation).numpy()
    return np.clip(np.rint(changed), 0, 255).astype(np.uint8)


def make_prediction_dataset(
    paths: list[str], image_size: int, batch_size: int, perturbation: Perturbation | None = None
) -> tf.data.Dataset:
    """Batches of centre-cropped images for prediction, optionally perturbed first.

    Args:
        paths: Image files, in the order the predictions should come out.
        image_size: Side of the model input.
        batch_size: Images per batch.
        perturbation: Applied to the whole decoded image before cropping.

    Returns:
        Batches of float32 ``[B, S, S, 3]`` images in 0–255, in ``paths`` order.
    """

    def load(path: tf.Tensor) -> tf.Tensor:
        image = decode(path)
        if perturbation is not None:
            image = perturb(image, perturbation)
        return fit_to_size(image, image_size, training=False, resize=False)

    dataset = tf.data.Dataset.from_tensor_slices(tf.constant(paths, dtype=tf.string))
    return dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)
