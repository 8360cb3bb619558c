"""The sample_data nodes: layout, determinism, no trivial shortcuts, a real fingerprint."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from matplotlib.figure import Figure
from PIL import Image
from sklearn.datasets import images as sklearn_images
from sklearn.metrics import roc_auc_score

from ai_image_detection.pipelines.sample_data.nodes import (
    SampleDataParams,
    draw_contact_sheet,
    generate_pairs,
    mean_residual_spectrum,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto

PAIRS = 60


def _photo(path: Path, package: str) -> SourcePhoto:
    return SourcePhoto(
        photo_id=f"{package}:{path.name}",
        registry="pypi",
        package=package,
        version="installed",
        member=path.name,
        licence="test",
        licence_file="test",
        data=path.read_bytes(),
    )


@pytest.fixture(scope="module")
def installed_photos() -> list[SourcePhoto]:
    """Real photographs from packages this environment already has (no download)."""
    sklearn_dir = Path(sklearn_images.__file__).parent
    return [
        _photo(sklearn_dir / "china.jpg", "scikit-learn"),
        _photo(sklearn_dir / "flower.jpg", "scikit-learn"),
        _photo(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), "matplotlib"),
    ]


def make_params(**overrides: object) -> SampleDataParams:
    values: dict[str, object] = {
        "size": "test",
        "sizes": {"test": {"pairs": PAIRS, "registries": ["pypi"]}},
        "seed": 7,
        "test_fraction": 0.34,
        "crop_size": 128,
        "min_scale": 0.35,
        "image_format": "jpg",
        "jpeg_quality": 95,
        "min_distinct_photos": 1,
        "workers": 1,
        "decoder": {
            "families": ["transposed_conv", "nearest_conv"],
            "factors": [2, 4],
            "factor_weights": [0.75, 0.25],
            "hidden_channels": 8,
            "residual_strength": [1.0, 2.5],
        },
        "contact_sheet_pairs": 2,
    }
    values.update(overrides)
    return SampleDataParams.model_validate(values)


@pytest.fixture(scope="module")
def generated(installed_photos: list[SourcePhoto]) -> tuple:
    return generate_pairs(installed_photos, make_params())


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def _by_label(generated: tuple) -> dict[int, list[bytes]]:
    train_images, _, _, _, sidecar = generated
    train = sidecar[sidecar["part"] == "train"]
    return {
        label: [
            train_images[name.removeprefix("train_data/")]
            for name in train.loc[train["label"] == label, "file_name"]
        ]
        for label in (0, 1)
    }


def test_writes_the_kaggle_layout(generated: tuple) -> None:
    train_images, test_images, train_table, test_table, sidecar = generated
    assert list(train_table.columns) == ["file_name", "label"]
    assert list(test_table.columns) == ["id"]
    assert train_table["file_name"].str.fullmatch(r"train_data/[0-9a-f]{32}\.jpg").all()
    assert test_table["id"].str.fullmatch(r"test_data_v2/[0-9a-f]{32}\.jpg").all()
    assert set(train_table["label"]) == {0, 1}
    assert train_table["label"].mean() == 0.5
    assert len(train_images) + len(test_images) == 2 * PAIRS
    assert sorted(f"train_data/{name}" for name in train_images) == sorted(train_table["file_name"])
    assert sorted(f"test_data_v2/{name}" for name in test_images) == sorted(test_table["id"])
    assert {"group", "source_package", "source_version", "licence", "decoder_family"} <= set(sidecar.columns)


def test_test_part_holds_out_whole_photos(generated: tuple) -> None:
    sidecar = generated[4]
    train_groups = set(sidecar.loc[sidecar["part"] == "train", "group"])
    test_groups = set(sidecar.loc[sidecar["part"] == "test", "group"])
    assert test_groups
    assert not train_groups & test_groups


def test_pairs_share_size_and_format(generated: tuple) -> None:
    for data in [*generated[0].values(), *generated[1].values()]:
        image = Image.open(io.BytesIO(data))
        assert (image.format, image.size, image.mode) == ("JPEG", (128, 128), "RGB")


def test_same_seed_gives_the_same_bytes(installed_photos: list[SourcePhoto], generated: tuple) -> None:
    again = generate_pairs(installed_photos, make_params(workers=2))
    assert again[0] == generated[0]
    assert again[1] == generated[1]
    pd.testing.assert_frame_equal(again[4], generated[4])
    other_seed = generate_pairs(installed_photos, make_params(seed=8))
    assert other_seed[0] != generated[0]


def _saturation(image: np.ndarray) -> float:
    top, bottom = image.max(axis=2), image.min(axis=2)
    return float(np.mean((top - bottom) / np.maximum(top, 1.0)))


def _gradient(image: np.ndarray) -> float:
    grey = image.mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


@pytest.mark.parametrize(
    "feature",
    [_gradient, _saturation, lambda image: float(image.mean())],
    ids=["gradient", "saturation", "brightness"],
)
def test_trivial_features_do_not_separate_the_classes(
    generated: tuple, feature: Callable[[np.ndarray], float]
) -> None:
    by_label = _by_label(generated)
    scores = [feature(_pixels(data)) for label in (0, 1) for data in by_label[label]]
    labels = [label for label in (0, 1) for _ in by_label[label]]
    auc = roc_auc_score(labels, scores)
    assert abs(auc - 0.5) < 0.15, f"a trivial feature separates the classes: AUC {auc:.2f}"


def test_both_classes_share_jpeg_quantisation_tables(generated: tuple) -> None:
    tables = {
        label: {repr(Image.open(io.BytesIO(data)).quantization) for data in images}
        for label, images in _by_label(generated).items()
    }
    assert tables[0] == tables[1]
    assert len(tables[0]) == 1


def test_ai_images_carry_the_upsampling_fingerprint(generated: tuple) -> None:
    by_label = _by_label(generated)
    spectra = {
        label: mean_residual_spectrum([_pixels(d).astype(np.uint8) for d in by_label[label]])
        for label in (0, 1)
    }
    size = spectra[0].shape[0]
    centre = size // 2

    def peak_ratio(spectrum: np.ndarray) -> float:
        # Energy at the Nyquist frequency (the corners/edges after fftshift) relative to a nearby band.
        nyquist = np.mean([spectrum[0, centre], spectrum[centre, 0], spectrum[0, 0]])
        nearby = np.mean([spectrum[4, centre], spectrum[centre, 4], spectrum[4, 4]])
        return float(nyquist - nearby)

    assert peak_ratio(spectra[1]) > peak_ratio(spectra[0]) + 0.3


def test_contact_sheet_shows_pairs(generated: tuple) -> None:
    train_images, _, _, _, sidecar = generated
    loaders = {name: (lambda data=data: data) for name, data in train_images.items()}
    figure = draw_contact_sheet(loaders, sidecar, make_params())
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 4 * 3


def test_unknown_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="size 'huge' is not one of"):
        make_params(size="huge")
