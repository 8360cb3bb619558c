"""Rendering planned pairs (:mod:`.pair_plans`) to encoded files, in worker processes.

The human side is the pristine crop or its classical hard negative; the AI side is the crop
made again by the simulator, or by a real up-scaler fed the crop's region of the photograph at
``1/factor`` of its resolution, cropped back and sharpened to its pristine twin. Both are
encoded alike (:func:`encode`).
"""

from __future__ import annotations

import io
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.sample_data.classical import apply_classical
from ai_image_detection.sample_data.decoders import (
    match_sharpness,
    mean_gradient_magnitude,
    simulate_generator,
)
from ai_image_detection.sample_data.generator_families import Upscale, load_upscaler_model
from ai_image_detection.sample_data.pair_plans import ORIGINAL, DownscaleFilter, GeneratorSettings, PairPlan
from ai_image_detection.sample_data.photo_sources import SourcePhoto

IN_PROCESS_FAMILIES: Final = frozenset({"upscalerjs"})
"""Families rendered in the calling process, which has TensorFlow loaded already (a worker would
spend many seconds importing it)."""

_DOWNSCALE_FILTERS: Final = {
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def render_pairs(
    photos: Sequence[SourcePhoto], plans: Sequence[PairPlan], settings: GeneratorSettings, workers: int
) -> dict[str, bytes]:
    """Render every planned pair to encoded files, in parallel.

    Worker processes load each up-scaler they need once. Pairs of :data:`IN_PROCESS_FAMILIES`
    are rendered in this process while the workers render the rest.

    Args:
        photos: The source photographs (indexed by ``PairPlan.photo_index``).
        plans: The pairs to render.
        settings: Crop, generator and encoding settings.
        workers: Worker processes (1 renders everything in this process).

    Returns:
        File name (``train_data/<hex>.jpg``) to encoded bytes, for both images of every pair.
    """
    files: dict[str, bytes] = {}
    progress = tqdm(total=len(plans), desc="rendering real/AI pairs", unit="pair")

    def collect(done: Iterable[tuple[PairPlan, tuple[bytes, bytes]]]) -> None:
        for plan, (human, ai) in done:
            files[plan.real_name], files[plan.ai_name] = human, ai
            progress.update()

    photo_bytes = [photo.data for photo in photos]
    _init_worker(photo_bytes, settings, pool_worker=False)
    if workers <= 1:
        collect((plan, _render_pair(plan)) for plan in plans)
    else:
        here = [plan for plan in plans if plan.ai.family in IN_PROCESS_FAMILIES]
        pooled = [plan for plan in plans if plan.ai.family not in IN_PROCESS_FAMILIES]
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(photo_bytes, settings, True)) as pool:
            results = pool.imap(_render_pair, pooled, chunksize=4)  # dispatched in the background
            collect((plan, _render_pair(plan)) for plan in here)
            collect(zip(pooled, results, strict=True))
    progress.close()
    _worker_models.clear()
    return files


_worker_photos: list[bytes] = []
_worker_settings: GeneratorSettings | None = None
_worker_models: dict[str, Upscale] = {}


def _init_worker(photo_bytes: list[bytes], settings: GeneratorSettings, pool_worker: bool) -> None:
    global _worker_photos, _worker_settings
    _worker_photos, _worker_settings = photo_bytes, settings
    if pool_worker:
        # Parallelism comes from the processes: threaded BLAS or OpenMP (ncnn) would oversubscribe.
        os.environ["OMP_NUM_THREADS"] = "1"
        threadpool_limits(1)
    _worker_models.clear()
    _decoded_photo.cache_clear()


@lru_cache(maxsize=4)
def _decoded_photo(index: int) -> Image.Image:
    return decode_image(_worker_photos[index], ImageLimits(min_side=1)).pixels


def _upscaler(family: str, model: str) -> Upscale:
    """The worker's up-scaler for a model, loaded on first use and kept."""
    key = f"{family}/{model}"
    if key not in _worker_models:
        if _worker_settings is None:
            raise RuntimeError("render worker used before initialisation")
        _worker_models[key] = load_upscaler_model(family, model, _worker_settings.upscalerjs_cache_dir)
    return _worker_models[key]


def _render_pair(plan: PairPlan) -> tuple[bytes, bytes]:
    """Encoded (human, AI) images of one pair."""
    settings = _worker_settings
    if settings is None:
        raise RuntimeError("render worker used before initialisation")
    photo = _decoded_photo(plan.photo_index)
    size = (settings.crop_size, settings.crop_size)
    real = np.asarray(photo.resize(size, Image.Resampling.LANCZOS, box=plan.box), dtype=np.uint8)
    human = real if plan.human.op == ORIGINAL else apply_classical(real, plan.human.op, plan.human.strength)
    if plan.ai.decoder is not None:
        ai = simulate_generator(real, plan.ai.decoder)
    else:
        low = low_resolution_input(
            photo, plan.box, settings.crop_size, plan.ai.factor, plan.ai.downscale_filter
        )
        upscaled = _upscaler(plan.ai.family, plan.ai.model)(low)
        ai = sharpen_to(centre_crop(upscaled, settings.crop_size), real, plan.ai.sharpness_ratio)
    quality = None if plan.lossless else settings.jpeg_quality
    return encode(human, quality), encode(ai, quality)


def low_resolution_input(
    photo: Image.Image,
    box: tuple[float, float, float, float],
    crop_size: int,
    factor: int,
    downscale_filter: DownscaleFilter,
) -> NDArray[np.uint8]:
    """The crop's region of the photograph at ``1/factor`` of the crop's resolution.

    When ``factor`` does not divide ``crop_size``, the region grows to ``ceil(crop/factor)``
    low-resolution pixels, centred as :func:`centre_crop` expects, so the up-scaled image
    cropped back to ``crop_size`` shows exactly the crop's content.

    Args:
        photo: The full photograph.
        box: The crop's box in the photograph, ``(left, top, right, bottom)``.
        crop_size: Side of the crop, in pixels.
        factor: The up-scaler's factor.
        downscale_filter: ``"area"``, ``"bicubic"`` or ``"lanczos"``.

    Returns:
        ``[ceil(crop/factor), ceil(crop/factor), 3]`` uint8 image.
    """
    low = -(-crop_size // factor)
    extra = low * factor - crop_size
    before, after = extra // 2, extra - extra // 2
    pixel = (box[2] - box[0]) / crop_size
    region = (
        max(0.0, box[0] - before * pixel),
        max(0.0, box[1] - before * pixel),
        min(float(photo.width), box[2] + after * pixel),
        min(float(photo.height), box[3] + after * pixel),
    )
    small = photo.resize((low, low), _DOWNSCALE_FILTERS[downscale_filter], box=region)
    return np.asarray(small, dtype=np.uint8)


def centre_crop(image: NDArray[np.uint8], size: int) -> NDArray[np.uint8]:
    """The central ``size`` × ``size`` part of an image (extra pixels: one more at the end).

    Raises:
        ValueError: If the image is smaller than ``size``.
    """
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"up-scaled image is {width}x{height}, smaller than the {size} px crop")
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def sharpen_to(image: NDArray[np.uint8], twin: NDArray[np.uint8], ratio: float) -> NDArray[np.uint8]:
    """Unsharp-mask ``image`` up to ``ratio`` times its twin's mean gradient magnitude.

    Args:
        image: The up-scaled image.
        twin: The pristine crop it was made from.
        ratio: Target sharpness relative to the twin; a sharper image is left as it is.

    Returns:
        The sharpened ``uint8`` image.
    """
    target = ratio * mean_gradient_magnitude(twin.astype(np.float32))
    sharpened = match_sharpness(image.astype(np.float32), target)
    return np.clip(np.rint(sharpened), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray, jpeg_quality: int | None) -> bytes:
    """Encode RGB pixels the way both sides of a pair are written (same format, quality, sub-sampling).

    Args:
        pixels: ``[H, W, 3]`` uint8 image.
        jpeg_quality: JPEG quality (4:2:0), or None for PNG.

    Returns:
        The encoded file bytes, with no metadata (so bytes depend only on pixels).
    """
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, mode="RGB")
    if jpeg_quality is None:
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=jpeg_quality, subsampling="4:2:0", optimize=False)
    return buffer.getvalue()


def worker_count(requested: int) -> int:
    """Resolve a worker count: 0 means one per CPU core."""
    return requested if requested > 0 else max(1, multiprocessing.cpu_count())
