"""The evaluation's figures: one candidate on validation, the comparison, the held-out families."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve


def validation_charts(
    y: np.ndarray, p: np.ndarray, threshold: float, metrics: dict[str, Any], calibration_bins: int
) -> Figure:
    """Confusion matrix, ROC and PR curves, and reliability diagram.

    Args:
        y: The labels (1 = AI).
        p: The calibrated P(AI) of the same images.
        threshold: The cut of the confusion matrix.
        metrics: ``roc_auc``, ``average_precision`` and ``ece`` at that cut (for the titles).
        calibration_bins: Bins of the reliability diagram.

    Returns:
        A 2×2 figure.
    """
    figure, ((cm_ax, roc_ax), (pr_ax, rel_ax)) = plt.subplots(2, 2, figsize=(9, 8))
    matrix = confusion_matrix(y, (p >= threshold).astype(int), labels=[0, 1])
    cm_ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        dark = count > matrix.max() / 2
        cm_ax.text(col, row, str(count), ha="center", va="center", color="white" if dark else "black")
    cm_ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["human", "AI"],
        yticklabels=["human", "AI"],
        xlabel="predicted",
        ylabel="true",
        title=f"confusion at threshold {threshold:.2f}",
    )
    fpr, tpr, _ = roc_curve(y, p)
    roc_ax.plot(fpr, tpr)
    roc_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    roc_ax.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        title=f"ROC, AUC {metrics['roc_auc']:.3f}",
    )
    precision, recall, _ = precision_recall_curve(y, p)
    pr_ax.plot(recall, precision)
    pr_ax.set(
        xlabel="recall",
        ylabel="precision",
        title=f"PR, AP {metrics['average_precision']:.3f}",
    )
    edges = np.linspace(0, 1, calibration_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, calibration_bins - 1)
    filled = [b for b in range(calibration_bins) if np.any(which == b)]
    rel_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    rel_ax.plot([p[which == b].mean() for b in filled], [y[which == b].mean() for b in filled], marker="o")
    rel_ax.set(
        xlabel="mean predicted P(AI)",
        ylabel="fraction AI",
        title=f"reliability, ECE {metrics['ece']:.3f}",
    )
    figure.tight_layout()
    return figure


def comparison_charts(table: pd.DataFrame) -> tuple[Figure, Figure]:
    """Validation accuracy and F1 per candidate (bars), and F1 against inference time and model size.

    Args:
        table: One row per candidate: ``candidate``, ``accuracy``, ``f1``, ``ms_per_image``, ``size_mb``.

    Returns:
        The bar chart and the scatter plots.
    """
    bars, bar_ax = plt.subplots(figsize=(1.6 * len(table) + 3, 4))
    table.set_index("candidate")[["accuracy", "f1"]].plot.bar(ax=bar_ax, ylim=(0, 1), rot=0)
    bar_ax.set_title("validation accuracy and F1 per candidate")
    bars.tight_layout()
    scatter, (time_ax, size_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for axis, column, label in (
        (time_ax, "ms_per_image", "ms per image (CPU, batched)"),
        (size_ax, "size_mb", "size (MB)"),
    ):
        axis.scatter(table[column], table["f1"])
        for row in table.itertuples():
            axis.annotate(row.candidate, (getattr(row, column), row.f1))
        axis.set(xlabel=label, ylabel="validation F1", ylim=(0, 1.05))
    scatter.suptitle("F1 against inference time and model size")
    scatter.tight_layout()
    return bars, scatter


def unseen_family_chart(families: pd.DataFrame) -> Figure:
    """AUROC and human false-positive rate per held-out family (bars per candidate), chance marked."""
    figure, (auc_ax, fpr_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    if families.empty:
        figure.suptitle("No generator families in the data: no leave-one-family-out folds")
        return figure
    for axis, column, title in (
        (auc_ax, "roc_auc", "AUROC on the held-out family (0.5 = coin)"),
        (fpr_ax, "human_fpr", "human false-positive rate at threshold_ai"),
    ):
        families.pivot(index="family", columns="candidate", values=column).plot.bar(
            ax=axis, rot=30, ylim=(0, 1)
        )
        axis.set_title(title, fontsize=10)
    auc_ax.axhline(0.5, ls=":", c="grey")
    figure.suptitle("Leave-one-family-out: each family scored by a model trained without it")
    figure.tight_layout()
    return figure
