"""Nodes of the ``evaluation`` pipeline: one namespace per candidate, then a comparison."""

from __future__ import annotations

import functools
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
from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_auc_score, roc_curve

from ai_image_detection.calibration import PlattScaling, fit_platt
from ai_image_detection.contract import generator_family
from ai_image_detection.families import family_targets
from ai_image_detection.input_pipeline import Perturbation, make_prediction_dataset, perturbed_pixels
from ai_image_detection.metrics import (
    ThresholdObjective,
    answer_shares,
    binary_metrics,
    choose_band,
    choose_threshold,
    expected_calibration_error,
)
from ai_image_detection.models.heads import model_families
from ai_image_detection.scoring import keras_outputs, keras_scorer, score_files

logger = logging.getLogger(__name__)


class BandParams(BaseModel):
    """The inconclusive band: targets on validation for the two answers the model commits to."""

    model_config = ConfigDict(extra="forbid")

    max_fpr: float = Field(gt=0, lt=1, description="largest share of human images answered ai")
    min_human_precision: float = Field(gt=0, lt=1, description="smallest share of humans among human answers")
    max_inconclusive: float = Field(
        gt=0, le=1, description="a band swallowing more validation images flags the model, not the band"
    )


class EvaluationParams(BaseModel):
    """Parameters of the ``evaluation`` pipeline (``conf/base/parameters_evaluation.yml``)."""

    model_config = ConfigDict(extra="forbid")

    threshold_objective: ThresholdObjective = "f1"
    calibration_bins: int = Field(default=15, ge=2)
    batch_size: int = Field(default=64, ge=1)
    max_tiles: int = Field(default=9, ge=1, description="tiles averaged per image, as the service does")
    band: BandParams
    robustness: dict[str, Perturbation]


SCORED_SPLITS = ("validation", "test", "unseen")
FAMILY_COLUMNS = ["split", "family", "label", "images", "roc_auc", "ai_rate", "inconclusive_rate"]
UNSEEN_FOLD_COLUMNS = [
    "family",
    "ai_images",
    "human_images",
    "roc_auc",
    "recall",
    "human_fpr",
    "inconclusive_rate",
    "threshold_human",
    "threshold_ai",
]
PREDICTION_COLUMNS = ["path", "source_path", "label", "split", "generator", "pair"]


def score_images(model: keras.Model, image_manifest: pd.DataFrame, params: EvaluationParams) -> pd.DataFrame:
    """Score every validation, test and unseen-family image as the service does (tiles, raw model).

    Args:
        model: A trained detector (raw 0–255 RGB in, probability of AI out, attribution when it
            has that head).
        image_manifest: The manifest.
        params: Tiles per image and batch size.

    Returns:
        ``path, source_path, label, split, generator, pair``, ``tile_scores`` (the raw P(AI) of
        each tile) and ``family_probabilities`` (the mean of the tiles' attribution rows, empty
        without attribution) for the rows of those splits.
    """
    rows = image_manifest[image_manifest["split"].isin(SCORED_SPLITS)].reset_index(drop=True)
    tiles = score_files(
        keras_outputs(model), rows["path"].tolist(), _input_size(model), params.max_tiles, params.batch_size
    )
    return rows[PREDICTION_COLUMNS].assign(
        tile_scores=[t[:, 0].tolist() for t in tiles],
        family_probabilities=[t[:, 1:].mean(axis=0).tolist() for t in tiles],
    )


def calibrate(raw_scores: pd.DataFrame, params: EvaluationParams) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Fit Platt scaling on the validation images; every image's calibrated score.

    Args:
        raw_scores: Output of :func:`score_images`.
        params: Number of calibration bins for the ECE.

    Returns:
        The predictions (``raw_probability_ai`` and the calibrated ``probability_ai``, each the
        mean over the image's tiles) and the calibration (slope, intercept, ECE before and after
        on validation).
    """
    tiles = [np.asarray(t, dtype=np.float64) for t in raw_scores["tile_scores"]]
    validation = (raw_scores["split"] == "validation").to_numpy()
    labels = raw_scores.loc[validation, "label"].astype(int).to_numpy()
    scaling = fit_platt([t for t, keep in zip(tiles, validation, strict=True) if keep], labels)
    predictions = raw_scores[[*PREDICTION_COLUMNS, "family_probabilities"]].assign(
        raw_probability_ai=[float(np.mean(t)) for t in tiles],
        probability_ai=scaling.image_scores(tiles),
    )
    calibration = {
        "method": "platt",
        "slope": scaling.slope,
        "intercept": scaling.intercept,
        "fitted_on": f"{int(validation.sum())} validation images",
        "ece_before": expected_calibration_error(
            labels, predictions.loc[validation, "raw_probability_ai"], params.calibration_bins
        ),
        "ece_after": expected_calibration_error(
            labels, predictions.loc[validation, "probability_ai"], params.calibration_bins
        ),
    }
    logger.info(
        "calibration: ECE %.3f -> %.3f on validation", calibration["ece_before"], calibration["ece_after"]
    )
    return predictions, calibration


def evaluate_candidate(
    model: keras.Model,
    predictions: pd.DataFrame,
    calibration: dict[str, Any],
    image_manifest: pd.DataFrame,
    params: EvaluationParams,
) -> dict[str, Any]:
    """Thresholds and band, metrics per split and per generator family, robustness, speed and size.

    Args:
        model: The trained detector.
        predictions: Output of :func:`calibrate`.
        calibration: Output of :func:`calibrate`.
        image_manifest: The manifest (validation images are re-read for the robustness table).
        params: Threshold objective, band targets, tiling and the perturbations.

    Returns:
        ``threshold`` (the single best cut), ``threshold_human``/``threshold_ai`` (the band),
        ``calibration``, per split (``validation``, ``test`` when labelled, ``unseen``) the
        metrics ``at_threshold``, ``at_0.5`` and ``answers`` (shares of human / inconclusive /
        ai), ``families`` (one row per split and generator family), ``attribution`` (accuracy of
        the closest family on seen families, :func:`attribution_report`), ``robustness`` (validation
        metrics per perturbation at the threshold), ``seconds_per_image``, ``parameters`` and
        ``size_mb``.
    """
    validation = predictions[predictions["split"] == "validation"]
    labels = validation["label"].astype(int).to_numpy()
    threshold = choose_threshold(labels, validation["probability_ai"], params.threshold_objective)
    band = choose_band(
        labels, validation["probability_ai"], threshold, params.band.max_fpr, params.band.min_human_precision
    )
    report: dict[str, Any] = {
        "threshold": threshold,
        "threshold_objective": params.threshold_objective,
        "threshold_human": band[0],
        "threshold_ai": band[1],
        "max_tiles": params.max_tiles,
        "calibration": calibration,
    }
    for split, part in predictions.groupby("split"):
        labelled = part[part["label"].notna()]
        if len(labelled):
            y, p = labelled["label"].astype(int), labelled["probability_ai"]
            report[str(split)] = {
                "at_threshold": binary_metrics(y, p, threshold),
                "at_0.5": binary_metrics(y, p, 0.5),
                "answers": answer_shares(p, *band),
            }
    report["families"] = family_table(predictions, band).to_dict("records")
    report["attribution"] = attribution_report(predictions, model_families(model))
    report["robustness"] = {"none": report["validation"]["at_threshold"]}
    paths = validation["path"].tolist()
    scaling = PlattScaling(calibration["slope"], calibration["intercept"])
    for name, perturbation in params.robustness.items():
        tiles = score_files(
            keras_scorer(model),
            paths,
            _input_size(model),
            params.max_tiles,
            params.batch_size,
            transform=functools.partial(perturbed_pixels, perturbation=perturbation),
            description=f"robustness: {name}",
        )
        report["robustness"][name] = binary_metrics(labels, scaling.image_scores(tiles), threshold)
    report["seconds_per_image"] = inference_seconds_per_image(model, paths, params.batch_size)
    report["parameters"] = int(model.count_params())
    report["size_mb"] = round(report["parameters"] * 4 / 2**20, 2)
    inconclusive = report["validation"]["answers"]["inconclusive"]
    if inconclusive > params.band.max_inconclusive:
        logger.warning(
            "the band [%.3f, %.3f) leaves %.0f%% of validation images inconclusive (> %.0f%%): the model "
            "needs work, not a wider band",
            *band,
            100 * inconclusive,
            100 * params.band.max_inconclusive,
        )
    logger.info(
        "F1 %.3f at threshold %.3f; band [%.3f, %.3f) leaves %.1f%% of validation inconclusive",
        report["validation"]["at_threshold"]["f1"],
        threshold,
        *band,
        100 * inconclusive,
    )
    return report


def family_table(predictions: pd.DataFrame, band: tuple[float, float]) -> pd.DataFrame:
    """One row per split and generator family: how the calibrated answers fare on it.

    For an AI family: AUROC against the human images of the same split, recall at
    ``threshold_ai`` and the share left inconclusive. For a human family (camera photos,
    classical processing): the false-positive rate at ``threshold_ai`` and the inconclusive share.

    Args:
        predictions: Calibrated predictions with ``generator``.
        band: ``(threshold_human, threshold_ai)``.

    Returns:
        ``split, family, label, images, roc_auc, ai_rate, inconclusive_rate``; ``ai_rate`` is
        recall for an AI family and the false-positive rate for a human one.
    """
    labelled = predictions[predictions["label"].notna()].assign(
        family=lambda frame: frame["generator"].map(generator_family)
    )
    rows = []
    for keys, part in labelled.groupby(["split", "family", "label"]):
        split, family, label = str(keys[0]), str(keys[1]), int(str(keys[2]))
        humans = labelled[(labelled["split"] == split) & (labelled["label"] == 0)]
        answers = answer_shares(part["probability_ai"], *band)
        auroc = float("nan")
        if label == 1 and len(humans):
            scores = np.concatenate([part["probability_ai"], humans["probability_ai"]])
            auroc = float(roc_auc_score(np.r_[np.ones(len(part)), np.zeros(len(humans))], scores))
        rows.append(
            {
                "split": split,
                "family": family,
                "label": label,
                "images": len(part),
                "roc_auc": auroc,
                "ai_rate": answers["ai"],
                "inconclusive_rate": answers["inconclusive"],
            }
        )
    return pd.DataFrame(rows, columns=FAMILY_COLUMNS)


def attribution_report(predictions: pd.DataFrame, families: list[str]) -> dict[str, Any]:
    """How often the closest family is the right one, on families the model was trained on.

    Counted on validation and test images whose family is one of the model's columns (human
    images count as ``human``); unseen families cannot be right and are left out.

    Args:
        predictions: With ``label``, ``generator``, ``split`` and ``family_probabilities``.
        families: The model's attribution columns (empty: no attribution).

    Returns:
        ``families`` and, per split, ``images``, ``accuracy`` and ``per_family`` accuracy;
        ``{"families": []}`` for a model without attribution.
    """
    report: dict[str, Any] = {"families": families}
    if not families:
        return report
    for split in ("validation", "test"):
        rows = predictions[(predictions["split"] == split) & predictions["label"].notna()]
        targets = family_targets(rows, families)
        counted = rows[targets >= 0]
        if counted.empty:
            continue
        rows_of_probabilities = np.stack(list(counted["family_probabilities"]))
        right = (np.argmax(rows_of_probabilities, axis=1) == targets[targets >= 0]).astype(np.float64)
        truth = np.asarray(families)[targets[targets >= 0]]
        report[split] = {
            "images": len(counted),
            "accuracy": float(right.mean()),
            "per_family": {str(name): float(right[truth == name].mean()) for name in np.unique(truth)},
        }
    return report


def _input_size(model: keras.Model) -> int:
    return int(model.input_shape[1])


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


def summarise_held_out_families(
    held_out_family_scores: pd.DataFrame, params: EvaluationParams
) -> dict[str, Any]:
    """The leave-one-family-out folds of one candidate, each judged on the family it never saw.

    Each fold's thresholds are chosen on its own validation images, as the shipped model's are;
    then, on the held-out family's pairs: AUROC of its AI images against their content twins,
    recall and human false-positive rate at ``threshold_ai``, and the inconclusive share.

    Args:
        held_out_family_scores: Output of the training pipeline's ``leave_one_family_out``.
        params: Threshold objective and band targets.

    Returns:
        ``folds`` (one record per held-out family) and the summary over folds: ``mean_roc_auc``,
        ``min_roc_auc``, ``worst_family`` and ``mean_human_fpr`` (NaN when the data name no
        generator families, e.g. a data set without a ``generator`` column).
    """
    folds = []
    for family, fold in held_out_family_scores.groupby("fold", sort=True):
        validation = fold[fold["split"] == "validation"]
        held_out = fold[fold["split"] == "held_out"]
        y = validation["label"].astype(int).to_numpy()
        threshold = choose_threshold(y, validation["probability_ai"], params.threshold_objective)
        band = choose_band(
            y, validation["probability_ai"], threshold, params.band.max_fpr, params.band.min_human_precision
        )
        ai, human = held_out[held_out["label"] == 1], held_out[held_out["label"] == 0]
        metrics = binary_metrics(held_out["label"].astype(int), held_out["probability_ai"], band[1])
        folds.append(
            {
                "family": str(family),
                "ai_images": len(ai),
                "human_images": len(human),
                "roc_auc": metrics["roc_auc"],
                "recall": answer_shares(ai["probability_ai"], *band)["ai"],
                "human_fpr": answer_shares(human["probability_ai"], *band)["ai"],
                "inconclusive_rate": answer_shares(held_out["probability_ai"], *band)["inconclusive"],
                "threshold_human": band[0],
                "threshold_ai": band[1],
            }
        )
    if not folds:
        nan = float("nan")
        return {
            "folds": [],
            "mean_roc_auc": nan,
            "min_roc_auc": nan,
            "worst_family": "",
            "mean_human_fpr": nan,
        }
    table = pd.DataFrame(folds)
    worst = table.iloc[int(np.argmin(table["roc_auc"].to_numpy()))]
    return {
        "folds": folds,
        "mean_roc_auc": float(table["roc_auc"].mean()),
        "min_roc_auc": float(worst["roc_auc"]),
        "worst_family": str(worst["family"]),
        "mean_human_fpr": float(table["human_fpr"].mean()),
    }


def compare_candidates(
    *reports: dict[str, Any], names: list[str]
) -> tuple[Figure, Figure, pd.DataFrame, pd.DataFrame, Figure]:
    """The comparison of every candidate, unseen families first, and the seed project's two charts.

    Args:
        reports: One :func:`evaluate_candidate` report per candidate, then one
            :func:`summarise_held_out_families` summary per candidate, each in ``names`` order.
        names: The candidates' names.

    Returns:
        Accuracy/F1 per candidate (bars), F1 against inference time and model size, the
        comparison table (one row per candidate: leave-one-family-out AUROC and human
        false-positive rate, then validation figures), the headline table (one row per
        candidate and held-out family) and its chart.
    """
    evaluations, unseen = reports[: len(names)], reports[len(names) :]
    table = pd.DataFrame(
        [
            {
                "candidate": name,
                "unseen_roc_auc_mean": summary["mean_roc_auc"],
                "unseen_roc_auc_min": summary["min_roc_auc"],
                "unseen_worst_family": summary["worst_family"],
                "unseen_human_fpr": summary["mean_human_fpr"],
                "accuracy": r["validation"]["at_threshold"]["accuracy"],
                "f1": r["validation"]["at_threshold"]["f1"],
                "roc_auc": r["validation"]["at_threshold"]["roc_auc"],
                "threshold": r["threshold"],
                "threshold_human": r["threshold_human"],
                "threshold_ai": r["threshold_ai"],
                "max_tiles": r["max_tiles"],
                "inconclusive_validation": r["validation"]["answers"]["inconclusive"],
                "ece_before": r["calibration"]["ece_before"],
                "ece_after": r["calibration"]["ece_after"],
                "ms_per_image": 1000 * r["seconds_per_image"],
                "size_mb": r["size_mb"],
            }
            for name, r, summary in zip(names, evaluations, unseen, strict=True)
        ]
    )
    families = pd.DataFrame(
        [
            {"candidate": name, **fold}
            for name, summary in zip(names, unseen, strict=True)
            for fold in summary["folds"]
        ],
        columns=["candidate", *UNSEEN_FOLD_COLUMNS],
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
    return bars, scatter, table, families, _unseen_family_chart(families)


def _unseen_family_chart(families: pd.DataFrame) -> Figure:
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
