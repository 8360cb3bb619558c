"""Nodes of the ``evaluation`` pipeline: one namespace per candidate, then a comparison."""

from __future__ import annotations

import logging
import time
from typing import Any

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

from ai_image_detection.input_pipeline import Perturbation, make_prediction_dataset
from ai_image_detection.metrics import ThresholdObjective, binary_metrics, choose_threshold

logger = logging.getLogger(__name__)


class EvaluationParams(BaseModel):
    """Parameters of the ``evaluation`` pipeline (``conf/base/parameters_evaluation.yml``)."""

    model_config = ConfigDict(extra="forbid")

    threshold_objective: ThresholdObjective = "f1"
    calibration_bins: int = Field(default=15, ge=2)
    batch_size: int = Field(default=64, ge=1)
    robustness: dict[str, Perturbation]


def predict(model: keras.Model, image_manifest: pd.DataFrame) -> pd.DataFrame:
    """Predict every validation and test image (centre crop at the model's resolution).

    Args:
        model: A trained detector (raw 0–255 RGB in, probability of AI out).
        image_manifest: The manifest.

    Returns:
        ``path, source_path, label, split, probability_ai`` for the validation and test rows.
    """
    rows = image_manifest[image_manifest["split"].isin(["validation", "test"])].reset_index(drop=True)
    size = int(model.input_shape[1])
    batches = make_prediction_dataset(rows["path"].tolist(), size, 64)
    probabilities = model.predict(batches, verbose=0)[:, 0]
    return rows[["path", "source_path", "label", "split"]].assign(
        probability_ai=probabilities.astype("float64")
    )


def evaluate_candidate(
    model: keras.Model, predictions: pd.DataFrame, image_manifest: pd.DataFrame, params: EvaluationParams
) -> dict[str, Any]:
    """Metrics at the validation-chosen threshold and at 0.5, robustness, speed and size.

    Args:
        model: The trained detector.
        predictions: Output of :func:`predict`.
        image_manifest: The manifest (validation images are re-read for the robustness table).
        params: Threshold objective, batch size and the perturbations.

    Returns:
        ``threshold``, ``validation`` and ``test`` metrics (``at_threshold`` and ``at_0.5``;
        test only when it has labels), ``robustness`` (validation metrics per perturbation at
        the chosen threshold), ``seconds_per_image`` (warm batched CPU inference) and
        ``parameters``/``size_mb``.
    """
    validation = predictions[predictions["split"] == "validation"]
    labels = validation["label"].astype(int).to_numpy()
    threshold = choose_threshold(labels, validation["probability_ai"], params.threshold_objective)
    report: dict[str, Any] = {"threshold": threshold, "threshold_objective": params.threshold_objective}
    for split, part in predictions.groupby("split"):
        labelled = part[part["label"].notna()]
        if len(labelled):
            y, p = labelled["label"].astype(int), labelled["probability_ai"]
            report[str(split)] = {
                "at_threshold": binary_metrics(y, p, threshold),
                "at_0.5": binary_metrics(y, p, 0.5),
            }
    paths = image_manifest.loc[image_manifest["split"] == "validation", "path"].tolist()
    size = int(model.input_shape[1])
    report["robustness"] = {"none": report["validation"]["at_threshold"]}
    for name, perturbation in params.robustness.items():
        perturbed = model.predict(
            make_prediction_dataset(paths, size, params.batch_size, perturbation), verbose=0
        )
        report["robustness"][name] = binary_metrics(labels, perturbed[:, 0], threshold)
    report["seconds_per_image"] = inference_seconds_per_image(model, paths, params.batch_size)
    report["parameters"] = int(model.count_params())
    report["size_mb"] = round(report["parameters"] * 4 / 2**20, 2)
    logger.info(
        "F1 %.3f at threshold %.3f (%.3f at 0.5)",
        report["validation"]["at_threshold"]["f1"],
        threshold,
        report["validation"]["at_0.5"]["f1"],
    )
    return report


def inference_seconds_per_image(
    model: keras.Model, paths: list[str], batch_size: int, repeats: int = 5
) -> float:
    """Model time per image on this CPU: one decoded batch, warmed up, run ``repeats`` times.

    Decoding and tracing are left out, so the figure does not depend on how many images the
    split happens to have.
    """
    images = next(iter(make_prediction_dataset(paths, int(model.input_shape[1]), batch_size)))
    model.predict_on_batch(images)
    started = time.perf_counter()
    for _ in range(repeats):
        model.predict_on_batch(images)
    return (time.perf_counter() - started) / (repeats * int(images.shape[0]))


def plot_candidate(predictions: pd.DataFrame, report: dict[str, Any], params: EvaluationParams) -> Figure:
    """Confusion matrix, ROC and PR curves, and reliability diagram on validation.

    Args:
        predictions: Output of :func:`predict`.
        report: Output of :func:`evaluate_candidate` (for the threshold).
        params: For the number of calibration bins.

    Returns:
        A 2×2 figure.
    """
    validation = predictions[predictions["split"] == "validation"]
    y, p = validation["label"].astype(int).to_numpy(), validation["probability_ai"].to_numpy()
    threshold = report["threshold"]
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
        title=f"ROC, AUC {report['validation']['at_threshold']['roc_auc']:.3f}",
    )
    precision, recall, _ = precision_recall_curve(y, p)
    pr_ax.plot(recall, precision)
    pr_ax.set(
        xlabel="recall",
        ylabel="precision",
        title=f"PR, AP {report['validation']['at_threshold']['average_precision']:.3f}",
    )
    edges = np.linspace(0, 1, params.calibration_bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1], right=True), 0, params.calibration_bins - 1)
    filled = [b for b in range(params.calibration_bins) if np.any(which == b)]
    rel_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    rel_ax.plot([p[which == b].mean() for b in filled], [y[which == b].mean() for b in filled], marker="o")
    rel_ax.set(
        xlabel="mean predicted P(AI)",
        ylabel="fraction AI",
        title=f"reliability, ECE {report['validation']['at_threshold']['ece']:.3f}",
    )
    figure.tight_layout()
    return figure


def compare_candidates(*reports: dict[str, Any], names: list[str]) -> tuple[Figure, Figure, pd.DataFrame]:
    """The seed project's two comparison charts and a table of every candidate.

    Args:
        reports: One :func:`evaluate_candidate` report per candidate.
        names: The candidates' names, in the order of ``reports``.

    Returns:
        Accuracy/F1 per candidate (bars), F1 against inference time and model size, and the
        comparison table (one row per candidate).
    """
    table = pd.DataFrame(
        [
            {
                "candidate": name,
                "accuracy": r["validation"]["at_threshold"]["accuracy"],
                "f1": r["validation"]["at_threshold"]["f1"],
                "roc_auc": r["validation"]["at_threshold"]["roc_auc"],
                "threshold": r["threshold"],
                "ms_per_image": 1000 * r["seconds_per_image"],
                "size_mb": r["size_mb"],
            }
            for name, r in zip(names, reports, strict=True)
        ]
    )
    bars, bar_ax = plt.subplots(figsize=(1.6 * len(names) + 3, 4))
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
    return bars, scatter, table
