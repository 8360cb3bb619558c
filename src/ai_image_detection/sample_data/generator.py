"""The embedded data set: aligned real/AI pairs cut from package photographs.

Each pair is one random crop of a real photograph (the human class) and the same crop passed
through a simulated generator (the AI class, see :mod:`.decoders`). Both are encoded with the
same format and quality, so content, size, file format and JPEG history carry no signal.
Photographs are held out whole for the test part, so test content is never seen in training.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.sample_data.decoders import DecoderFamily, DecoderSpec, simulate_generator
from ai_image_detection.sample_data.photo_sources import SourcePhoto

logger = logging.getLogger(__name__)

TRAIN_DIR = "train_data"
TEST_DIR = "test_data_v2"


@dataclass(frozen=True)
class GeneratorSettings:
    """How pairs are cut and rendered.

    Attributes:
        crop_size: Side of the square crops, in pixels.
        min_scale: Smallest factor a photograph is scaled by before cropping (more context).
        families: Decoder families to draw from, uniformly.
        factors: Up-sampling factors to draw from.
        factor_weights: Probability of each factor.
        hidden_channels: Width of the decoders' hidden layer.
        residual_strength: Range of the decoders' residual strength, in grey levels.
        image_format: ``"jpg"`` or ``"png"``, the same for both classes.
        jpeg_quality: JPEG quality, the same for both classes.
    """

    crop_size: int
    min_scale: float
    families: tuple[DecoderFamily, ...]
    factors: tuple[int, ...]
    factor_weights: tuple[float, ...]
    hidden_channels: int
    residual_strength: tuple[float, float]
    image_format: str
    jpeg_quality: int


@dataclass(frozen=True)
class PairPlan:
    """Everything needed to render one pair, drawn up front from the seed."""

    pair_id: int
    part: str
    photo_index: int
    box: tuple[float, float, float, float]
    real_name: str
    ai_name: str
    real_first: bool
    decoder: DecoderSpec


def plan_pairs(
    photo_sizes: Sequence[tuple[int, int]],
    n_pairs: int,
    test_fraction: float,
    settings: GeneratorSettings,
    seed: int,
) -> list[PairPlan]:
    """Draw crops, decoders and file names for ``n_pairs`` pairs.

    Photographs are dealt round-robin (in a seeded order) so each contributes about equally;
    a seeded ``test_fraction`` of the photographs is held out whole for the test part.

    Args:
        photo_sizes: ``(width, height)`` of each usable photograph.
        n_pairs: Number of real/AI pairs, train and test together.
        test_fraction: Share of photographs whose pairs form the test part.
        settings: Crop and decoder settings.
        seed: Seed for every random choice.

    Returns:
        One plan per pair, ordered by photograph (which keeps decoding cheap).

    Raises:
        ValueError: If no photograph is at least ``crop_size`` on its short side.
    """
    if not photo_sizes:
        raise ValueError(f"no source photo is at least {settings.crop_size} px on its short side")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photo_sizes))
    n_test_photos = min(len(order) - 1, max(1, round(test_fraction * len(order)))) if test_fraction else 0
    test_photos = set(order[:n_test_photos].tolist())
    plans = []
    for pair_id in range(n_pairs):
        photo_index = int(order[pair_id % len(order)])
        width, height = photo_sizes[photo_index]
        scale = rng.uniform(max(settings.min_scale, settings.crop_size / min(width, height)), 1.0)
        side = settings.crop_size / scale
        left, top = rng.uniform(0, width - side), rng.uniform(0, height - side)
        factor = int(rng.choice(settings.factors, p=settings.factor_weights))
        decoder = DecoderSpec(
            family=settings.families[int(rng.integers(len(settings.families)))],
            factor=factor,
            hidden_channels=settings.hidden_channels,
            residual_strength=float(rng.uniform(*settings.residual_strength)),
            seed=int(rng.integers(2**31)),
        )
        part = "test" if photo_index in test_photos else "train"
        folder = TEST_DIR if part == "test" else TRAIN_DIR
        plans.append(
            PairPlan(
                pair_id=pair_id,
                part=part,
                photo_index=photo_index,
                box=(left, top, left + side, top + side),
                real_name=f"{folder}/{rng.bytes(16).hex()}.{settings.image_format}",
                ai_name=f"{folder}/{rng.bytes(16).hex()}.{settings.image_format}",
                real_first=bool(rng.integers(2)),
                decoder=decoder,
            )
        )
    return sorted(plans, key=lambda plan: (plan.photo_index, plan.pair_id))


def render_pairs(
    photos: Sequence[SourcePhoto], plans: Sequence[PairPlan], settings: GeneratorSettings, workers: int
) -> dict[str, bytes]:
    """Render every planned pair to encoded files, in parallel.

    Args:
        photos: The source photographs (indexed by ``PairPlan.photo_index``).
        plans: The pairs to render.
        settings: Crop and encoding settings.
        workers: Worker processes (1 renders in this process).

    Returns:
        File name (``train_data/<hex>.jpg``) to encoded bytes, for both images of every pair.
    """
    files: dict[str, bytes] = {}
    progress = tqdm(total=len(plans), desc="rendering real/AI pairs", unit="pair")
    if workers <= 1:
        _init_worker([photo.data for photo in photos], settings, pool_worker=False)
        results = map(_render_pair, plans)
        for plan, (real, ai) in zip(plans, results, strict=True):
            files[plan.real_name], files[plan.ai_name] = real, ai
            progress.update()
    else:
        context = multiprocessing.get_context("spawn")
        initargs = ([photo.data for photo in photos], settings, True)
        with context.Pool(workers, initializer=_init_worker, initargs=initargs) as pool:
            for plan, (real, ai) in zip(plans, pool.imap(_render_pair, plans, chunksize=8), strict=True):
                files[plan.real_name], files[plan.ai_name] = real, ai
                progress.update()
    progress.close()
    return files


_worker_photos: list[bytes] = []
_worker_settings: GeneratorSettings | None = None


def _init_worker(photo_bytes: list[bytes], settings: GeneratorSettings, pool_worker: bool) -> None:
    global _worker_photos, _worker_settings
    _worker_photos, _worker_settings = photo_bytes, settings
    if pool_worker:
        threadpool_limits(1)  # parallelism comes from the processes; threaded BLAS would oversubscribe
    _decoded_photo.cache_clear()


@lru_cache(maxsize=4)
def _decoded_photo(index: int) -> Image.Image:
    return decode_image(_worker_photos[index], ImageLimits(min_side=1)).pixels


def _render_pair(plan: PairPlan) -> tuple[bytes, bytes]:
    settings = _worker_settings
    if settings is None:
        raise RuntimeError("render worker used before initialisation")
    size = (settings.crop_size, settings.crop_size)
    crop = _decoded_photo(plan.photo_index).resize(size, Image.Resampling.LANCZOS, box=plan.box)
    real = np.asarray(crop, dtype=np.uint8)
    ai = simulate_generator(real, plan.decoder)
    return encode(real, settings), encode(ai, settings)


def encode(pixels: np.ndarray, settings: GeneratorSettings) -> bytes:
    """Encode RGB pixels the way both classes are written (same format, quality, sub-sampling).

    Args:
        pixels: ``[H, W, 3]`` uint8 image.
        settings: Holds the format and JPEG quality.

    Returns:
        The encoded file bytes, with no metadata (so bytes depend only on pixels).
    """
    buffer = io.BytesIO()
    image = Image.fromarray(pixels, mode="RGB")
    if settings.image_format == "jpg":
        image.save(buffer, format="JPEG", quality=settings.jpeg_quality, subsampling="4:2:0", optimize=False)
    else:
        image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def pair_rows(plans: Sequence[PairPlan], photos: Sequence[SourcePhoto]) -> list[dict[str, object]]:
    """Describe every file of every pair: label, provenance and how it was made.

    Args:
        plans: The rendered pairs.
        photos: The source photographs.

    Returns:
        One row per file, pairs in ``pair_id`` order, with the order inside a pair drawn
        from the seed (so row parity says nothing about the label).
    """
    rows = []
    for plan in sorted(plans, key=lambda p: p.pair_id):
        photo = photos[plan.photo_index]
        common = {
            "part": plan.part,
            "pair_id": plan.pair_id,
            "group": photo.photo_id,
            "source_registry": photo.registry,
            "source_package": photo.package,
            "source_version": photo.version,
            "source_member": photo.member,
            "licence": photo.licence,
            "licence_file": photo.licence_file,
            "crop_box": ",".join(f"{v:.1f}" for v in plan.box),
        }
        decoder = {f"decoder_{k}": v for k, v in asdict(plan.decoder).items()}
        real = {"file_name": plan.real_name, "label": 0, **common}
        ai = {"file_name": plan.ai_name, "label": 1, **common, **decoder}
        rows.extend([real, ai] if plan.real_first else [ai, real])
    return rows


def usable_photos(
    photos: Sequence[SourcePhoto], crop_size: int
) -> tuple[list[SourcePhoto], list[tuple[int, int]]]:
    """Keep the photographs whose short side fits a crop, logging the ones dropped.

    Args:
        photos: Candidate photographs.
        crop_size: Side of the crops to be cut.

    Returns:
        The kept photographs and their ``(width, height)`` after EXIF orientation.
    """
    kept, sizes = [], []
    for photo in photos:
        width, height = decode_image(photo.data, ImageLimits(min_side=1)).pixels.size
        if min(width, height) >= crop_size:
            kept.append(photo)
            sizes.append((width, height))
        else:
            logger.warning(
                "photo %s is %dx%d, smaller than a %d crop: not used",
                photo.photo_id,
                width,
                height,
                crop_size,
            )
    return kept, sizes


def worker_count(requested: int) -> int:
    """Resolve a worker count: 0 means one per CPU core."""
    return requested if requested > 0 else max(1, multiprocessing.cpu_count())
