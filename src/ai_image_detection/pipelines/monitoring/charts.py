"""The monitoring figures, as PNG bytes: live traffic drawn over the reference, as densities.

PNG bytes rather than matplotlib figures, so that the HTML report embeds exactly the files that
are written next to it and logged to MLflow.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ai_image_detection.pipelines.monitoring.drift import shares

REFERENCE_STYLE = {"color": "#7f7f7f", "alpha": 0.45, "label": "reference (validation)"}
LIVE_STYLE = {"color": "#d62728", "histtype": "step", "linewidth": 2, "label": "live"}
DPI = 100


def to_png(figure: Figure) -> bytes:
    """The figure as PNG bytes (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _values(frame: pd.DataFrame, column: str) -> np.ndarray:
    """The finite numbers of a column (none when the frame lacks it)."""
    if column not in frame.columns:
        return np.array([])
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def _overlay(axes: Axes, reference: np.ndarray, live: np.ndarray, bins: np.ndarray | int) -> None:
    """Reference and live densities on the same bins; a note when a sample is empty."""
    if reference.size:
        axes.hist(reference, bins=bins, density=True, **REFERENCE_STYLE)  # type: ignore[arg-type]
    if live.size:
        axes.hist(live, bins=bins, density=True, **LIVE_STYLE)  # type: ignore[arg-type]
    missing = [
        name for name, sample in (("reference", reference), ("live predictions", live)) if not sample.size
    ]
    if missing:
        axes.text(
            0.5, 0.5, "no " + " and no ".join(missing), ha="center", va="center", transform=axes.transAxes
        )
    if reference.size or live.size:
        axes.legend(loc="best", fontsize="small")


def _band(frame: pd.DataFrame) -> list[float]:
    """The inconclusive band's edges in a table's first row (none when it lacks them)."""
    columns = ["threshold_human", "threshold_ai"]
    if frame.empty or not set(columns) <= set(frame.columns):
        return []
    return sorted({float(value) for value in frame[columns].iloc[0]})


def probability_histograms(reference: pd.DataFrame, live: pd.DataFrame, model: str) -> bytes:
    """P(AI) of the live predictions over the reference's validation scores, with the band's edges.

    Args:
        reference: The reference table (``probability_ai``, and ``threshold_human``/``threshold_ai``).
        live: The monitored predictions (``probability_ai``).
        model: The model version's name, for the title.

    Returns:
        PNG bytes.
    """
    figure, axes = plt.subplots(figsize=(7, 4))
    ref, cur = _values(reference, "probability_ai"), _values(live, "probability_ai")
    _overlay(axes, ref, cur, np.linspace(0, 1, 21))
    for edge in _band(reference) or _band(live):
        axes.axvline(edge, color="black", linestyle=":", linewidth=1)
    axes.set(
        xlim=(0, 1),
        xlabel="calibrated P(AI) (dotted: the inconclusive band)",
        ylabel="density",
        title=f"P(AI) of {model}: {cur.size} live predictions, {ref.size} validation images",
    )
    return to_png(figure)


def input_histograms(
    reference: pd.DataFrame,
    live: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
) -> bytes:
    """One panel per input statistic: densities for the numbers, shares for the categories.

    Args:
        reference: The reference table.
        live: The monitored predictions.
        numeric: Numeric statistics (``width``, ``bytes``, ``mean_luma`` ...).
        categorical: Categorical ones (``format``).

    Returns:
        PNG bytes.
    """
    columns = [*numeric, *categorical]
    rows = (len(columns) + 2) // 3
    figure, grid = plt.subplots(rows, 3, figsize=(12, 3.2 * rows), squeeze=False)
    for axes, column in zip(grid.flat, columns, strict=False):
        if column in categorical:
            _category_bars(axes, reference, live, column)
        else:
            ref, cur = _values(reference, column), _values(live, column)
            both = np.concatenate([ref, cur])
            bins = np.histogram_bin_edges(both, bins=20) if both.size else 20
            _overlay(axes, ref, cur, bins)
        axes.set_title(column)
    for axes in list(grid.flat)[len(columns) :]:
        axes.axis("off")
    figure.tight_layout()
    return to_png(figure)


def _category_bars(axes: Axes, reference: pd.DataFrame, live: pd.DataFrame, column: str) -> None:
    """Side-by-side shares of each category in the reference and live."""
    ref = shares(reference[column]) if column in reference.columns else {}
    cur = shares(live[column]) if column in live.columns else {}
    categories = sorted(set(ref) | set(cur))
    positions = np.arange(len(categories))
    axes.bar(
        positions - 0.2,
        [ref.get(c, 0.0) for c in categories],
        width=0.4,
        color=REFERENCE_STYLE["color"],
        label=REFERENCE_STYLE["label"],
    )
    axes.bar(
        positions + 0.2,
        [cur.get(c, 0.0) for c in categories],
        width=0.4,
        color=LIVE_STYLE["color"],
        label=LIVE_STYLE["label"],
    )
    axes.set_xticks(positions, categories)
    axes.set_ylabel("share")
    if categories:
        axes.legend(fontsize="small")
