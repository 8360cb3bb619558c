"""PSI and KS on distributions whose answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ai_image_detection.pipelines.monitoring.drift import (
    categorical_psi,
    compare_categorical,
    compare_numeric,
    ks_test,
    psi,
    psi_band,
    quantile_edges,
    shares,
)

RNG = np.random.default_rng(0)
REFERENCE = RNG.normal(0, 1, 5000)


def test_identical_samples_have_a_psi_of_zero_and_a_ks_p_value_of_one() -> None:
    assert psi(REFERENCE, REFERENCE) == pytest.approx(0.0, abs=1e-12)
    assert ks_test(REFERENCE, REFERENCE) == pytest.approx((0.0, 1.0))


def test_two_samples_of_one_distribution_are_stable() -> None:
    live = np.random.default_rng(1).normal(0, 1, 5000)
    value = psi(REFERENCE, live)
    assert value is not None
    assert value < 0.02
    assert psi_band(value) == "stable"
    ks = ks_test(REFERENCE, live)
    assert ks is not None
    assert ks[1] > 0.01


def test_a_shift_of_one_standard_deviation_is_a_major_shift_with_a_tiny_ks_p_value() -> None:
    live = np.random.default_rng(1).normal(1, 1, 2000)
    value = psi(REFERENCE, live)
    assert value is not None
    assert value > 0.25
    assert psi_band(value) == "major"
    ks = ks_test(REFERENCE, live)
    assert ks is not None
    assert ks[0] > 0.3
    assert ks[1] < 1e-10


def test_psi_matches_the_formula_on_two_bins() -> None:
    reference = [0.0] * 50 + [1.0] * 50  # one median edge: half the reference in each bin
    live = [0.0] * 25 + [1.0] * 75
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.75 - 0.5) * math.log(0.75 / 0.5)
    assert psi(reference, live, bins=2) == pytest.approx(expected)


def test_bins_at_the_reference_quantiles_merge_ties() -> None:
    assert quantile_edges(np.arange(100.0), 4).tolist() == pytest.approx([24.75, 49.5, 74.25])
    assert quantile_edges(np.full(100, 256.0), 10).tolist() == [256.0], "one edge for a constant"


def test_a_constant_reference_detects_another_value() -> None:
    same = np.full(200, 256.0)
    assert psi(same, np.full(50, 256.0)) == pytest.approx(0.0)
    larger = psi(same, np.full(50, 1024.0))
    assert larger is not None
    assert larger > 5


def test_categorical_psi_is_zero_for_the_same_shares_and_large_for_a_new_format() -> None:
    reference = ["JPEG"] * 70 + ["PNG"] * 30
    assert categorical_psi(reference, ["JPEG"] * 7 + ["PNG"] * 3) == pytest.approx(0.0)
    webp = categorical_psi(reference, ["WEBP"] * 5 + ["JPEG"] * 5)
    assert webp is not None
    assert webp > 1
    assert shares(["PNG", None, "PNG", "JPEG"]) == {"PNG": 0.5, "unknown": 0.25, "JPEG": 0.25}


@pytest.mark.parametrize(
    ("value", "band"),
    [
        (0.0, "stable"),
        (0.099, "stable"),
        (0.1, "moderate"),
        (0.249, "moderate"),
        (0.25, "major"),
        (None, None),
    ],
)
def test_psi_bands(value: float | None, band: str | None) -> None:
    assert psi_band(value) == band


def test_an_empty_sample_gives_no_figure_rather_than_an_error() -> None:
    assert psi([], REFERENCE) is None
    assert psi(REFERENCE, [float("nan")]) is None, "non-finite values are dropped"
    assert ks_test(REFERENCE, []) is None
    assert categorical_psi(["JPEG"], []) is None
    figures = compare_numeric(REFERENCE, [], 10, 0.1, 0.25)
    assert figures["psi"] is figures["band"] is figures["ks_pvalue"] is figures["live_mean"] is None
    assert figures["reference_n"] == 5000
    assert compare_categorical(["JPEG"], [], 0.1, 0.25)["live_shares"] == {}
