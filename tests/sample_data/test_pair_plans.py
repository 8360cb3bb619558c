"""The pair planner: exact family shares, exact hard-negative shares, crops inside the photograph."""

from __future__ import annotations

from pathlib import Path

import pytest

from ai_image_detection.sample_data.pair_plans import (
    CONTEXT_MARGIN,
    GeneratorSettings,
    family_counts,
    plan_pairs,
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
        "lossless_fraction": 0.4,
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


def test_a_lossless_share_of_each_family_is_png_and_changes_no_other_draw() -> None:
    sizes = [(400, 300), (300, 500), (640, 480)]
    plans = plan_pairs(sizes, 40, 0.34, settings(lossless_fraction=0.25), seed=1)
    for family in ("simulator", "realcugan", "waifu2x"):
        members = [plan for plan in plans if plan.ai.family == family]
        assert sum(plan.lossless for plan in members) == round(0.25 * len(members))
    for plan in plans:
        extension = ".png" if plan.lossless else ".jpg"
        assert plan.real_name.endswith(extension) and plan.ai_name.endswith(extension)
    all_jpeg = plan_pairs(sizes, 40, 0.34, settings(lossless_fraction=0.0), seed=1)
    assert not any(plan.lossless for plan in all_jpeg)
    assert [(p.box, p.human, p.ai, p.real_first) for p in plans] == [
        (p.box, p.human, p.ai, p.real_first) for p in all_jpeg
    ]


def test_crop_boxes_keep_the_context_margin_inside_the_photo() -> None:
    sizes = [(80, 72), (300, 200)]
    for plan in plan_pairs(sizes, 50, 0.0, settings(), seed=2):
        width, height = sizes[plan.photo_index]
        left, top, right, bottom = plan.box
        margin = CONTEXT_MARGIN * (right - left) / 64
        assert left >= margin - 1e-9 and top >= margin - 1e-9
        assert right + margin <= width + 1e-9 and bottom + margin <= height + 1e-9
