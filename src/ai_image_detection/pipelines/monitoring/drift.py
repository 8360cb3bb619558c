"""Distribution shift between a reference sample and live traffic: PSI and the two-sample KS test.

The population stability index (PSI) compares the shares of two samples in the same bins:
``sum((live - reference) * ln(live / reference))``. Bins are the reference's quantiles, so each
holds about the same share of the reference; a numeric column with few distinct values (image
sizes) gets fewer bins, one per distinct reference value at most. Its usual reading: below 0.1
stable, 0.1 to 0.25 a moderate shift, 0.25 and above a major one. The KS test answers whether
the two samples could come from one distribution; with thousands of predictions even a shift
too small to matter gets a tiny p-value, so the PSI is what the drift flag reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

SHARE_FLOOR = 1e-4
"""The smallest share a bin counts with: an empty bin would make the logarithm infinite."""

Band = Literal["stable", "moderate", "major"]


def _clean(values: Sequence[float] | np.ndarray | pd.Series) -> np.ndarray:
    """The finite values, as float64."""
    array = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=np.float64)
    return array[np.isfinite(array)]


def _psi_of_shares(reference: np.ndarray, live: np.ndarray) -> float:
    """PSI of two share vectors over the same bins (each floored at :data:`SHARE_FLOOR`)."""
    reference = np.maximum(reference, SHARE_FLOOR)
    live = np.maximum(live, SHARE_FLOOR)
    return float(np.sum((live - reference) * np.log(live / reference)))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles, ties merged (so at most ``bins`` bins).

    Args:
        reference: The reference values (finite).
        bins: Most bins.

    Returns:
        Increasing inner edges; a value ``x`` falls in bin ``i`` when ``edges[i-1] < x <= edges[i]``
        (the first bin is open below, the last open above).
    """
    return np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))


def psi(
    reference: Sequence[float] | np.ndarray | pd.Series,
    live: Sequence[float] | np.ndarray | pd.Series,
    bins: int = 10,
) -> float | None:
    """PSI of a numeric column, in bins at the reference's quantiles.

    Args:
        reference: The reference values (non-finite ones are dropped).
        live: The live values.
        bins: Most bins (fewer when the reference has ties).

    Returns:
        The PSI (0 for the same distribution, larger the more the shares differ), or None when
        either sample is empty.
    """
    ref, cur = _clean(reference), _clean(live)
    if not ref.size or not cur.size:
        return None
    edges = quantile_edges(ref, bins)
    count = len(edges) + 1
    ref_shares = np.bincount(np.searchsorted(edges, ref, side="left"), minlength=count) / ref.size
    cur_shares = np.bincount(np.searchsorted(edges, cur, side="left"), minlength=count) / cur.size
    return _psi_of_shares(ref_shares, cur_shares)


def shares(values: Sequence[Any] | pd.Series) -> dict[str, float]:
    """Share of each distinct value (as text), largest first; missing values count as ``"unknown"``."""
    series = pd.Series(values, dtype=object).fillna("unknown").astype(str)
    if series.empty:
        return {}
    return {str(key): float(value) for key, value in series.value_counts(normalize=True).items()}


def categorical_psi(reference: Sequence[Any] | pd.Series, live: Sequence[Any] | pd.Series) -> float | None:
    """PSI of a categorical column (e.g. the file format), one bin per category of either sample.

    Args:
        reference: The reference values.
        live: The live values.

    Returns:
        The PSI, or None when either sample is empty.
    """
    ref, cur = shares(reference), shares(live)
    if not ref or not cur:
        return None
    categories = sorted(set(ref) | set(cur))
    return _psi_of_shares(
        np.array([ref.get(c, 0.0) for c in categories]), np.array([cur.get(c, 0.0) for c in categories])
    )


def ks_test(
    reference: Sequence[float] | np.ndarray | pd.Series, live: Sequence[float] | np.ndarray | pd.Series
) -> tuple[float, float] | None:
    """The two-sample Kolmogorov–Smirnov statistic and p-value (scipy), None when a sample is empty."""
    ref, cur = _clean(reference), _clean(live)
    if not ref.size or not cur.size:
        return None
    result = stats.ks_2samp(ref, cur)
    return float(result.statistic), float(result.pvalue)


def psi_band(value: float | None, moderate: float = 0.1, major: float = 0.25) -> Band | None:
    """``stable`` below ``moderate``, ``moderate`` below ``major``, else ``major`` (None for None)."""
    if value is None or math.isnan(value):
        return None
    if value >= major:
        return "major"
    return "moderate" if value >= moderate else "stable"


def compare_numeric(
    reference: Sequence[float] | np.ndarray | pd.Series,
    live: Sequence[float] | np.ndarray | pd.Series,
    bins: int,
    moderate: float,
    major: float,
) -> dict[str, Any]:
    """Every figure of one numeric column: PSI and its band, KS, sizes, means and medians.

    Args:
        reference: The reference values.
        live: The live values.
        bins: Most PSI bins.
        moderate: PSI from which a shift is moderate.
        major: PSI from which a shift is major.

    Returns:
        ``psi``, ``band``, ``ks_statistic``, ``ks_pvalue``, ``reference_n``, ``live_n``,
        ``reference_mean``, ``live_mean``, ``reference_median``, ``live_median`` (None where a
        sample is empty).
    """
    ref, cur = _clean(reference), _clean(live)
    value = psi(ref, cur, bins)
    ks = ks_test(ref, cur)
    return {
        "psi": value,
        "band": psi_band(value, moderate, major),
        "ks_statistic": ks[0] if ks else None,
        "ks_pvalue": ks[1] if ks else None,
        "reference_n": int(ref.size),
        "live_n": int(cur.size),
        "reference_mean": float(ref.mean()) if ref.size else None,
        "live_mean": float(cur.mean()) if cur.size else None,
        "reference_median": float(np.median(ref)) if ref.size else None,
        "live_median": float(np.median(cur)) if cur.size else None,
    }


def compare_categorical(
    reference: Sequence[Any] | pd.Series, live: Sequence[Any] | pd.Series, moderate: float, major: float
) -> dict[str, Any]:
    """Every figure of one categorical column: PSI and its band, sizes, and the shares of both samples.

    Args:
        reference: The reference values.
        live: The live values.
        moderate: PSI from which a shift is moderate.
        major: PSI from which a shift is major.

    Returns:
        ``psi``, ``band``, ``reference_n``, ``live_n``, ``reference_shares``, ``live_shares``.
    """
    value = categorical_psi(reference, live)
    return {
        "psi": value,
        "band": psi_band(value, moderate, major),
        "reference_n": len(reference),
        "live_n": len(live),
        "reference_shares": shares(reference),
        "live_shares": shares(live),
    }
