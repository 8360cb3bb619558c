"""Nodes of the ``sample_data`` pipeline."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ai_image_detection.sample_data.decoders import DecoderFamily
from ai_image_detection.sample_data.generator import (
    TEST_DIR,
    TRAIN_DIR,
    GeneratorSettings,
    pair_rows,
    plan_pairs,
    render_pairs,
    usable_photos,
    worker_count,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto

logger = logging.getLogger(__name__)


class SizePreset(BaseModel):
    """A named size of the data set."""

    model_config = ConfigDict(extra="forbid")

    pairs: int = Field(gt=0, description="real/AI pairs, train and test together")
    registries: list[Literal["pypi", "debian"]] = Field(min_length=1)


class DecoderParams(BaseModel):
    """The simulated generators to draw from."""

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


class SampleDataParams(BaseModel):
    """Parameters of the ``sample_data`` pipeline (``conf/base/parameters_sample_data.yml``)."""

    model_config = ConfigDict(extra="forbid")

    size: str
    sizes: dict[str, SizePreset]
    seed: int
    test_fraction: float = Field(ge=0, lt=1)
    crop_size: int = Field(ge=32)
    min_scale: float = Field(gt=0, le=1)
    image_format: Literal["jpg", "png"]
    jpeg_quality: int = Field(ge=50, le=100)
    min_distinct_photos: int = Field(ge=1)
    workers: int = Field(ge=0, description="render processes; 0 = one per CPU core")
    decoder: DecoderParams
    contact_sheet_pairs: int = Field(ge=1)

    @model_validator(mode="after")
    def _size_exists(self) -> SampleDataParams:
        if self.size not in self.sizes:
            raise ValueError(f"size {self.size!r} is not one of {sorted(self.sizes)}")
        return self

    @property
    def preset(self) -> SizePreset:
        """The selected size preset."""
        return self.sizes[self.size]

    def generator_settings(self) -> GeneratorSettings:
        """The settings the generator needs."""
        return GeneratorSettings(
            crop_size=self.crop_size,
            min_scale=self.min_scale,
            families=tuple(self.decoder.families),
            factors=tuple(self.decoder.factors),
            factor_weights=tuple(self.decoder.factor_weights),
            hidden_channels=self.decoder.hidden_channels,
            residual_strength=self.decoder.residual_strength,
            image_format=self.image_format,
            jpeg_quality=self.jpeg_quality,
        )


def generate_pairs(
    source_photos: list[SourcePhoto], params: SampleDataParams
) -> tuple[dict[str, bytes], dict[str, bytes], pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Cut real crops from the photographs and render their simulated-AI twins.

    Args:
        source_photos: Photographs from the package registries.
        params: Size, seed, crop and decoder settings.

    Returns:
        Train images and test images (file name inside their folder to bytes), the Kaggle
        ``train.csv`` (``file_name,label``) and ``test.csv`` (``id``) tables, and the sidecar
        table with every file's label, group, source package, licence and decoder.
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
    sidecar = pd.DataFrame(pair_rows(plans, photos)).astype(
        {"decoder_factor": "Int64", "decoder_hidden_channels": "Int64", "decoder_seed": "Int64"}
    )
    train = sidecar[sidecar["part"] == "train"]
    test = sidecar[sidecar["part"] == "test"].sample(frac=1.0, random_state=params.seed)
    logger.info(
        "sample data: %d train and %d test files from %d photos of %d packages",
        len(train),
        len(test),
        len(photos),
        sidecar["source_package"].nunique(),
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
    """Show real/AI pairs side by side, a zoomed patch of each, and the mean spectra.

    Args:
        train_images: Train images by file name inside ``train_data/``, as the lazy loaders
            a ``PartitionedDataset`` gives.
        sample_sources: The sidecar table (pairs, labels, decoders).
        params: Holds how many pairs to show.

    Returns:
        A figure: one row per pair (real, AI, 4x zooms), then the mean log-spectrum of the
        high-pass residual of each class, where the up-sampling peaks show.
    """
    train = sample_sources[sample_sources["part"] == "train"]
    pair_ids = train["pair_id"].drop_duplicates().head(params.contact_sheet_pairs)
    rows = len(pair_ids) + 1
    figure, axes = plt.subplots(rows, 4, figsize=(10, 2.6 * rows), squeeze=False)
    for row, pair_id in enumerate(pair_ids):
        pair = train[train["pair_id"] == pair_id].sort_values("label")
        real, ai = (_pixels(train_images[name.removeprefix(f"{TRAIN_DIR}/")]()) for name in pair["file_name"])
        decoder = pair.iloc[1]
        title = f"AI: {decoder['decoder_family']} x{int(decoder['decoder_factor'])}"
        zoom = slice(0, real.shape[0] // 4)
        for col, (image, label) in enumerate(
            [
                (real, "real"),
                (ai, title),
                (real[zoom, zoom], "real, 4x zoom"),
                (ai[zoom, zoom], "AI, 4x zoom"),
            ]
        ):
            axes[row, col].imshow(image, interpolation="nearest")
            axes[row, col].set_title(label, fontsize=8)
    spectra = []
    for col, class_label in enumerate((0, 1)):
        names = train.loc[train["label"] == class_label, "file_name"].head(200)
        spectra.append(
            mean_residual_spectrum([_pixels(train_images[n.removeprefix(f"{TRAIN_DIR}/")]()) for n in names])
        )
        axes[-1, col].imshow(spectra[-1], cmap="magma")
        axes[-1, col].set_title(f"mean log-spectrum, {'AI' if class_label else 'real'}", fontsize=8)
    axes[-1, 2].imshow(spectra[1] - spectra[0], cmap="coolwarm")
    axes[-1, 2].set_title("AI minus real: up-sampling peaks", fontsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.suptitle(f"Embedded sample data: real vs simulated-AI pairs ({params.size})")
    figure.tight_layout(rect=(0, 0, 1, 0.98))
    return figure


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
