"""Nodes of the ``sample_data`` pipeline."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import astuple
from pathlib import Path
from typing import Literal, cast, get_args

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, field_validator, model_validator

from ai_image_detection.contract import generator_family
from ai_image_detection.sample_data.classical import ClassicalOp
from ai_image_detection.sample_data.decoders import DecoderFamily
from ai_image_detection.sample_data.generator_families import (
    CAMERA,
    CLASSICAL_FAMILY,
    GENERATOR_FAMILIES,
    GeneratorFamily,
    accepted_models,
    forbidden_reason,
    provenance,
)
from ai_image_detection.sample_data.pair_plans import (
    TEST_DIR,
    TRAIN_DIR,
    DownscaleFilter,
    GeneratorSettings,
    pair_rows,
    plan_pairs,
    usable_photos,
)
from ai_image_detection.sample_data.pair_rendering import render_pairs, worker_count
from ai_image_detection.sample_data.photo_sources import SourcePhoto

logger = logging.getLogger(__name__)

DEFAULT_UPSCALERJS_CACHE = Path.home() / ".cache" / "ai-image-detection" / "upscalerjs"


class SizePreset(BaseModel):
    """A named size of the data set."""

    model_config = ConfigDict(extra="forbid")

    pairs: int = Field(gt=0, description="real/AI pairs, train and test together")
    registries: list[Literal["pypi", "debian"]] = Field(min_length=1)
    families: dict[GeneratorFamily, PositiveFloat] | None = Field(
        default=None, min_length=1, description="replaces generators.families for this size"
    )


class DecoderParams(BaseModel):
    """The simulated generators (family ``simulator``) to draw from."""

    model_config = ConfigDict(extra="forbid")

    families: list[DecoderFamily] = Field(min_length=1)
    factors: list[int] = Field(min_length=1)
    factor_weights: list[float]
    hidden_channels: int = Field(gt=0)
    residual_strength: tuple[float, float]

    @model_validator(mode="after")
    def _weights_match(self) -> DecoderParams:
        if len(self.factor_weights) != len(self.factors) or not np.isclose(sum(self.factor_weights), 1.0):
            raise ValueError(
                f"factor_weights {self.factor_weights} must give one probability per factor "
                f"{self.factors} and sum to 1"
            )
        return self


class GeneratorParams(BaseModel):
    """The generator families of the AI class and the hard negatives of the human class."""

    model_config = ConfigDict(extra="forbid")

    families: dict[GeneratorFamily, PositiveFloat] = Field(
        default_factory=lambda: {cast(GeneratorFamily, "simulator"): 1.0},
        min_length=1,
        description="family: share of the pairs",
    )
    models: dict[GeneratorFamily, list[str]] = Field(
        default_factory=dict, description="models per real family (the simulator's: sample_data.decoder)"
    )
    downscale_filters: list[DownscaleFilter] = Field(default=["area", "bicubic", "lanczos"], min_length=1)
    sharpness_match: tuple[PositiveFloat, PositiveFloat] = (1.0, 1.0)
    hard_negative_fraction: float = Field(default=0.0, ge=0, le=1)
    hard_negatives: list[ClassicalOp] = Field(
        default_factory=lambda: list(get_args(ClassicalOp)), min_length=1
    )
    upscalerjs_cache_dir: str | None = None

    @field_validator("models")
    @classmethod
    def _models_exist(cls, models: dict[str, list[str]]) -> dict[str, list[str]]:
        for family, names in models.items():
            if family == "simulator":
                raise ValueError(
                    "the simulator's models come from sample_data.decoder (families, factors); "
                    "leave simulator out of sample_data.generators.models"
                )
            if not names:
                raise ValueError(f"generators.models.{family} is empty; accepted: {accepted_models(family)}")
            for name in names:
                reason = forbidden_reason(name)
                if reason is not None:
                    raise ValueError(f"generator {family}/{name} {reason}; it cannot be selected")
                if name not in accepted_models(family):
                    raise ValueError(
                        f"unknown {family} model {name!r}; accepted: {', '.join(accepted_models(family))}"
                    )
        return models

    @model_validator(mode="after")
    def _sharpness_range(self) -> GeneratorParams:
        low, high = self.sharpness_match
        if low > high:
            raise ValueError(
                f"sharpness_match {list(self.sharpness_match)} must be [low, high] with low <= high"
            )
        return self


class SampleDataParams(BaseModel):
    """Parameters of the ``sample_data`` pipeline (``conf/base/parameters_sample_data.yml``)."""

    model_config = ConfigDict(extra="forbid")

    size: str
    sizes: dict[str, SizePreset]
    seed: int
    test_fraction: float = Field(ge=0, lt=1)
    crop_size: int = Field(ge=32)
    min_scale: float = Field(gt=0, le=1)
    lossless_fraction: float = Field(ge=0, le=1, description="share of pairs per family stored as PNG")
    jpeg_quality: int = Field(ge=50, le=100)
    min_distinct_photos: int = Field(ge=1)
    workers: int = Field(ge=0, description="render processes; 0 = one per CPU core")
    decoder: DecoderParams
    generators: GeneratorParams = Field(default_factory=GeneratorParams)
    contact_sheet_pairs: int = Field(ge=1, description="example pairs per generator family")

    @model_validator(mode="after")
    def _size_and_models_exist(self) -> SampleDataParams:
        if self.size not in self.sizes:
            raise ValueError(f"size {self.size!r} is not one of {sorted(self.sizes)}")
        for name, preset in self.sizes.items():
            families = preset.families or self.generators.families
            missing = [f for f in families if f != "simulator" and f not in self.generators.models]
            if missing:
                raise ValueError(
                    f"size {name!r} uses the families {missing}, which have no model list in "
                    f"sample_data.generators.models (families: {', '.join(GENERATOR_FAMILIES)})"
                )
        return self

    @property
    def preset(self) -> SizePreset:
        """The selected size preset."""
        return self.sizes[self.size]

    @property
    def families(self) -> dict[str, float]:
        """The family weights of the selected size."""
        return {
            str(family): weight
            for family, weight in (self.preset.families or self.generators.families).items()
        }

    def generator_settings(self) -> GeneratorSettings:
        """The settings the generator needs."""
        generators = self.generators
        cache = generators.upscalerjs_cache_dir
        return GeneratorSettings(
            crop_size=self.crop_size,
            min_scale=self.min_scale,
            family_weights=self.families,
            models={family: tuple(names) for family, names in generators.models.items()},
            decoder_kinds=tuple(self.decoder.families),
            factors=tuple(self.decoder.factors),
            factor_weights=tuple(self.decoder.factor_weights),
            hidden_channels=self.decoder.hidden_channels,
            residual_strength=self.decoder.residual_strength,
            downscale_filters=tuple(generators.downscale_filters),
            sharpness_match=generators.sharpness_match,
            hard_negative_fraction=generators.hard_negative_fraction,
            hard_negatives=tuple(generators.hard_negatives),
            upscalerjs_cache_dir=Path(cache).expanduser() if cache else DEFAULT_UPSCALERJS_CACHE,
            lossless_fraction=self.lossless_fraction,
            jpeg_quality=self.jpeg_quality,
        )


def generate_pairs(
    source_photos: list[SourcePhoto], params: SampleDataParams
) -> tuple[dict[str, bytes], dict[str, bytes], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Cut real crops from the photographs and make their AI twins with the configured generators.

    Args:
        source_photos: Photographs from the package registries.
        params: Size, seed, crop, generator and hard-negative settings.

    Returns:
        Train images and test images (file name inside their folder to bytes), the Kaggle
        ``train.csv`` (``file_name,label``) and ``test.csv`` (``id``) tables, and the sidecar
        table with every file's label, group, source package, licence and ``generator``
        (``family/model``) with its package, version, licence and drawn settings.
    """
    selected = [photo for photo in source_photos if photo.registry in params.preset.registries]
    photos, sizes = usable_photos(selected, params.crop_size)
    if len(photos) < params.min_distinct_photos:
        logger.warning(
            "only %d distinct source photos (wanted at least %d): the data set is less diverse "
            "than intended; on Debian/Ubuntu, `sudo apt-get update` makes the Debian photos available",
            len(photos),
            params.min_distinct_photos,
        )
    settings = params.generator_settings()
    plans = plan_pairs(sizes, params.preset.pairs, params.test_fraction, settings, params.seed)
    files = render_pairs(photos, plans, settings, worker_count(params.workers))
    generators = {side.generator: side for plan in plans for side in (plan.human, plan.ai)}
    origins = {
        name: astuple(provenance(generator_family(name), name.split("/", 1)[1])) for name in generators
    }
    sidecar = pd.DataFrame(pair_rows(plans, photos, origins))
    train = sidecar[sidecar["part"] == "train"]
    test = sidecar[sidecar["part"] == "test"].sample(frac=1.0, random_state=params.seed)
    ai_rows = sidecar[sidecar["label"] == 1]
    logger.info(
        "sample data: %d train and %d test files from %d photos of %d packages; AI pairs per family %s, "
        "%d hard negatives",
        len(train),
        len(test),
        len(photos),
        sidecar["source_package"].nunique(),
        ai_rows["generator"].map(generator_family).value_counts().to_dict(),
        int(sidecar["generator"].str.startswith("classical/").sum()),
    )
    return (
        _in_folder(files, TRAIN_DIR),
        _in_folder(files, TEST_DIR),
        train[["file_name", "label"]].reset_index(drop=True),
        test[["file_name"]].rename(columns={"file_name": "id"}).reset_index(drop=True),
        sidecar,
    )


def _in_folder(files: dict[str, bytes], folder: str) -> dict[str, bytes]:
    """The files under ``folder``, keyed by their name inside it (a partition id)."""
    prefix = f"{folder}/"
    return {name.removeprefix(prefix): data for name, data in files.items() if name.startswith(prefix)}


def draw_contact_sheet(
    train_images: dict[str, Callable[[], bytes]], sample_sources: pd.DataFrame, params: SampleDataParams
) -> Figure:
    """Show example pairs of every generator family and a hard negative, and the mean spectra.

    Args:
        train_images: Train images by file name inside ``train_data/``, as the lazy loaders
            a ``PartitionedDataset`` gives.
        sample_sources: The sidecar table (pairs, labels, generators).
        params: Holds how many pairs to show per family.

    Returns:
        A figure: one row per example pair (human, AI, 4x zooms; titles name the generators),
        then the mean log-spectrum of the high-pass residual of each class, where up-sampling
        peaks show.
    """
    train = sample_sources[sample_sources["part"] == "train"]
    pair_ids = example_pairs(train, params.contact_sheet_pairs)
    rows = len(pair_ids) + 1
    figure, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
    for row, pair_id in enumerate(pair_ids):
        pair = train[train["pair_id"] == pair_id].sort_values("label")
        human, ai = (
            _pixels(train_images[name.removeprefix(f"{TRAIN_DIR}/")]()) for name in pair["file_name"]
        )
        human_title, ai_title = (f"human: {pair['generator'].iloc[0]}", f"AI: {pair['generator'].iloc[1]}")
        zoom = slice(0, human.shape[0] // 4)
        for col, (image, title) in enumerate(
            [
                (human, human_title),
                (ai, ai_title),
                (human[zoom, zoom], "human, 4x zoom"),
                (ai[zoom, zoom], "AI, 4x zoom"),
            ]
        ):
            axes[row, col].imshow(image, interpolation="nearest")
            axes[row, col].set_title(title, fontsize=8)
    spectra = []
    for col, class_label in enumerate((0, 1)):
        names = train.loc[train["label"] == class_label, "file_name"].head(200)
        spectra.append(
            mean_residual_spectrum([_pixels(train_images[n.removeprefix(f"{TRAIN_DIR}/")]()) for n in names])
        )
        axes[-1, col].imshow(spectra[-1], cmap="magma")
        axes[-1, col].set_title(f"mean log-spectrum, {'AI' if class_label else 'human'}", fontsize=8)
    axes[-1, 2].imshow(spectra[1] - spectra[0], cmap="coolwarm")
    axes[-1, 2].set_title("AI minus human: up-sampling peaks", fontsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle(f"Embedded sample data: human vs AI pairs by generator ({params.size})")
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    return figure


def example_pairs(sidecar: pd.DataFrame, per_family: int) -> list[int]:
    """Pick ``per_family`` pairs with a pristine human side per AI family, then a hard negative.

    Args:
        sidecar: Rows of the sidecar table (``pair_id``, ``label``, ``generator``).
        per_family: Pairs to pick per AI generator family.

    Returns:
        ``pair_id`` values, families in order of first appearance, the hard negative last.
    """
    humans = sidecar[sidecar["label"] == 0].set_index("pair_id")["generator"]
    ai = sidecar[sidecar["label"] == 1].sort_values("pair_id")
    pristine = ai[ai["pair_id"].map(humans).eq(CAMERA)]
    chosen = pristine.groupby(pristine["generator"].map(generator_family), sort=False).head(per_family)
    hard = humans[humans.str.startswith(f"{CLASSICAL_FAMILY}/")].sort_index()
    return [int(pair_id) for pair_id in chosen["pair_id"]] + [int(pair_id) for pair_id in hard.index[:1]]


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def mean_residual_spectrum(images: list[np.ndarray]) -> np.ndarray:
    """Mean log-magnitude spectrum of the images' high-pass residuals, centred.

    Up-sampling leaves periodic traces, which show as bright peaks away from the centre
    (e.g. at half the sampling frequency for a ×2 decoder); camera images show none.

    Args:
        images: ``[H, W, 3]`` uint8 images of one size.

    Returns:
        ``[H, W]`` float array of the mean ``log(1 + |FFT|)``.
    """
    total = None
    for image in images:
        grey = image.astype(np.float64).mean(axis=2)
        residual = grey - _box_blur3(grey)
        magnitude = np.log1p(np.abs(np.fft.fftshift(np.fft.fft2(residual))))
        total = magnitude if total is None else total + magnitude
    if total is None:
        raise ValueError("mean_residual_spectrum needs at least one image")
    return total / len(images)


def _box_blur3(grey: np.ndarray) -> np.ndarray:
    padded = np.pad(grey, 1, mode="edge")
    height, width = grey.shape
    return np.asarray(sum(padded[r : r + height, c : c + width] for r in range(3) for c in range(3)) / 9.0)
