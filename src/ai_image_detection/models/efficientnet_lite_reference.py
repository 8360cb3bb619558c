"""An independent NumPy forward pass of the PyTorch EfficientNet-Lite, to check the Keras port against.

Written from the PyTorch code's point of view (NCHW, OIHW kernels, explicit ``SAME`` pads), it
shares no code with :mod:`.efficientnet_lite`'s Keras model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ai_image_detection.models.efficientnet_lite_architecture import (
    BATCH_NORM_EPSILON,
    LITE_MEAN,
    LITE_STD,
    LiteArchitecture,
)
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """``Conv2dStaticSamePadding``'s pads (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _conv_nchw(
    x: NDArray[np.float64], weight: NDArray[Any], stride: int, depthwise: bool
) -> NDArray[np.float64]:
    """``F.conv2d`` with TF SAME padding on ``[N, C, H, W]`` (dense or depthwise)."""
    _, _, kh, kw = weight.shape
    (top, bottom), (left, right) = _same_pads(x.shape[2], kh, stride), _same_pads(x.shape[3], kw, stride)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    out_h, out_w = (padded.shape[2] - kh) // stride + 1, (padded.shape[3] - kw) // stride + 1
    w = weight.astype(np.float64)
    result = np.zeros((x.shape[0], weight.shape[0], out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            window = padded[
                :, :, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride
            ]
            if depthwise:
                result += window * w[None, :, 0, i, j, None, None]
            else:
                result += np.einsum("nchw,oc->nohw", window, w[:, :, i, j], optimize=True)
    return result


def _batch_norm_nchw(
    x: NDArray[np.float64], state: Mapping[str, NDArray[Any]], key: str
) -> NDArray[np.float64]:
    def channel(name: str) -> NDArray[np.float64]:
        return state[f"{key}.{name}"].astype(np.float64)[None, :, None, None]

    return (x - channel("running_mean")) / np.sqrt(channel("running_var") + BATCH_NORM_EPSILON) * channel(
        "weight"
    ) + channel("bias")


def reference_forward(
    state_dict: Mapping[str, NDArray[Any]],
    architecture: LiteArchitecture,
    images: NDArray[Any],
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """The PyTorch model's forward pass in float64 NumPy, for checking the Keras port.

    It follows ``efficientnet_lite_pytorch.model.EfficientNet`` directly (NCHW, OIHW kernels,
    ``Conv2dStaticSamePadding`` pads, BatchNorm eps 1e-3, ReLU6, skip when a block keeps stride
    1 and its channels); the block structure comes from the state dict's keys and shapes, the
    strides from ``architecture``.

    Args:
        state_dict: The PyTorch parameters.
        architecture: Supplies the stride of every block.
        images: ``[N, H, W, 3]`` raw 0-255 RGB.

    Returns:
        The head's feature map as ``[N, h, w, C]`` and the ``_fc`` logits (``None`` without ``_fc``).
    """

    def relu6(x: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.clip(x, 0.0, 6.0)

    x = (np.asarray(images, dtype=np.float64).transpose(0, 3, 1, 2) - LITE_MEAN) / LITE_STD
    x = relu6(_batch_norm_nchw(_conv_nchw(x, state_dict["_conv_stem.weight"], 2, False), state_dict, "_bn0"))
    for index, stride in enumerate(architecture.block_strides()):
        key = f"_blocks.{index}"
        inputs = x
        if f"{key}._expand_conv.weight" in state_dict:
            x = _conv_nchw(x, state_dict[f"{key}._expand_conv.weight"], 1, False)
            x = relu6(_batch_norm_nchw(x, state_dict, f"{key}._bn0"))
        x = _conv_nchw(x, state_dict[f"{key}._depthwise_conv.weight"], stride, True)
        x = relu6(_batch_norm_nchw(x, state_dict, f"{key}._bn1"))
        x = _conv_nchw(x, state_dict[f"{key}._project_conv.weight"], 1, False)
        x = _batch_norm_nchw(x, state_dict, f"{key}._bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
    if f"_blocks.{len(architecture.block_strides())}._project_conv.weight" in state_dict:
        raise LiteWeightsError("the state dict has more blocks than the architecture")
    x = relu6(_batch_norm_nchw(_conv_nchw(x, state_dict["_conv_head.weight"], 1, False), state_dict, "_bn1"))
    logits = None
    if "_fc.weight" in state_dict:
        pooled = x.mean(axis=(2, 3))
        logits = pooled @ state_dict["_fc.weight"].astype(np.float64).T + state_dict["_fc.bias"].astype(
            np.float64
        )
    return x.transpose(0, 2, 3, 1), logits
