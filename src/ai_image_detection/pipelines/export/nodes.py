"""Nodes of the ``export`` pipeline: pick the candidate, export it to ONNX, prove the export."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import keras
import mlflow
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ai_image_detection.calibration import PlattScaling
from ai_image_detection.contract import (
    CALIBRATION_KEY,
    MAX_TILES_KEY,
    THRESHOLD_AI_KEY,
    THRESHOLD_HUMAN_KEY,
    THRESHOLD_KEY,
)
from ai_image_detection.families import trained_ai_families, unseen_ai_families
from ai_image_detection.hooks import check_latency_budgets
from ai_image_detection.inference_cost import images_per_second, onnx_runner
from ai_image_detection.input_pipeline import Perturbation, make_prediction_dataset
from ai_image_detection.model_card import render_model_card
from ai_image_detection.models import calibrated_detector
from ai_image_detection.onnx_export import check_parity, export_onnx
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.pipelines.export.int8_report import (
    MIN_GROUPS,
    int8_report,
    mixed_precision_int8,
    runtime_figures,
)
from ai_image_detection.quantization import dynamic_quantizable_nodes, quantize_int8, quantize_int8_dynamic
from ai_image_detection.registry import ChampionRule, JudgedImages, describe_version, register_and_promote
from ai_image_detection.sample_data.photo_sources import SourcePhoto

logger = logging.getLogger(__name__)


class QuantizationParams(BaseModel):
    """The int8 variant: how it is calibrated and whether it ships instead of float32."""

    model_config = ConfigDict(extra="forbid")

    calibration_images: int = Field(ge=1)
    max_f1_drop: float = Field(ge=0)
    ship_int8: bool
    sensitivity_groups: int = Field(
        default=6, ge=2, description="runs of matrix products judged for mixed precision (dynamic int8)"
    )


class SelectionParams(BaseModel):
    """How close two figures must be to count as a tie (selection and the champion rule)."""

    model_config = ConfigDict(extra="forbid")

    roc_auc_tolerance: float = Field(ge=0, description="unseen-family AUROC differences within this are ties")
    fpr_tolerance: float = Field(
        ge=0, description="human false-positive rate differences within this are ties"
    )
    ai_answered_human_tolerance: float = Field(
        ge=0,
        description='champion rule: shares of AI images answered "human" this close are ties',
    )
    reshared: list[str] = Field(
        default=[],
        description=(
            "champion rule: the evaluation.robustness degradations of the validation images whose "
            "mean AUROC it reads after false reassurance, before F1 ([] to skip)"
        ),
    )
    reshared_roc_auc_tolerance: float = Field(
        default=0.01, ge=0, description="champion rule: re-shared AUROC differences within this are ties"
    )


class ExportParams(BaseModel):
    """Parameters of the ``export`` pipeline (``conf/base/parameters_export.yml``)."""

    model_config = ConfigDict(extra="forbid")

    latency_budget_ms: dict[str, Annotated[float, Field(gt=0)]] = Field(
        description="per candidate: ms per model input (ONNX Runtime, batch 1, this CPU) it may take"
    )
    latency_images: int = Field(ge=1)
    registered_model_name: str
    champion_alias: str
    opset: int = Field(ge=13)
    parity_tolerance: float = Field(gt=0)
    parity_images: int = Field(ge=1)
    quantization: QuantizationParams
    selection: SelectionParams


def _split_images(
    image_manifest: pd.DataFrame, split: str, size: int, limit: int | None = None
) -> np.ndarray:
    """The first ``limit`` images of a split, centre-cropped to ``size`` (raw RGB)."""
    paths = image_manifest.loc[image_manifest["split"] == split, "path"]
    paths = paths if limit is None else paths.head(limit)
    return np.concatenate([batch.numpy() for batch in make_prediction_dataset(paths.tolist(), size, 64)])


def export_candidates(
    params: ExportParams,
    candidate_comparison: pd.DataFrame,
    data_version: str,
    image_manifest: pd.DataFrame,
    *models_and_calibrations: Any,
    names: list[str],
) -> dict[str, bytes]:
    """Export every candidate, calibrated, to ONNX with the contract's metadata.

    Selection needs each candidate's ONNX latency, so each is exported; the chosen one is then
    kept as ``detector.onnx``. The calibration is part of the graph, so the ONNX output is the
    calibrated P(AI) that the thresholds were chosen on.

    Args:
        params: The ONNX opset.
        candidate_comparison: The evaluation's table (thresholds and tiling per candidate).
        data_version: DVC hash of the manifest.
        image_manifest: The manifest (the families trained on and held out).
        models_and_calibrations: The trained candidates, then their calibrations, in ``names`` order.
        names: The candidates' names.

    Returns:
        Candidate name → serialised ONNX model (thresholds, tiling, calibration, families, class
        names, input size, MLflow run id and data version in its metadata).
    """
    models, calibrations = models_and_calibrations[: len(names)], models_and_calibrations[len(names) :]
    run = mlflow.active_run()
    table = candidate_comparison.set_index("candidate")
    families = {
        "generator_families": json.dumps(trained_ai_families(image_manifest)),
        "unseen_families": json.dumps(unseen_ai_families(image_manifest)),
    }
    exports = {}
    for name, model, calibration in zip(names, models, calibrations, strict=True):
        row = table.loc[name].to_dict()
        metadata = {
            "candidate": name,
            THRESHOLD_KEY: repr(float(row["threshold"])),
            THRESHOLD_HUMAN_KEY: repr(float(row["threshold_human"])),
            THRESHOLD_AI_KEY: repr(float(row["threshold_ai"])),
            MAX_TILES_KEY: str(int(row["max_tiles"])),
            CALIBRATION_KEY: json.dumps(calibration),
            **families,
            "mlflow_run_id": run.info.run_id if run else "",
            "data_version": data_version,
        }
        exports[name] = export_onnx(_calibrated(model, calibration), params.opset, metadata)
    return exports


def _calibrated(model: keras.Model, calibration: dict[str, Any]) -> keras.Model:
    """The detector with the evaluation's calibration as its last layer."""
    return calibrated_detector(model, PlattScaling(calibration["slope"], calibration["intercept"]))


def measure_onnx_latency(
    params: ExportParams, candidate_onnx: dict[str, bytes], image_manifest: pd.DataFrame
) -> dict[str, float]:
    """ONNX Runtime milliseconds per image at batch 1 (one upload, the serving case) per candidate.

    Args:
        params: How many validation images to time on.
        candidate_onnx: Output of :func:`export_candidates`.
        image_manifest: The manifest.

    Returns:
        Candidate name → ms per image on this CPU.
    """
    latency = {}
    for name, detector in candidate_onnx.items():
        size = int(onnx_metadata(detector)["input_height"])
        images = _split_images(image_manifest, "validation", size, params.latency_images)
        latency[name] = 1000 / images_per_second(onnx_runner(detector), images, batch_size=1)
        logger.info("%s: %.2f ms per image (ONNX Runtime, batch 1)", name, latency[name])
    return latency


def select_candidate(
    params: ExportParams, candidate_comparison: pd.DataFrame, onnx_latency: dict[str, float]
) -> dict[str, Any]:
    """The candidate that does best on generators it never saw, within the latency budget.

    Among the candidates whose ONNX latency per image fits the budget: the highest AUROC on
    generators never trained on (the mean of the leave-one-family-out AUROC and the published
    generated images' AUROC, each set counting once, as the registry's champion rule counts them;
    the former alone when the latter was not measured); among those within
    ``selection.roc_auc_tolerance`` of it, the lowest human false-positive rate on the held-out
    families; among those within ``selection.fpr_tolerance`` of that, the best validation F1.

    Args:
        params: The latency budget and the tolerances.
        candidate_comparison: The evaluation's comparison table.
        onnx_latency: Output of :func:`measure_onnx_latency`.

    Returns:
        ``candidate``, ``threshold``, ``never_seen_roc_auc``, ``unseen_roc_auc_mean``,
        ``wild_generated_roc_auc`` (NaN unmeasured), ``unseen_human_fpr``, ``validation_f1``,
        ``onnx_ms_per_image`` and ``reason`` (written to the report).

    Raises:
        ValueError: If no candidate fits the budget.
    """
    check_latency_budgets(params.latency_budget_ms, onnx_latency)
    table = candidate_comparison.set_index("candidate").assign(
        onnx_ms=pd.Series(onnx_latency), budget_ms=pd.Series(params.latency_budget_ms)
    )
    table["never_seen_roc_auc"] = table[["unseen_roc_auc_mean", "wild_generated_roc_auc"]].mean(axis=1)
    eligible = table[table["onnx_ms"] <= table["budget_ms"]]
    if eligible.empty:
        raise ValueError(
            "no candidate fits its latency budget (ONNX Runtime, batch 1, ms per image): "
            f"{ {name: (round(ms, 2), params.latency_budget_ms[name]) for name, ms in onnx_latency.items()} }"
        )
    rule = params.selection
    ranked = _within(eligible, -eligible["never_seen_roc_auc"], rule.roc_auc_tolerance)
    ranked = _within(ranked, ranked["unseen_human_fpr"], rule.fpr_tolerance)
    chosen = str(ranked["f1"].idxmax())
    row = table.loc[chosen].to_dict()
    excluded = sorted(set(table.index) - set(eligible.index))
    published = row["wild_generated_roc_auc"]
    published_auc = "not measured" if pd.isna(published) else f"{published:.4f}"
    reason = (
        f"{chosen}: leave-one-family-out AUROC {row['unseen_roc_auc_mean']:.4f} (worst family "
        f"{row['unseen_worst_family']} {row['unseen_roc_auc_min']:.4f}), published generated images "
        f"{published_auc}, human false-positive rate {row['unseen_human_fpr']:.4f} on the held-out "
        f"families, validation F1 {row['f1']:.4f}; best on generators never trained on (mean AUROC "
        f"{row['never_seen_roc_auc']:.4f}; then false positives, then F1) among the {len(eligible)} "
        f"of {len(table)} candidates within their latency budget ({row['onnx_ms']:.2f} ms per image of its "
        f"{row['budget_ms']:g} ms, ONNX Runtime, batch 1, this CPU)"
        + (f"; over budget: {', '.join(excluded)}" if excluded else "")
    )
    logger.info("selected %s", reason)
    return {
        "candidate": chosen,
        "threshold": float(row["threshold"]),
        "never_seen_roc_auc": float(row["never_seen_roc_auc"]),
        "unseen_roc_auc_mean": float(row["unseen_roc_auc_mean"]),
        "wild_generated_roc_auc": float(row["wild_generated_roc_auc"]),
        "unseen_human_fpr": float(row["unseen_human_fpr"]),
        "validation_f1": float(row["f1"]),
        "onnx_ms_per_image": float(row["onnx_ms"]),
        "reason": reason,
    }


def _within(table: pd.DataFrame, cost: pd.Series, tolerance: float) -> pd.DataFrame:
    """The rows whose ``cost`` is within ``tolerance`` of the lowest; all rows when no cost is known (NaN)."""
    if cost.isna().all():
        return table
    return table[cost <= cost.min() + tolerance]


def make_submission(
    raw_dir: str, model_selection: dict[str, Any], *predictions: pd.DataFrame, names: list[str]
) -> pd.DataFrame:
    """Kaggle-style ``submission.csv`` (``id,label``) from the selected candidate, the one that ships.

    Args:
        raw_dir: The raw data folder, to turn paths into the competition's ids.
        model_selection: Output of :func:`select_candidate` (the candidate and its threshold).
        predictions: One evaluation ``predictions`` table per candidate, in the order of ``names``.
        names: The candidates' names.

    Returns:
        One row per test image: ``id`` (its path inside the raw folder) and ``label`` (1 = AI).
    """
    chosen = model_selection["candidate"]
    chosen_predictions = predictions[names.index(chosen)]
    test = chosen_predictions[chosen_predictions["split"] == "test"]
    logger.info("submission: %d test images scored by %s (the selected model)", len(test), chosen)
    ids = [Path(path).relative_to(raw_dir).as_posix() for path in test["source_path"]]
    labels = (test["probability_ai"] >= model_selection["threshold"]).astype(int)
    return pd.DataFrame({"id": ids, "label": labels.to_numpy()})


def verify_parity(
    params: ExportParams,
    candidate_onnx: dict[str, bytes],
    selection: dict[str, Any],
    image_manifest: pd.DataFrame,
    *models_and_calibrations: Any,
    names: list[str],
) -> tuple[bytes, dict[str, Any]]:
    """The gate: Keras and ONNX Runtime must agree on real validation images, else the run fails.

    The selected export becomes ``detector.onnx`` only through this node, so a failed gate
    leaves the previous file untouched.

    Args:
        params: Tolerance and number of images.
        candidate_onnx: Output of :func:`export_candidates`.
        selection: Which candidate was selected.
        image_manifest: The manifest (validation images are used).
        models_and_calibrations: The trained candidates, then their calibrations, in ``names`` order.
        names: Their names.

    Returns:
        The selected export and the parity record: candidate, images compared, largest
        difference, tolerance.
    """
    index = names.index(selection["candidate"])
    model = _calibrated(models_and_calibrations[index], models_and_calibrations[len(names) + index])
    detector_onnx = candidate_onnx[selection["candidate"]]
    images = _split_images(image_manifest, "validation", int(model.input_shape[1]), params.parity_images)
    difference = check_parity(model, detector_onnx, images, params.parity_tolerance)  # raises on a mismatch
    logger.info("ONNX parity: max |Keras - ONNX| = %.3g on %d validation images", difference, len(images))
    return detector_onnx, {
        **selection,
        "parity_images": len(images),
        "parity_max_abs_difference": difference,
        "parity_tolerance": params.parity_tolerance,
    }


def quantize_detector(
    params: ExportParams, detector_onnx: bytes, image_manifest: pd.DataFrame
) -> tuple[bytes, dict[str, Any]]:
    """The int8 variant: static (calibrated on training images) and dynamic, the better one kept.

    Both are judged on the validation images at the stored threshold. When neither is within
    ``max_f1_drop`` of float32, a third, dynamic with the most sensitive matrix products in float32
    (:func:`mixed_precision_int8`), joins them. The one with the highest F1 is kept, the faster at
    batch 1 when their F1 are within ``F1_TIE`` (0.1 point).

    Args:
        params: Calibration size and the accepted F1 drop.
        detector_onnx: The parity-checked float32 export.
        image_manifest: The manifest.

    Returns:
        The int8 model and its report: ``method`` (``static``, ``dynamic`` or ``dynamic_mixed``), F1 of
        float32 and of the kept int8 model at the stored threshold, the change in points, ONNX
        Runtime images/s at batch 1 and 32 for both, the speed-ups, whether it is within the
        accepted F1 drop, ``methods`` (the figures of every variant) and, when it was tried,
        ``mixed_precision`` (its groups' sensitivity and which stayed float32).
    """
    size = int(onnx_metadata(detector_onnx)["input_height"])
    threshold = float(onnx_metadata(detector_onnx)["threshold"])
    calibration = _split_images(image_manifest, "train", size, params.quantization.calibration_images)
    variants = {
        "static": quantize_int8(detector_onnx, calibration),
        "dynamic": quantize_int8_dynamic(detector_onnx),
    }
    validation = image_manifest[image_manifest["split"] == "validation"]
    images = _split_images(image_manifest, "validation", size)
    labels = validation["label"].astype(int).to_numpy()
    figures = {
        name: runtime_figures(model, images, labels, threshold)
        for name, model in {"fp32": detector_onnx, **variants}.items()
    }
    max_f1_drop = params.quantization.max_f1_drop
    mixed: dict[str, Any] = {}
    too_lossy = figures["fp32"]["f1"] - max(figures[name]["f1"] for name in variants) > max_f1_drop
    nodes = dynamic_quantizable_nodes(detector_onnx) if too_lossy else []
    if len(nodes) >= MIN_GROUPS:
        variants["dynamic_mixed"], mixed = mixed_precision_int8(
            detector_onnx,
            nodes,
            images,
            labels,
            threshold,
            params.quantization.sensitivity_groups,
            max_f1_drop,
        )
        figures["dynamic_mixed"] = runtime_figures(variants["dynamic_mixed"], images, labels, threshold)
    report = int8_report(figures, len(calibration), len(images), max_f1_drop)
    if mixed:
        report["mixed_precision"] = mixed
    logger.info(
        "int8 (%s; %s): F1 %.4f -> %.4f (%+.2f points), %.2fx faster at batch 1, %.2fx at batch 32",
        report["method"],
        ", ".join(f"{name} F1 {figures[name]['f1']:.4f}" for name in variants),
        report["f1_fp32"],
        report["f1_int8"],
        report["f1_change_points"],
        report["speedup_batch1"],
        report["speedup_batch32"],
    )
    return variants[report["method"]], report


def register_detector(
    params: ExportParams,
    detector_onnx: bytes,
    detector_int8_onnx: bytes,
    quantization_report: dict[str, Any],
    image_manifest: pd.DataFrame,
    parity_report: dict[str, Any],
    wild_generated: list[SourcePhoto],
    human_resave: dict[str, Any],
    robustness: dict[str, Any],
) -> dict[str, Any]:
    """Register the shipped model in MLflow; move the champion alias only if it does not regress.

    Challenger and champion are judged on the same validation, unseen-family and published
    generated images (:func:`.register_and_promote`): AUROC on generators never trained on first,
    then the human false-positive rate, then AI images answered "human", then validation AUROC
    after the ``selection.reshared`` degradations, then validation F1. The
    float32 export ships unless ``quantization.ship_int8`` is set and the int8 model lost no more
    F1 than ``quantization.max_f1_drop``.

    Args:
        params: Registered model name, alias and the int8 choice.
        detector_onnx: The parity-checked float32 export.
        detector_int8_onnx: Its int8 variant.
        quantization_report: Output of :func:`quantize_detector`.
        image_manifest: The manifest (both models are scored on its validation and unseen images).
        parity_report: Output of :func:`verify_parity`.
        wild_generated: The published images of today's generators (evaluation's catalog entry).
        human_resave: What their human controls go through (``evaluation.wild_generated_human_resave``),
            as a mapping: Kedro cannot validate a key inside ``params:evaluation``, which the
            evaluation pipeline validates whole.
        robustness: The evaluation's degradations by name (``evaluation.robustness``), likewise.

    Returns:
        The export report: selection, parity, which precision shipped, and the registry
        decision with its reason.

    Raises:
        ValueError: If ``selection.reshared`` names a degradation ``evaluation.robustness`` lacks.
    """
    unknown = sorted(set(params.selection.reshared) - set(robustness))
    if unknown:
        raise ValueError(
            f"export.selection.reshared names {unknown}, not among evaluation.robustness "
            f"({sorted(robustness)})"
        )
    ship_int8 = params.quantization.ship_int8 and quantization_report["within_f1_tolerance"]
    if params.quantization.ship_int8 and not ship_int8:
        logger.warning(
            "int8 lost %.2f F1 points (> %.2f accepted): shipping float32",
            -quantization_report["f1_change_points"],
            100 * params.quantization.max_f1_drop,
        )
    shipped = detector_int8_onnx if ship_int8 else detector_onnx
    validation = image_manifest[image_manifest["split"] == "validation"]
    unseen = image_manifest[(image_manifest["split"] == "unseen") & image_manifest["label"].notna()]
    images = JudgedImages(
        validation_paths=validation["path"].tolist(),
        validation_labels=validation["label"].astype(int).to_numpy(),
        unseen_paths=unseen["path"].tolist(),
        unseen_labels=unseen["label"].astype(int).to_numpy(),
        published={f"{photo.package}/{photo.member}": photo.data for photo in wild_generated},
        human_resave=Perturbation.model_validate(human_resave),
        reshared=tuple(Perturbation.model_validate(robustness[name]) for name in params.selection.reshared),
    )
    rule = ChampionRule(
        params.selection.roc_auc_tolerance,
        params.selection.fpr_tolerance,
        params.selection.ai_answered_human_tolerance,
        params.selection.reshared_roc_auc_tolerance,
    )
    decision = register_and_promote(
        shipped, images, params.registered_model_name, params.champion_alias, rule
    )
    metadata = onnx_metadata(shipped)
    return {
        **parity_report,
        "mlflow_run_id": metadata["mlflow_run_id"],
        "data_version": metadata["data_version"],
        "shipped_precision": "int8" if ship_int8 else "fp32",
        "registry": asdict(decision),
    }


def write_model_card(
    export_report: dict[str, Any],
    quantization_report: dict[str, Any],
    image_manifest: pd.DataFrame,
    unseen_family_table: pd.DataFrame,
    *evaluation_reports: dict[str, Any],
    names: list[str],
) -> str:
    """The model card of the registered version, also set as its description in the registry.

    Args:
        export_report: Output of :func:`register_detector`.
        quantization_report: Output of :func:`quantize_detector`.
        image_manifest: The manifest (data composition).
        unseen_family_table: The evaluation's leave-one-family-out table (every candidate).
        evaluation_reports: One evaluation report per candidate.
        names: The candidates' names, in the same order.

    Returns:
        The card as Markdown.
    """
    chosen = export_report["candidate"]
    evaluation = evaluation_reports[names.index(chosen)]
    folds = unseen_family_table[unseen_family_table["candidate"] == chosen]
    card = render_model_card(export_report, evaluation, quantization_report, image_manifest, folds)
    registry = export_report["registry"]
    describe_version(registry["registered_model"], registry["version"], card)
    return card
