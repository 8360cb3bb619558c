"""The embedded data set, planned: aligned real/AI pairs cut from package photographs.

Each pair is one random crop of a real photograph. Its human side is the pristine crop
(``camera/original``) or, for a share of the pairs, a classical hard negative of it
(``classical/<op>``, :mod:`.classical`); its AI side is the same crop made again by a generator
(:mod:`.generator_families`): the simulated decoders of :mod:`.decoders`, or a real super-resolution
network fed the crop's region of the photograph down-sampled by the network's factor. Both
sides are encoded with the same format and quality, so content, size, file format and JPEG
history carry no signal. Photographs are held out whole for the test part, so test content is
never seen in training.

Every choice is drawn up front from the seed (:func:`plan_pairs`); :mod:`.pair_rendering` turns
the plans into files, and :func:`pair_rows` describes them for the sidecar table.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import numpy as np

from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.sample_data.classical import classical_settings
from ai_image_detection.sample_data.decoders import DecoderFamily, DecoderSpec
from ai_image_detection.sample_data.generator_families import CAMERA, CLASSICAL_FAMILY, model_scale
from ai_image_detection.sample_data.photo_sources import SourcePhoto

logger = logging.getLogger(__name__)

TRAIN_DIR = "train_data"
TEST_DIR = "test_data_v2"
ORIGINAL: Final = "original"
LOSSLESS_STREAM: Final = 1
"""Seeds the draw of which pairs are stored as PNG apart from every other draw."""
CONTEXT_MARGIN: Final = 4
"""Crop pixels kept free around every crop, so an up-scaler whose factor does not divide the crop
size (×3: 86 px → 258) can be fed a slightly larger region centred on the same crop."""

DownscaleFilter = Literal["area", "bicubic", "lanczos"]


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
        lossless_fraction: Share of pairs, per family, written as PNG (both sides alike); the
            others are JPEG. Real uploads come both ways, and a set stored in one format lets a
            model learn that format's traces as a class cue.
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
    lossless_fraction: float
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
    """Everything needed to render one pair, drawn up front from the seed.

    ``lossless`` pairs are written as PNG, the others as JPEG: both sides of a pair alike.
    """

    pair_id: int
    part: str
    photo_index: int
    box: tuple[float, float, float, float]
    real_name: str
    ai_name: str
    real_first: bool
    human: HumanSide
    ai: AISide
    lossless: bool


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
    ``hard_negative_fraction`` of the pairs has a hard negative on the human side and an exact
    ``lossless_fraction`` is stored as PNG. The storage is drawn from a stream of its own, so the
    crops, generators and hard negatives do not depend on it.

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
    hard = _deal_share(families, settings.hard_negative_fraction, rng)
    storage_rng = np.random.default_rng([seed, LOSSLESS_STREAM])
    lossless = _deal_share(families, settings.lossless_fraction, storage_rng)
    plans = []
    for pair_id, family in enumerate(families):
        photo_index = int(order[pair_id % len(order)])
        box = _draw_box(photo_sizes[photo_index], settings, rng)
        ai = _draw_ai_side(family, settings, rng)
        human = _draw_human_side(pair_id in hard, settings, rng)
        part = "test" if photo_index in test_photos else "train"
        folder = TEST_DIR if part == "test" else TRAIN_DIR
        extension = "png" if pair_id in lossless else "jpg"
        plans.append(
            PairPlan(
                pair_id=pair_id,
                part=part,
                photo_index=photo_index,
                box=box,
                real_name=f"{folder}/{rng.bytes(16).hex()}.{extension}",
                ai_name=f"{folder}/{rng.bytes(16).hex()}.{extension}",
                real_first=bool(rng.integers(2)),
                human=human,
                ai=ai,
                lossless=pair_id in lossless,
            )
        )
    return sorted(plans, key=lambda plan: (plan.photo_index, plan.pair_id))


def _deal_families(n_pairs: int, weights: Mapping[str, float], rng: np.random.Generator) -> list[str]:
    counts = family_counts(n_pairs, weights)
    families = np.array([family for family, count in counts.items() for _ in range(count)])
    return [str(family) for family in families[rng.permutation(n_pairs)]]


def _deal_share(families: list[str], fraction: float, rng: np.random.Generator) -> set[int]:
    """The pair ids of an exact ``fraction`` of each family's pairs."""
    chosen: set[int] = set()
    for family in dict.fromkeys(families):
        members = np.flatnonzero(np.array(families) == family)
        picked = rng.choice(members, size=round(fraction * len(members)), replace=False)
        chosen.update(int(index) for index in picked)
    return chosen


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
