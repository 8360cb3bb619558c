"""Hard negatives: real crops after classical processing only (human class, ``classical/<op>``).

Up-scaled AI images tend to be softer or smoother than a pristine camera crop. So that softness
alone cannot decide, part of the human class goes through what a camera roll or a web page does
to photographs, with no learned component:

* ``bicubic_x2`` … ``lanczos_x4`` — down-sampling by the factor, then back up with the same filter;
* ``gaussian_blur`` — a mild Gaussian blur (radius drawn per image);
* ``unsharp_mask`` — unsharp-mask sharpening (radius and amount drawn per image);
* ``jpeg_resave`` — a JPEG re-save at quality 70–90 (the file is then written like every other).

Each operation takes its strength from a number drawn up front (``strength`` in ``[0, 1]``), so
the same plan gives the same pixels.
"""

from __future__ import annotations

import io
from typing import Final, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageFilter

ClassicalOp = Literal[
    "bicubic_x2",
    "bicubic_x3",
    "bicubic_x4",
    "lanczos_x2",
    "lanczos_x3",
    "lanczos_x4",
    "gaussian_blur",
    "unsharp_mask",
    "jpeg_resave",
]
CLASSICAL_OPS: Final[tuple[str, ...]] = get_args(ClassicalOp)

_FILTERS: Final = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}
BLUR_RADIUS: Final = (0.4, 1.0)
UNSHARP_RADIUS: Final = (1.0, 2.0)
UNSHARP_PERCENT: Final = (40, 120)
JPEG_QUALITY: Final = (70, 90)


def _between(bounds: tuple[float, float], strength: float) -> float:
    return bounds[0] + (bounds[1] - bounds[0]) * strength


def classical_settings(op: str, strength: float) -> str:
    """Describe an operation's drawn parameters, for the sidecar table.

    Args:
        op: One of :data:`CLASSICAL_OPS`.
        strength: The drawn strength in ``[0, 1]``.

    Returns:
        ``key=value`` pairs separated by spaces.
    """
    if op == "gaussian_blur":
        return f"radius={_between(BLUR_RADIUS, strength):.3f}"
    if op == "unsharp_mask":
        radius, percent = _between(UNSHARP_RADIUS, strength), _unsharp_percent(strength)
        return f"radius={radius:.3f} percent={percent}"
    if op == "jpeg_resave":
        return f"quality={_jpeg_quality(strength)}"
    filter_name, factor = op.split("_x")
    return f"factor={factor} filter={filter_name}"


def _unsharp_percent(strength: float) -> int:
    # Amount and radius move in opposite directions, so the sharpening stays mild at both ends.
    return round(_between(UNSHARP_PERCENT, 1.0 - strength))


def _jpeg_quality(strength: float) -> int:
    return round(_between(JPEG_QUALITY, strength))


def apply_classical(crop: NDArray[np.uint8], op: str, strength: float) -> NDArray[np.uint8]:
    """Process a real crop classically, keeping its size.

    Args:
        crop: ``[H, W, 3]`` uint8 RGB crop.
        op: One of :data:`CLASSICAL_OPS`.
        strength: Drawn strength in ``[0, 1]`` (ignored by the resampling operations).

    Returns:
        The processed ``[H, W, 3]`` uint8 image.

    Raises:
        ValueError: If ``op`` is unknown (the message lists the accepted ones).
    """
    image = Image.fromarray(crop, mode="RGB")
    if op == "gaussian_blur":
        out = image.filter(ImageFilter.GaussianBlur(radius=_between(BLUR_RADIUS, strength)))
    elif op == "unsharp_mask":
        radius = _between(UNSHARP_RADIUS, strength)
        out = image.filter(
            ImageFilter.UnsharpMask(radius=radius, percent=_unsharp_percent(strength), threshold=2)
        )
    elif op == "jpeg_resave":
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=_jpeg_quality(strength), subsampling="4:2:0")
        out = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    elif op in CLASSICAL_OPS:
        filter_name, factor = op.split("_x")
        resample = _FILTERS[filter_name]
        small = (max(1, round(image.width / int(factor))), max(1, round(image.height / int(factor))))
        out = image.resize(small, resample).resize(image.size, resample)
    else:
        raise ValueError(f"unknown classical operation {op!r}; accepted: {', '.join(CLASSICAL_OPS)}")
    return np.asarray(out, dtype=np.uint8)
