"""Simulated image generators: neural up-sampling decoders in NumPy.

In the spirit of the AutoGAN simulator (Zhang, Karaman & Chang, 2019), an "AI-generated" image
is a real crop that went through the last stage every GAN and diffusion decoder has: learned
up-sampling. The crop is downsampled ×2 or ×4, then brought back by randomly initialised
decoder layers of one of two families,

* ``transposed_conv`` — transposed convolution, kernel 4, stride 2 (checkerboard artifacts);
* ``nearest_conv`` — nearest-neighbour up-sampling followed by a 3×3 convolution,

added to a bilinear skip path that keeps the content. Finally the output is sharpened until its
mean gradient magnitude equals the real crop's, so "blurry = AI" is not a shortcut the detector
can learn; what is left to learn is the periodic fingerprint of the up-sampling.

Everything is float32 NumPy with a fixed order of operations, so the same seed gives the same
pixels on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

DecoderFamily = Literal["transposed_conv", "nearest_conv"]
FloatImage = NDArray[np.float32]

_BILINEAR_TAPS = np.array([0.25, 0.75, 0.75, 0.25], dtype=np.float32)
_BLUR_TAPS = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16


@dataclass(frozen=True)
class DecoderSpec:
    """One simulated generator.

    Attributes:
        family: Up-sampling layer type.
        factor: Total up-sampling factor (2 or 4; one ×2 layer per octave).
        hidden_channels: Width of the decoder's hidden layer.
        residual_strength: Standard deviation, in 0–255 grey levels, of what the decoder adds
            to the bilinear skip path.
        seed: Seed of the decoder's random weights.
    """

    family: DecoderFamily
    factor: int
    hidden_channels: int
    residual_strength: float
    seed: int


def simulate_generator(crop: NDArray[np.uint8], spec: DecoderSpec) -> NDArray[np.uint8]:
    """Turn a real RGB crop into its "AI-generated" twin of the same size.

    Args:
        crop: Real image, ``[H, W, 3]`` uint8, with H and W divisible by ``spec.factor``.
        spec: Which decoder to simulate.

    Returns:
        The generated image, ``[H, W, 3]`` uint8, sharpness-matched to ``crop``.

    Raises:
        ValueError: If the crop size is not divisible by the factor or the factor is not a
            power of two.
    """
    height, width, _ = crop.shape
    octaves = int(np.log2(spec.factor))
    if 2**octaves != spec.factor or octaves < 1:
        raise ValueError(f"factor must be 2, 4, 8, ...; got {spec.factor}")
    if height % spec.factor or width % spec.factor:
        raise ValueError(f"crop {width}x{height} is not divisible by the factor {spec.factor}")
    rng = np.random.default_rng(spec.seed)
    image = downsample(crop.astype(np.float32), spec.factor)
    for _ in range(octaves):
        image = _decoder_layer(image, spec, rng)
    target = mean_gradient_magnitude(crop.astype(np.float32))
    return np.clip(np.rint(match_sharpness(image, target)), 0, 255).astype(np.uint8)


def downsample(image: FloatImage, factor: int) -> FloatImage:
    """Average ``factor``×``factor`` blocks (area downsampling, no aliasing)."""
    height, width, channels = image.shape
    blocks = image.reshape(height // factor, factor, width // factor, factor, channels)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def _decoder_layer(image: FloatImage, spec: DecoderSpec, rng: np.random.Generator) -> FloatImage:
    """One ×2 decoder layer: bilinear skip path plus a random up-sampling residual branch."""
    skip = upsample_bilinear(image)
    hidden_in = rng.normal(0.0, 1.0, (3, spec.hidden_channels)).astype(np.float32) / np.sqrt(3.0)
    hidden = np.maximum(_pointwise(image / 255.0 - 0.5, hidden_in), 0.0)
    if spec.family == "transposed_conv":
        weights = rng.normal(0.0, 1.0, (4, 4, spec.hidden_channels, 3)).astype(np.float32)
        residual = transposed_conv_stride2(hidden, weights)
    else:
        weights = rng.normal(0.0, 1.0, (3, 3, spec.hidden_channels, 3)).astype(np.float32)
        residual = conv3x3(np.repeat(np.repeat(hidden, 2, axis=0), 2, axis=1), weights)
    residual -= residual.mean(axis=(0, 1), keepdims=True)
    scale = spec.residual_strength / max(float(residual.std()), 1e-6)
    return skip + residual * np.float32(scale)


def _pointwise(image: FloatImage, weights: FloatImage) -> FloatImage:
    """A 1×1 convolution (channel mixing)."""
    height, width, channels = image.shape
    mixed = np.ascontiguousarray(image).reshape(height * width, channels) @ weights
    return mixed.reshape(height, width, weights.shape[1])


def upsample_bilinear(image: FloatImage) -> FloatImage:
    """×2 bilinear up-sampling (the transposed convolution with the bilinear kernel)."""
    out = image
    for axis in (0, 1):
        out = _upsample_axis(out, axis, np.array([0.25, 0.75], dtype=np.float32))
    return out


def _upsample_axis(image: FloatImage, axis: int, taps: FloatImage) -> FloatImage:
    """Double ``axis``: even outputs blend with the previous sample, odd with the next."""
    length = image.shape[axis]
    padded = np.concatenate(
        [np.take(image, [0], axis=axis), image, np.take(image, [length - 1], axis=axis)], axis=axis
    )
    previous = np.take(padded, range(0, length), axis=axis)
    current = np.take(padded, range(1, length + 1), axis=axis)
    following = np.take(padded, range(2, length + 2), axis=axis)
    even = taps[0] * previous + taps[1] * current
    odd = taps[1] * current + taps[0] * following
    stacked = np.stack([even, odd], axis=axis + 1)
    shape = list(image.shape)
    shape[axis] = 2 * length
    return stacked.reshape(shape)


def transposed_conv_stride2(image: FloatImage, weights: FloatImage) -> FloatImage:
    """Transposed convolution, kernel 4, stride 2, padding 1: ``[H, W, C] -> [2H, 2W, D]``.

    Computed by phases: output row ``2m`` takes kernel rows 1 and 3 from input rows ``m`` and
    ``m-1``; row ``2m+1`` takes kernel rows 2 and 0 from rows ``m`` and ``m+1`` (same for
    columns). The four phases use different weight subsets, hence the checkerboard.
    """
    height, width, _ = image.shape
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    phase_taps = {0: ((1, 0), (3, -1)), 1: ((2, 0), (0, 1))}
    out = np.zeros((2 * height, 2 * width, weights.shape[3]), dtype=np.float32)
    for row_phase, row_taps in phase_taps.items():
        for col_phase, col_taps in phase_taps.items():
            acc = np.zeros((height, width, weights.shape[3]), dtype=np.float32)
            for kernel_row, row_shift in row_taps:
                for kernel_col, col_shift in col_taps:
                    window = padded[
                        1 + row_shift : 1 + row_shift + height, 1 + col_shift : 1 + col_shift + width
                    ]
                    acc += _pointwise(window, weights[kernel_row, kernel_col])
            out[row_phase::2, col_phase::2] = acc
    return out


def conv3x3(image: FloatImage, weights: FloatImage) -> FloatImage:
    """3×3 convolution with edge padding: ``[H, W, C] -> [H, W, D]``."""
    height, width, _ = image.shape
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.zeros((height, width, weights.shape[3]), dtype=np.float32)
    for row in range(3):
        for col in range(3):
            out += _pointwise(padded[row : row + height, col : col + width], weights[row, col])
    return out


def blur(image: FloatImage) -> FloatImage:
    """Separable 5-tap binomial blur with edge padding."""
    out = image
    for axis in (0, 1):
        pad = [(0, 0)] * image.ndim
        pad[axis] = (2, 2)
        padded = np.pad(out, pad, mode="edge")
        length = out.shape[axis]
        out = sum(
            (tap * np.take(padded, range(k, k + length), axis=axis) for k, tap in enumerate(_BLUR_TAPS)),
            start=np.zeros_like(out),
        )
    return out


def mean_gradient_magnitude(image: FloatImage) -> float:
    """Mean absolute horizontal plus vertical difference of the grey image (a sharpness measure)."""
    grey = image.mean(axis=2) if image.ndim == 3 else image  # noqa: PLR2004 - [H, W, C]
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def match_sharpness(image: FloatImage, target: float, max_amount: float = 24.0) -> FloatImage:
    """Unsharp-mask ``image`` so its mean gradient magnitude reaches ``target``.

    The amount is found by bisection (sharpness grows monotonically with it); an image already
    sharper than the target is returned unchanged.

    Args:
        image: Float RGB image in 0–255.
        target: Desired :func:`mean_gradient_magnitude`.
        max_amount: Largest unsharp-mask amount tried.

    Returns:
        The sharpened image (not yet clipped).
    """
    detail = image - blur(image)
    if mean_gradient_magnitude(image) >= target:
        return image
    image_grey, detail_grey = image.mean(axis=2), detail.mean(axis=2)
    image_diffs = (np.diff(image_grey, axis=0), np.diff(image_grey, axis=1))
    detail_diffs = (np.diff(detail_grey, axis=0), np.diff(detail_grey, axis=1))

    def sharpness(amount: float) -> float:
        # The grey image and its differences are linear in the amount: no re-filtering needed.
        return sum(
            float(np.abs(i + amount * d).mean()) for i, d in zip(image_diffs, detail_diffs, strict=True)
        )

    low, high = 0.0, max_amount
    for _ in range(14):
        middle = (low + high) / 2
        low, high = (middle, high) if sharpness(middle) < target else (low, middle)
    return image + np.float32((low + high) / 2) * detail
