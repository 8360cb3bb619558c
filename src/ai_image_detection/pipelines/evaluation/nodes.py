"""Nodes of the ``evaluation`` pipeline: one namespace per candidate, then a comparison.

The per-family breakdowns of a report are in :mod:`.family_metrics`, the figures in :mod:`.charts`.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import keras
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ai_image_detection.calibration import PlattScaling, fit_platt
from ai_image_detection.families import CLEAN_VIEW
from ai_image_detection.input_pipeline import Perturbation, make_prediction_dataset, perturbed_pixels
from ai_image_detection.metrics import (
    ThresholdObjective,
    answer_shares,
    answers_by_class,
    binary_metrics,
    choose_band,
    choose_threshold,
    expected_calibration_error,
)
from ai_image_detection.models.heads import model_families
from ai_image_detection.pipelines.evaluation.charts import (
    comparison_charts,
    unseen_family_chart,
    validation_charts,
)
from ai_image_detection.pipelines.evaluation.family_metrics import (
    attribution_report,
    calibrated_held_out_families,
    family_table,
    format_table,
    stored_formats,
)
from ai_image_detection.pipelines.evaluation.wild_generated import (
    cross_fitted_answers,
    score_published,
    wild_generated_report,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from ai_image_detection.scoring import keras_outputs, keras_scorer, score_files

logger = logging.getLogger(__name__)


class BandParams(BaseModel):
    """The inconclusive band: targets for the two answers the model commits to."""

    model_config = ConfigDict(extra="forbid")

    max_fpr: float = Field(gt=0, lt=1, description="largest share of human images answered ai")
    min_human_precision: float = Field(gt=0, lt=1, description="smallest share of humans among human answers")
    max_miss_rate: float = Field(
        ge=0, le=1, description="largest share of AI images answered human (1: no target)"
    )
    max_inconclusive: float = Field(
        gt=0, le=1, description="a band swallowing more validation images flags the model, not the band"
    )
    on_held_out_families: bool = Field(
        default=True,
        description="the targets hold on the leave-one-family-out held-out images too, not validation alone",
    )
    on_held_out_reshared: bool = Field(
        default=True,
        description="the targets hold on the held-out families' re-shared views too (pooled, probes only)",
    )
    on_each_format: bool = Field(
        default=True,
        description="the targets hold on each stored file format of validation (JPEG, PNG, ...) apart too",
    )
    on_wild_generated: bool = Field(
        default=True,
        description="the targets hold on the published generated images and their re-saved controls too",
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
    robustness_on_unseen: list[str] = Field(
        default=[],
        description="perturbations of `robustness` also applied to the unseen split (families never seen)",
    )
    wild_generated_human_resave: Perturbation = Field(
        description="what the human controls go through to be stored as the published generated images are",
    )
    wild_generated_generators: dict[str, str] = Field(
        description="generator -> regular expression over template names (a template matching none: its own)",
    )

    @model_validator(mode="after")
    def _known_perturbations(self) -> EvaluationParams:
        unknown = sorted(set(self.robustness_on_unseen) - set(self.robustness))
        if unknown:
            raise ValueError(
                f"robustness_on_unseen names {unknown}, which robustness does not define "
                f"(it has {sorted(self.robustness)})"
            )
        return self


SCORED_SPLITS = ("validation", "test", "unseen")
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
    "reshared_images",
    "reshared_roc_auc",
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
    held_out_family_scores: pd.DataFrame,
    wild_generated: list[SourcePhoto],
    params: EvaluationParams,
) -> dict[str, Any]:
    """Thresholds and band, metrics per split and per generator family, robustness, speed and size.

    The band's targets hold on validation and, with ``band.on_held_out_families``, on the pooled
    images of the generator families held out of training, each scored by the fold that never saw
    it (:func:`calibrated_held_out_families`): a model that is nearly always right on validation
    would otherwise have nothing to abstain on, and answer "human" to much of a family it never saw.
    With ``band.on_held_out_reshared`` they also hold on those families' re-shared views (the
    blurred, shrunk and re-compressed copies a probe caches, pooled): a trace that re-sharing erased
    is no evidence of a human, and an unseen generator's re-shared image must not be answered
    "human" because its trace is gone. With ``band.on_each_format`` they also hold on each stored
    file format of validation apart, so that the false accusations of a minority format (lossless
    PNG among JPEGs) are not averaged away. With ``band.on_wild_generated`` they also hold on the
    published images of today's generators pooled with their re-saved human controls
    (:mod:`.wild_generated`): a model that cannot tell those from photographs must not answer
    "human" to them; the report then also gives their answers at bands chosen without them
    (:func:`.cross_fitted_answers`).

    Args:
        model: The trained detector.
        predictions: Output of :func:`calibrate`.
        calibration: Output of :func:`calibrate`.
        image_manifest: The manifest (validation images are re-read for the robustness table).
        held_out_family_scores: The candidate's leave-one-family-out scores (training pipeline).
        wild_generated: Published images of text-to-image generators, never trained on
            (:mod:`.wild_generated`).
        params: Threshold objective, band targets, tiling and the perturbations.

    Returns:
        ``threshold`` (the single best cut), ``threshold_human``/``threshold_ai`` (the band),
        ``band`` (what it was chosen on, and its answers on the held-out families' AI and human
        images, as stored and re-shared), ``calibration``, per split (``validation``, ``test``
        when labelled, ``unseen``) the metrics ``at_threshold``, ``at_0.5`` and ``answers``
        (shares of human / inconclusive / ai), ``families`` (one row per split and generator
        family), ``formats`` (one row per split and stored file format, :func:`format_table`),
        ``attribution`` (accuracy of the closest family on seen families,
        :func:`attribution_report`), ``robustness`` (validation metrics per perturbation at the
        threshold), ``robustness_answers`` (per perturbation, the answers on the AI and on the
        human validation images), ``robustness_unseen`` and ``robustness_unseen_answers`` (the
        same on the unseen split, for ``robustness_on_unseen``; empty without a labelled unseen
        split), ``wild_generated`` (:func:`.wild_generated_report`: the answers on published
        generated images and on human controls stored alike), ``seconds_per_image``,
        ``parameters`` and ``size_mb``.
    """
    validation = predictions[predictions["split"] == "validation"]
    labels = validation["label"].astype(int).to_numpy()
    threshold = choose_threshold(labels, validation["probability_ai"], params.threshold_objective)
    held_out = calibrated_held_out_families(held_out_family_scores)
    reshared = held_out[held_out["view"] != CLEAN_VIEW]
    held_out = held_out[held_out["view"] == CLEAN_VIEW]
    if not params.band.on_held_out_families:
        held_out = held_out.head(0)
    if not params.band.on_held_out_reshared:
        reshared = reshared.head(0)
    formats = stored_formats(predictions, image_manifest)
    validation_formats = formats[validation.index]
    format_slices: dict[str, pd.DataFrame] = {}
    if params.band.on_each_format and validation_formats.nunique() > 1:
        format_slices = {
            str(stored): part
            for stored, part in validation.groupby(validation_formats)
            if set(part["label"].astype(int)) == {0, 1}
        }
    scaling = PlattScaling(calibration["slope"], calibration["intercept"])
    published = score_published(
        model,
        wild_generated,
        predictions,
        scaling,
        params.wild_generated_human_resave,
        params.wild_generated_generators,
        params.max_tiles,
        params.batch_size,
    )
    other_sets = [
        *((part["label"], part["probability_ai"]) for part in (held_out, reshared) if len(part)),
        *((part["label"], part["probability_ai"]) for part in format_slices.values()),
    ]

    def band_with(published_sets: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float]:
        return choose_band(
            labels,
            validation["probability_ai"],
            threshold,
            params.band.max_fpr,
            params.band.min_human_precision,
            params.band.max_miss_rate,
            also_on=[*other_sets, *published_sets],
        )

    cross_fitted = None
    if published is not None and params.band.on_wild_generated:
        band = band_with([published.band_set()])
        cross_fitted = cross_fitted_answers(published, band_with)
    else:
        band = band_with([])
    report: dict[str, Any] = {
        "threshold": threshold,
        "threshold_objective": params.threshold_objective,
        "threshold_human": band[0],
        "threshold_ai": band[1],
        "band": {
            "targets": params.band.model_dump(include={"max_fpr", "min_human_precision", "max_miss_rate"}),
            "chosen_on": [
                "validation",
                *(["held_out_families"] if len(held_out) else []),
                *(["held_out_families re-shared"] if len(reshared) else []),
                *(f"validation {stored}" for stored in format_slices),
                *(["published generated images"] if cross_fitted is not None else []),
            ],
            "stored_formats": list(format_slices),
            "held_out_families": sorted(held_out["fold"].unique().tolist()),
            "held_out_answers": answers_by_class(held_out["label"], held_out["probability_ai"], band),
            "held_out_reshared_views": sorted(reshared["view"].unique().tolist()),
            "held_out_reshared_answers": answers_by_class(
                reshared["label"], reshared["probability_ai"], band
            ),
        },
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
    report["formats"] = format_table(predictions, formats, band).to_dict("records")
    report["attribution"] = attribution_report(predictions, model_families(model))
    report["robustness"], report["robustness_answers"] = robustness_rows(
        model, validation, params.robustness, scaling, threshold, band, params
    )
    unseen = predictions[(predictions["split"] == "unseen") & predictions["label"].notna()]
    on_unseen = {name: params.robustness[name] for name in params.robustness_on_unseen}
    report["robustness_unseen"], report["robustness_unseen_answers"] = (
        robustness_rows(model, unseen, on_unseen, scaling, threshold, band, params, "unseen")
        if set(unseen["label"].astype(int)) == {0, 1}
        else ({}, {})
    )
    report["wild_generated"] = wild_generated_report(
        published,
        threshold,
        band,
        cross_fitted,
    )
    report["seconds_per_image"] = inference_seconds_per_image(
        model, validation["path"].tolist(), params.batch_size
    )
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


def robustness_rows(
    model: keras.Model,
    images: pd.DataFrame,
    perturbations: dict[str, Perturbation],
    scaling: PlattScaling,
    threshold: float,
    band: tuple[float, float],
    params: EvaluationParams,
    split: str = "validation",
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, dict[str, float]]]]:
    """Metrics at the threshold and answers in the band of labelled images, as scored and re-shared.

    Args:
        model: The trained detector.
        images: Labelled predictions (``path``, ``label`` and the calibrated ``probability_ai``).
        perturbations: What each re-shared version of the images went through (applied before cropping).
        scaling: The calibration fitted on validation.
        threshold: The single cut the metrics are taken at.
        band: The inconclusive band's edges (human below the first, ai from the second).
        params: Tiling and batch size.
        split: How the progress bar names the images.

    Returns:
        Per perturbation (``none`` first: the images as scored) the metrics at the threshold, and the
        answers on the AI and on the human images.
    """
    labels = images["label"].astype(int).to_numpy()
    metrics = {"none": binary_metrics(labels, images["probability_ai"], threshold)}
    answers = {"none": answers_by_class(labels, images["probability_ai"], band)}
    for name, perturbation in perturbations.items():
        tiles = score_files(
            keras_scorer(model),
            images["path"].tolist(),
            _input_size(model),
            params.max_tiles,
            params.batch_size,
            transform=functools.partial(perturbed_pixels, perturbation=perturbation),
            description=f"robustness ({split}): {name}",
        )
        scores = scaling.image_scores(tiles)
        metrics[name] = binary_metrics(labels, scores, threshold)
        answers[name] = answers_by_class(labels, scores, band)
    return metrics, answers


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
        predictions: Output of :func:`calibrate`.
        report: Output of :func:`evaluate_candidate` (for the threshold).
        params: For the number of calibration bins.

    Returns:
        A 2×2 figure.
    """
    validation = predictions[predictions["split"] == "validation"]
    return validation_charts(
        validation["label"].astype(int).to_numpy(),
        validation["probability_ai"].to_numpy(),
        report["threshold"],
        report["validation"]["at_threshold"],
        params.calibration_bins,
    )


def summarise_held_out_families(
    held_out_family_scores: pd.DataFrame, params: EvaluationParams
) -> dict[str, Any]:
    """The leave-one-family-out folds of one candidate, each judged on the family it never saw.

    Each fold's thresholds are chosen on its own validation images, as the shipped model's are;
    then, on the held-out family's pairs as stored: AUROC of its AI images against their content
    twins, recall and human false-positive rate at ``threshold_ai``, and the inconclusive share.
    For a probe, whose folds also score the cached re-shared views of the held-out pairs, the
    AUROC of those views too (AI views against the twins' views, pooled over degradations): how
    the recipe ranks a generator it never saw once its images have been blurred, shrunk or
    re-compressed.

    Args:
        held_out_family_scores: Output of the training pipeline's ``leave_one_family_out``.
        params: Threshold objective and band targets.

    Returns:
        ``folds`` (one record per held-out family, :data:`UNSEEN_FOLD_COLUMNS`; ``reshared_images``
        0 and ``reshared_roc_auc`` NaN without re-shared views) and the summary over folds:
        ``mean_roc_auc``, ``min_roc_auc``, ``worst_family``, ``mean_human_fpr`` and
        ``mean_reshared_roc_auc`` (NaN when the data name no generator families, e.g. a data set
        without a ``generator`` column, and the last also without re-shared views).
    """
    folds = []
    as_stored = held_out_family_scores[held_out_family_scores["view"] == CLEAN_VIEW]
    reshared_views = held_out_family_scores[
        (held_out_family_scores["view"] != CLEAN_VIEW) & (held_out_family_scores["split"] == "held_out")
    ]
    for family, fold in as_stored.groupby("fold", sort=True):
        validation = fold[fold["split"] == "validation"]
        held_out = fold[fold["split"] == "held_out"]
        y = validation["label"].astype(int).to_numpy()
        threshold = choose_threshold(y, validation["probability_ai"], params.threshold_objective)
        band = choose_band(
            y,
            validation["probability_ai"],
            threshold,
            params.band.max_fpr,
            params.band.min_human_precision,
            params.band.max_miss_rate,
        )
        ai, human = held_out[held_out["label"] == 1], held_out[held_out["label"] == 0]
        reshared = reshared_views[reshared_views["fold"] == family]
        metrics = binary_metrics(held_out["label"].astype(int), held_out["probability_ai"], band[1])
        reshared_auc = (
            binary_metrics(reshared["label"].astype(int), reshared["probability_ai"], band[1])["roc_auc"]
            if len(reshared)
            else float("nan")
        )
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
                "reshared_images": len(reshared),
                "reshared_roc_auc": reshared_auc,
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
            "mean_reshared_roc_auc": nan,
        }
    table = pd.DataFrame(folds)
    worst = table.iloc[int(np.argmin(table["roc_auc"].to_numpy()))]
    return {
        "folds": folds,
        "mean_roc_auc": float(table["roc_auc"].mean()),
        "min_roc_auc": float(worst["roc_auc"]),
        "worst_family": str(worst["family"]),
        "mean_human_fpr": float(table["human_fpr"].mean()),
        "mean_reshared_roc_auc": float(table["reshared_roc_auc"].mean()),
    }


def _wild_generated_columns(report: dict[str, Any]) -> dict[str, float]:
    """AUROC on the published generated images and the share of them answered "human" (NaN unmeasured).

    The share is the cross-fitted one when the band was chosen on these images too (in-sample, the
    miss-rate target fixes it, whatever the model).
    """
    if not report:
        return {"wild_generated_roc_auc": np.nan, "wild_generated_answered_human": np.nan}
    answers = report["answers_cross_fitted"] or report["answers"]["ai_images"]
    return {
        "wild_generated_roc_auc": report["at_threshold"]["roc_auc"],
        "wild_generated_answered_human": answers["human"],
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
        false-positive rate, AUROC on the published generated images and the share of them
        answered "human", then validation figures), the headline table (one row per
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
                "unseen_reshared_roc_auc_mean": summary["mean_reshared_roc_auc"],
                **_wild_generated_columns(r["wild_generated"]),
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
    bars, scatter = comparison_charts(table)
    return bars, scatter, table, families, unseen_family_chart(families)
