"""Nodes of the ``export`` pipeline: pick the candidate, export it to ONNX, prove the export."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ai_image_detection.inference_cost import images_per_second, onnx_runner
from ai_image_detection.input_pipeline import make_prediction_dataset
from ai_image_detection.metrics import binary_metrics
from ai_image_detection.model_card import render_model_card
from ai_image_detection.onnx_export import check_parity, export_onnx, onnx_metadata
from ai_image_detection.quantization import quantize_int8
from ai_image_detection.registry import describe_version, register_and_promote

logger = logging.getLogger(__name__)


class QuantizationParams(BaseModel):
    """The int8 variant: how it is calibrated and whether it ships instead of float32."""

    model_config = ConfigDict(extra="forbid")

    calibration_images: int = Field(ge=1)
    max_f1_drop: float = Field(ge=0)
    ship_int8: bool


class ExportParams(BaseModel):
    """Parameters of the ``export`` pipeline (``conf/base/parameters_export.yml``)."""

    model_config = ConfigDict(extra="forbid")

    latency_budget_ms: float = Field(gt=0)
    latency_images: int = Field(ge=1)
    registered_model_name: str
    champion_alias: str
    opset: int = Field(ge=13)
    parity_tolerance: float = Field(gt=0)
    parity_images: int = Field(ge=1)
    quantization: QuantizationParams


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
    *models: keras.Model,
    names: list[str],
) -> dict[str, bytes]:
    """Export every candidate to ONNX with the contract's metadata.

    Selection needs each candidate's ONNX latency, so each is exported; the chosen one is then
    kept as ``detector.onnx``.

    Args:
        params: The ONNX opset.
        candidate_comparison: The evaluation's table (the threshold chosen per candidate).
        data_version: DVC hash of the manifest.
        models: The trained candidates.
        names: Their names, in the same order.

    Returns:
        Candidate name → serialised ONNX model (threshold, class names, input size, MLflow run
        id and data version in its metadata).
    """
    run = mlflow.active_run()
    thresholds = candidate_comparison.set_index("candidate")["threshold"]
    exports = {}
    for name, model in zip(names, models, strict=True):
        metadata = {
            "candidate": name,
            "threshold": repr(float(thresholds[name])),
            "mlflow_run_id": run.info.run_id if run else "",
            "data_version": data_version,
        }
        exports[name] = export_onnx(model, params.opset, metadata)
    return exports


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
    """Best validation F1 among the candidates whose ONNX latency per image fits the budget.

    Args:
        params: The latency budget.
        candidate_comparison: The evaluation's comparison table (F1 and threshold per candidate).
        onnx_latency: Output of :func:`measure_onnx_latency`.

    Returns:
        ``candidate``, ``threshold``, ``validation_f1``, ``onnx_ms_per_image`` and ``reason``
        (written to the report).

    Raises:
        ValueError: If no candidate fits the budget.
    """
    table = candidate_comparison.set_index("candidate").assign(onnx_ms=pd.Series(onnx_latency))
    eligible = table[table["onnx_ms"] <= params.latency_budget_ms]
    if eligible.empty:
        raise ValueError(
            f"no candidate fits the {params.latency_budget_ms:g} ms/image budget (ONNX Runtime, batch 1): "
            f"{ {name: round(ms, 2) for name, ms in onnx_latency.items()} }"
        )
    chosen = str(eligible["f1"].idxmax())
    f1, latency, threshold = (
        float(v) for v in table.loc[[chosen], ["f1", "onnx_ms", "threshold"]].to_numpy()[0]
    )
    excluded = sorted(set(table.index) - set(eligible.index))
    reason = (
        f"{chosen}: best validation F1 ({f1:.4f}) among the {len(eligible)} of {len(table)} candidates "
        f"within {params.latency_budget_ms:g} ms per image "
        f"({latency:.2f} ms, ONNX Runtime, batch 1, this CPU)"
        + (f"; over budget: {', '.join(excluded)}" if excluded else "")
    )
    logger.info("selected %s", reason)
    return {
        "candidate": chosen,
        "threshold": threshold,
        "validation_f1": f1,
        "onnx_ms_per_image": latency,
        "reason": reason,
    }


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


def pick_detector(selection: dict[str, Any], candidate_onnx: dict[str, bytes]) -> bytes:
    """The selected candidate's export, which becomes ``data/06_models/detector.onnx``."""
    return candidate_onnx[selection["candidate"]]


def verify_parity(
    params: ExportParams,
    detector_onnx: bytes,
    selection: dict[str, Any],
    image_manifest: pd.DataFrame,
    *models: keras.Model,
    names: list[str],
) -> dict[str, Any]:
    """Keras and ONNX Runtime must agree on real validation images, else the run fails.

    Args:
        params: Tolerance and number of images.
        detector_onnx: The export.
        selection: Which candidate was exported.
        image_manifest: The manifest (validation images are used).
        models: The trained candidates.
        names: Their names.

    Returns:
        The parity record: candidate, images compared, largest difference, tolerance.
    """
    model = models[names.index(selection["candidate"])]
    images = _split_images(image_manifest, "validation", int(model.input_shape[1]), params.parity_images)
    difference = check_parity(model, detector_onnx, images, params.parity_tolerance)  # raises on a mismatch
    logger.info("ONNX parity: max |Keras - ONNX| = %.3g on %d validation images", difference, len(images))
    return {
        **selection,
        "parity_images": len(images),
        "parity_max_abs_difference": difference,
        "parity_tolerance": params.parity_tolerance,
    }


def quantize_detector(
    params: ExportParams, detector_onnx: bytes, image_manifest: pd.DataFrame
) -> tuple[bytes, dict[str, Any]]:
    """The int8 variant, calibrated on training images and judged on validation images.

    Args:
        params: Calibration size and the accepted F1 drop.
        detector_onnx: The parity-checked float32 export.
        image_manifest: The manifest.

    Returns:
        The int8 model and its report: validation F1 of both at the stored threshold, the
        change in points, ONNX Runtime images/s at batch 1 and 32 for both, the speed-ups, and
        whether it is within the accepted F1 drop.
    """
    size = int(onnx_metadata(detector_onnx)["input_height"])
    threshold = float(onnx_metadata(detector_onnx)["threshold"])
    calibration = _split_images(image_manifest, "train", size, params.quantization.calibration_images)
    detector_int8 = quantize_int8(detector_onnx, calibration)
    validation = image_manifest[image_manifest["split"] == "validation"]
    images = _split_images(image_manifest, "validation", size)
    labels = validation["label"].astype(int).to_numpy()
    report: dict[str, Any] = {"calibration_images": len(calibration), "validation_images": len(images)}
    for precision, model in (("fp32", detector_onnx), ("int8", detector_int8)):
        run = onnx_runner(model)
        report[f"f1_{precision}"] = binary_metrics(labels, run(images)[:, 0], threshold)["f1"]
        for batch in (1, 32):
            report[f"images_per_second_{precision}_batch{batch}"] = images_per_second(
                run, images, min(batch, len(images))
            )
    report["f1_change_points"] = 100 * (report["f1_int8"] - report["f1_fp32"])
    for batch in (1, 32):
        report[f"speedup_batch{batch}"] = (
            report[f"images_per_second_int8_batch{batch}"] / report[f"images_per_second_fp32_batch{batch}"]
        )
    report["within_f1_tolerance"] = -report["f1_change_points"] <= 100 * params.quantization.max_f1_drop
    logger.info(
        "int8: F1 %.4f -> %.4f (%+.2f points), %.2fx faster at batch 1, %.2fx at batch 32",
        report["f1_fp32"],
        report["f1_int8"],
        report["f1_change_points"],
        report["speedup_batch1"],
        report["speedup_batch32"],
    )
    return detector_int8, report


def register_detector(
    params: ExportParams,
    detector_onnx: bytes,
    detector_int8_onnx: bytes,
    quantization_report: dict[str, Any],
    image_manifest: pd.DataFrame,
    parity_report: dict[str, Any],
) -> dict[str, Any]:
    """Register the shipped model in MLflow; move the champion alias only if it does not regress.

    The float32 export ships unless ``quantization.ship_int8`` is set and the int8 model lost
    no more F1 than ``quantization.max_f1_drop``.

    Args:
        params: Registered model name, alias and the int8 choice.
        detector_onnx: The parity-checked float32 export.
        detector_int8_onnx: Its int8 variant.
        quantization_report: Output of :func:`quantize_detector`.
        image_manifest: The manifest (both models are scored on its validation images).
        parity_report: Output of :func:`verify_parity`.

    Returns:
        The export report: selection, parity, which precision shipped, and the registry
        decision with its reason.
    """
    ship_int8 = params.quantization.ship_int8 and quantization_report["within_f1_tolerance"]
    if params.quantization.ship_int8 and not ship_int8:
        logger.warning(
            "int8 lost %.2f F1 points (> %.2f accepted): shipping float32",
            -quantization_report["f1_change_points"],
            100 * params.quantization.max_f1_drop,
        )
    shipped = detector_int8_onnx if ship_int8 else detector_onnx
    validation = image_manifest[image_manifest["split"] == "validation"]
    decision = register_and_promote(
        shipped,
        functools.partial(_split_images, image_manifest, "validation"),
        validation["label"].astype(int).to_numpy(),
        params.registered_model_name,
        params.champion_alias,
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
    *evaluation_reports: dict[str, Any],
    names: list[str],
) -> str:
    """The model card of the registered version, also set as its description in the registry.

    Args:
        export_report: Output of :func:`register_detector`.
        quantization_report: Output of :func:`quantize_detector`.
        image_manifest: The manifest (data composition).
        evaluation_reports: One evaluation report per candidate.
        names: The candidates' names, in the same order.

    Returns:
        The card as Markdown.
    """
    evaluation = evaluation_reports[names.index(export_report["candidate"])]
    card = render_model_card(export_report, evaluation, quantization_report, image_manifest)
    registry = export_report["registry"]
    describe_version(registry["registered_model"], registry["version"], card)
    return card
