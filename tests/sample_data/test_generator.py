"""The pair planner and the up-scaler plumbing: exact family shares, aligned low-resolution inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ai_image_detection.sample_data.decoders import mean_gradient_magnitude
from ai_image_detection.sample_data.generator import (
    CONTEXT_MARGIN,
    GeneratorSettings,
    centre_crop,
    family_counts,
    low_resolution_input,
    plan_pairs,
    sharpen_to,
)


def settings(**overrides: object) -> GeneratorSettings:
    values: dict[str, object] = {
        "crop_size": 64,
        "min_scale": 0.35,
        "family_weights": {"simulator": 0.5, "realcugan": 0.3, "waifu2x": 0.2},
        "models": {"realcugan": ("up3x-conservative",), "waifu2x": ("upconv_7_photo-x2",)},
        "decoder_kinds": ("nearest_conv",),
        "factors": (2,),
        "factor_weights": (1.0,),
        "hidden_channels": 4,
        "residual_strength": (1.0, 2.0),
        "downscale_filters": ("area", "bicubic", "lanczos"),
        "sharpness_match": (0.85, 1.0),
        "hard_negative_fraction": 0.35,
        "hard_negatives": ("bicubic_x2", "jpeg_resave"),
        "upscalerjs_cache_dir": Path("unused"),
        "image_format": "jpg",
        "jpeg_quality": 95,
    }
    values.update(overrides)
    return GeneratorSettings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("n_pairs", [3, 7, 10, 101])
def test_family_counts_are_exact_and_leave_no_family_out(n_pairs: int) -> None:
    counts = family_counts(n_pairs, {"a": 0.9, "b": 0.05, "c": 0.05})
    assert sum(counts.values()) == n_pairs
    assert min(counts.values()) >= 1
    assert counts["a"] >= counts["b"]


def test_plans_deal_families_and_hard_negatives_exactly() -> None:
    plans = plan_pairs([(400, 300), (300, 500), (640, 480)], 40, 0.34, settings(), seed=1)
    by_family: dict[str, list] = {}
    for plan in plans:
        by_family.setdefault(plan.ai.family, []).append(plan)
    assert {family: len(members) for family, members in by_family.items()} == {
        "simulator": 20,
        "realcugan": 12,
        "waifu2x": 8,
    }
    for members in by_family.values():
        hard = [plan for plan in members if plan.human.generator.startswith("classical/")]
        assert len(hard) == round(0.35 * len(members))
        assert {plan.human.generator for plan in members} - {"camera/original"} <= {
            "classical/bicubic_x2",
            "classical/jpeg_resave",
        }
    assert {plan.ai.generator for plan in by_family["realcugan"]} == {"realcugan/up3x-conservative"}
    assert {plan.ai.factor for plan in by_family["realcugan"]} == {3}
    assert plans == plan_pairs([(400, 300), (300, 500), (640, 480)], 40, 0.34, settings(), seed=1)


def test_crop_boxes_keep_the_context_margin_inside_the_photo() -> None:
    sizes = [(80, 72), (300, 200)]
    for plan in plan_pairs(sizes, 50, 0.0, settings(), seed=2):
        width, height = sizes[plan.photo_index]
        left, top, right, bottom = plan.box
        margin = CONTEXT_MARGIN * (right - left) / 64
        assert left >= margin - 1e-9 and top >= margin - 1e-9
        assert right + margin <= width + 1e-9 and bottom + margin <= height + 1e-9


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    rng = np.random.default_rng(3)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(300, 300, 3)), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth) * 200 + 20
    detail = rng.normal(0, 20, (75, 75, 3)).repeat(4, axis=0).repeat(4, axis=1)
    return Image.fromarray((smooth + detail).clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upscaled_low_resolution_input_is_aligned_with_the_crop(photo: Image.Image, factor: int) -> None:
    box = (40.3, 51.7, 40.3 + 180.0, 51.7 + 180.0)
    crop = np.asarray(photo.resize((128, 128), Image.Resampling.LANCZOS, box=box)).astype(float)
    low = low_resolution_input(photo, box, 128, factor, "lanczos")
    assert low.shape == (-(-128 // factor),) * 2 + (3,)
    upscaled = np.asarray(Image.fromarray(low).resize((low.shape[0] * factor,) * 2, Image.Resampling.BICUBIC))
    twin = centre_crop(upscaled, 128).astype(float)
    assert twin.shape == crop.shape

    def correlation(shift: tuple[int, int]) -> float:
        shifted = np.roll(twin, shift, axis=(0, 1))[4:-4, 4:-4]
        return float(np.corrcoef(shifted.ravel(), crop[4:-4, 4:-4].ravel())[0, 1])

    scores = {(dy, dx): correlation((dy, dx)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
    assert max(scores, key=scores.__getitem__) == (0, 0)
    assert scores[(0, 0)] > 0.85


def test_centre_crop_refuses_a_small_image() -> None:
    with pytest.raises(ValueError, match="smaller than the 64 px crop"):
        centre_crop(np.zeros((60, 66, 3), dtype=np.uint8), 64)


def test_sharpen_to_reaches_the_share_of_the_twins_sharpness(photo: Image.Image) -> None:
    twin = np.asarray(photo.resize((128, 128)))
    soft = np.asarray(Image.fromarray(twin).resize((32, 32)).resize((128, 128), Image.Resampling.BICUBIC))
    target = 0.9 * mean_gradient_magnitude(twin.astype(np.float32))
    sharpened = sharpen_to(soft, twin, 0.9)
    assert mean_gradient_magnitude(sharpened.astype(np.float32)) == pytest.approx(target, rel=0.05)
    np.testing.assert_array_equal(sharpen_to(twin, soft, 1.0), twin)
