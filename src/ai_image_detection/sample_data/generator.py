"""The embedded data set: aligned real/AI pairs cut from package photographs.

Each pair is one random crop of a real photograph. Its human side is the pristine crop
(``camera/original``) or, for a share of the pairs, a classical hard negative of it
(``classical/<op>``, :mod:`.classical`); its AI side is the same crop made again by a generator
(:mod:`.generator_families`): the simulated decoders of :mod:`.decoders`, or a real super-resolution
network fed the crop's region of the photograph down-sampled by the network's factor. Both
sides are encoded with the same format and quality, so content, size, file format and JPEG
history carry no signal. Photographs are held out whole for the test part, so test content is
never seen in training.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.sample_data.classical import apply_classical, classical_settings
from ai_image_detection.sample_data.decoders import (
    DecoderFamily,
    DecoderSpec,
    match_sharpness,
    mean_gradient_magnitude,
    simulate_generator,
)
from ai_image_detection.sample_data.generator_families import (
    CAMERA,
    CLASSICAL_FAMILY,
    Upscale,
    load_upscaler_model,
    model_scale,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto

logger = logging.getLogger(__name__)

TRAIN_DIR = "train_data"
TEST_DIR = "test_data_v2"
ORIGINAL: Final = "original"
CONTEXT_MARGIN: Final = 4
"""Crop pixels kept free around every crop, so an up-scaler whose factor does not divide the crop
size (×3: 86 px → 258) can be fed a slightly larger region centred on the same crop."""
IN_PROCESS_FAMILIES: Final = frozenset({"upscalerjs"})
"""Families rendered in the calling process, which has TensorFlow loaded already (a worker would
spend many seconds importing it)."""

DownscaleFilter = Literal["area", "bicubic", "lanczos"]
_DOWNSCALE_FILTERS: Final = {
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class GeneratorSettings:
    """How pairs are cut and rendered.

    Attributes:
        crop_size: Side of the square crops, in pixels.
        min_scale: Smallest factor a photograph is scaled by before cropping (more context).
        family_weights: Share of the pairs each generator family makes (normalised).
        models: Models to draw from, uniformly, for each real generator family.
        decoder_kinds: The simulator's decoder kinds to draw from, uniformly.
        factors: The simulator's up-sampling factors to draw from.
        factor_weights: Probability of each simulator factor.
        hidden_channels: Width of the simulated decoders' hidden layer.
        residual_strength: Range of the simulated decoders' residual strength, in grey levels.
        downscale_filters: Filters that make a real up-scaler's low-resolution input.
        sharpness_match: Range of the mean gradient magnitude a real up-scaler's output is
            sharpened to, relative to its pristine twin's (never softened).
        hard_negative_fraction: Share of pairs, per family, whose human side is a hard negative.
        hard_negatives: Classical operations to draw hard negatives from, uniformly.
        upscalerjs_cache_dir: Download cache of models fetched at run time (UpscalerJS).
        image_format: ``"jpg"`` or ``"png"``, the same for both classes.
        jpeg_quality: JPEG quality, the same for both classes.
    """

    crop_size: int
    min_scale: float
    family_weights: Mapping[str, float]
    models: Mapping[str, tuple[str, ...]]
    decoder_kinds: tuple[DecoderFamily, ...]
    factors: tuple[int, ...]
    factor_weights: tuple[float, ...]
    hidden_channels: int
    residual_strength: tuple[float, float]
    downscale_filters: tuple[DownscaleFilter, ...]
    sharpness_match: tuple[float, float]
    hard_negative_fraction: float
    hard_negatives: tuple[str, ...]
    upscalerjs_cache_dir: Path
    image_format: str
    jpeg_quality: int


@dataclass(frozen=True)
class HumanSide:
    """How the human image of a pair is made from the pristine crop.

    Attributes:
        op: ``"original"`` or a classical operation (:data:`.classical.CLASSICAL_OPS`).
        strength: The operation's drawn strength in ``[0, 1]``.
    """

    op: str
    strength: float

    @property
    def generator(self) -> str:
        """``camera/original`` or ``classical/<op>``."""
        return CAMERA if self.op == ORIGINAL else f"{CLASSICAL_FAMILY}/{self.op}"

    def settings(self) -> str:
        """The drawn parameters, for the sidecar table."""
        return "" if self.op == ORIGINAL else classical_settings(self.op, self.strength)


@dataclass(frozen=True)
class AISide:
    """How the AI image of a pair is made.

    Attributes:
        family: Generator family.
        model: Model inside the family (the simulator's is ``<kind>_x<factor>``).
        factor: Up-sampling factor (the crop's region is down-sampled by it first).
        downscale_filter: Filter making a real up-scaler's input (the simulator averages blocks).
        sharpness_ratio: Target mean gradient magnitude relative to the pristine crop's
            (the simulator always matches it exactly).
        decoder: The simulated decoder, for the ``simulator`` family only.
    """

    family: str
    model: str
    factor: int
    downscale_filter: DownscaleFilter
    sharpness_ratio: float
    decoder: DecoderSpec | None = None

    @property
    def generator(self) -> str:
        """``family/model``."""
        return f"{self.family}/{self.model}"

    def settings(self) -> str:
        """The drawn parameters, for the sidecar table."""
        if self.decoder is not None:
            return (
                f"factor={self.factor} hidden_channels={self.decoder.hidden_channels} "
                f"residual_strength={self.decoder.residual_strength:.3f} seed={self.decoder.seed}"
            )
        ratio = f"{self.sharpness_ratio:.3f}"
        return f"factor={self.factor} downscale={self.downscale_filter} sharpness_ratio={ratio}"


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
    human: HumanSide
    ai: AISide


def family_counts(n_pairs: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Share ``n_pairs`` among families in proportion to their weights (largest remainder).

    Args:
        n_pairs: Pairs to share.
        weights: Positive weight per family.

    Returns:
        Pairs per family, summing to ``n_pairs``; every family gets one when ``n_pairs`` allows.
    """
    total = sum(weights.values())
    exact = {family: n_pairs * weight / total for family, weight in weights.items()}
    counts = {family: math.floor(share) for family, share in exact.items()}
    largest_remainders = sorted(exact, key=lambda family: counts[family] - exact[family])
    for family in largest_remainders[: n_pairs - sum(counts.values())]:
        counts[family] += 1
    for family in [family for family, count in counts.items() if count == 0]:
        if n_pairs >= len(counts):  # every family present when possible
            counts[max(counts, key=counts.__getitem__)] -= 1
            counts[family] = 1
    return counts


def plan_pairs(
    photo_sizes: Sequence[tuple[int, int]],
    n_pairs: int,
    test_fraction: float,
    settings: GeneratorSettings,
    seed: int,
) -> list[PairPlan]:
    """Draw crops, generators, hard negatives and file names for ``n_pairs`` pairs.

    Photographs are dealt round-robin (in a seeded order) so each contributes about equally;
    a seeded ``test_fraction`` of the photographs is held out whole for the test part. Each
    family makes its exact share of the pairs, and within each family an exact
    ``hard_negative_fraction`` of the pairs has a hard negative on the human side.

    Args:
        photo_sizes: ``(width, height)`` of each usable photograph.
        n_pairs: Number of real/AI pairs, train and test together.
        test_fraction: Share of photographs whose pairs form the test part.
        settings: Crop and generator settings.
        seed: Seed for every random choice.

    Returns:
        One plan per pair, ordered by photograph (which keeps decoding cheap).

    Raises:
        ValueError: If no photograph is large enough for a crop and its context margin.
    """
    if not photo_sizes:
        raise ValueError(
            f"no source photo is at least {settings.crop_size + 2 * CONTEXT_MARGIN} px on its short side"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(photo_sizes))
    n_test_photos = min(len(order) - 1, max(1, round(test_fraction * len(order)))) if test_fraction else 0
    test_photos = set(order[:n_test_photos].tolist())
    families = _deal_families(n_pairs, settings.family_weights, rng)
    hard = _deal_hard_negatives(families, settings.hard_negative_fraction, rng)
    plans = []
    for pair_id, family in enumerate(families):
        photo_index = int(order[pair_id % len(order)])
        box = _draw_box(photo_sizes[photo_index], settings, rng)
        ai = _draw_ai_side(family, settings, rng)
        human = _draw_human_side(pair_id in hard, settings, rng)
        part = "test" if photo_index in test_photos else "train"
        folder = TEST_DIR if part == "test" else TRAIN_DIR
        plans.append(
            PairPlan(
                pair_id=pair_id,
                part=part,
                photo_index=photo_index,
                box=box,
                real_name=f"{folder}/{rng.bytes(16).hex()}.{settings.image_format}",
                ai_name=f"{folder}/{rng.bytes(16).hex()}.{settings.image_format}",
                real_first=bool(rng.integers(2)),
                human=human,
                ai=ai,
            )
        )
    return sorted(plans, key=lambda plan: (plan.photo_index, plan.pair_id))


def _deal_families(n_pairs: int, weights: Mapping[str, float], rng: np.random.Generator) -> list[str]:
    counts = family_counts(n_pairs, weights)
    families = np.array([family for family, count in counts.items() for _ in range(count)])
    return [str(family) for family in families[rng.permutation(n_pairs)]]


def _deal_hard_negatives(families: list[str], fraction: float, rng: np.random.Generator) -> set[int]:
    hard: set[int] = set()
    for family in dict.fromkeys(families):
        members = np.flatnonzero(np.array(families) == family)
        chosen = rng.choice(members, size=round(fraction * len(members)), replace=False)
        hard.update(int(index) for index in chosen)
    return hard


def _draw_box(
    size: tuple[int, int], settings: GeneratorSettings, rng: np.random.Generator
) -> tuple[float, float, float, float]:
    """A square crop box with :data:`CONTEXT_MARGIN` crop pixels of photograph around it."""
    width, height = size
    padded = settings.crop_size + 2 * CONTEXT_MARGIN
    scale = rng.uniform(max(settings.min_scale, padded / min(width, height)), 1.0)
    side = settings.crop_size / scale
    margin = CONTEXT_MARGIN / scale
    left = rng.uniform(margin, width - side - margin)
    top = rng.uniform(margin, height - side - margin)
    return (left, top, left + side, top + side)


def _draw_ai_side(family: str, settings: GeneratorSettings, rng: np.random.Generator) -> AISide:
    if family == "simulator":
        kind = settings.decoder_kinds[int(rng.integers(len(settings.decoder_kinds)))]
        factor = int(rng.choice(settings.factors, p=settings.factor_weights))
        decoder = DecoderSpec(
            family=kind,
            factor=factor,
            hidden_channels=settings.hidden_channels,
            residual_strength=float(rng.uniform(*settings.residual_strength)),
            seed=int(rng.integers(2**31)),
        )
        return AISide(family, f"{kind}_x{factor}", factor, "area", 1.0, decoder)
    models = settings.models[family]
    model = models[int(rng.integers(len(models)))]
    downscale = settings.downscale_filters[int(rng.integers(len(settings.downscale_filters)))]
    ratio = float(rng.uniform(*settings.sharpness_match))
    return AISide(family, model, model_scale(family, model), downscale, ratio)


def _draw_human_side(hard: bool, settings: GeneratorSettings, rng: np.random.Generator) -> HumanSide:
    if not hard:
        return HumanSide(ORIGINAL, 0.0)
    op = settings.hard_negatives[int(rng.integers(len(settings.hard_negatives)))]
    return HumanSide(op, float(rng.uniform()))


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
    return encode(human, settings), encode(ai, settings)


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


def pair_rows(
    plans: Sequence[PairPlan], photos: Sequence[SourcePhoto], provenance: Mapping[str, tuple[str, str, str]]
) -> list[dict[str, object]]:
    """Describe every file of every pair: label, provenance and how it was made.

    Args:
        plans: The rendered pairs.
        photos: The source photographs.
        provenance: ``(package, version, licence)`` of every generator in the plans.

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
            "pair": f"pair-{plan.pair_id}",  # ties an AI image to its content twin (ingestion's ``pair``)
            "group": photo.photo_id,
            "source_registry": photo.registry,
            "source_package": photo.package,
            "source_version": photo.version,
            "source_member": photo.member,
            "licence": photo.licence,
            "licence_file": photo.licence_file,
            "crop_box": ",".join(f"{v:.1f}" for v in plan.box),
        }
        sides = []
        for name, label, generator, settings in (
            (plan.real_name, 0, plan.human.generator, plan.human.settings()),
            (plan.ai_name, 1, plan.ai.generator, plan.ai.settings()),
        ):
            package, version, licence = provenance[generator]
            sides.append(
                {
                    "file_name": name,
                    "label": label,
                    **common,
                    "generator": generator,
                    "generator_package": package,
                    "generator_version": version,
                    "generator_licence": licence,
                    "generator_settings": settings,
                }
            )
        rows.extend(sides if plan.real_first else sides[::-1])
    return rows


def usable_photos(
    photos: Sequence[SourcePhoto], crop_size: int
) -> tuple[list[SourcePhoto], list[tuple[int, int]]]:
    """Keep the photographs whose short side fits a crop and its context margin, logging the rest.

    Args:
        photos: Candidate photographs.
        crop_size: Side of the crops to be cut.

    Returns:
        The kept photographs and their ``(width, height)`` after EXIF orientation.
    """
    needed = crop_size + 2 * CONTEXT_MARGIN
    kept, sizes = [], []
    for photo in photos:
        width, height = decode_image(photo.data, ImageLimits(min_side=1)).pixels.size
        if min(width, height) >= needed:
            kept.append(photo)
            sizes.append((width, height))
        else:
            logger.warning(
                "photo %s is %dx%d, too small for a %d px crop with its %d px margin: not used",
                photo.photo_id,
                width,
                height,
                crop_size,
                CONTEXT_MARGIN,
            )
    return kept, sizes


def worker_count(requested: int) -> int:
    """Resolve a worker count: 0 means one per CPU core."""
    return requested if requested > 0 else max(1, multiprocessing.cpu_count())
