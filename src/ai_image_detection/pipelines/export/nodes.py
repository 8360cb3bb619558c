"""Nodes of the ``export`` pipeline: pick the candidate, export it to ONNX, prove the export."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ai_image_detection.input_pipeline import make_prediction_dataset
from ai_image_detection.onnx_export import check_parity, export_onnx, onnx_metadata
from ai_image_detection.registry import register_and_promote

logger = logging.getLogger(__name__)


class ExportParams(BaseModel):
    """Parameters of the ``export`` pipeline (``conf/base/parameters_export.yml``)."""

    model_config = ConfigDict(extra="forbid")

    latency_budget_ms: float = Field(gt=0)
    registered_model_name: str
    champion_alias: str
    opset: int = Field(ge=13)
    parity_tolerance: float = Field(gt=0)
    parity_images: int = Field(ge=1)


def select_candidate(params: ExportParams, candidate_comparison: pd.DataFrame) -> dict[str, Any]:
    """Best validation F1 among the candidates whose CPU latency per image fits the budget.

    Args:
        params: The latency budget.
        candidate_comparison: The evaluation's comparison table (F1, threshold, latency per
            candidate).

    Returns:
        ``candidate``, ``threshold``, ``validation_f1`` and ``reason`` (written to the report).

    Raises:
        ValueError: If no candidate fits the budget.
    """
    table = candidate_comparison.set_index("candidate")
    eligible = table[table["ms_per_image"] <= params.latency_budget_ms]
    if eligible.empty:
        latencies = table["ms_per_image"].to_dict()
        raise ValueError(f"no candidate fits the {params.latency_budget_ms:g} ms/image budget: {latencies}")
    chosen = str(eligible["f1"].idxmax())
    f1, latency, threshold = (
        float(v) for v in table.loc[[chosen], ["f1", "ms_per_image", "threshold"]].to_numpy()[0]
    )
    excluded = sorted(set(table.index) - set(eligible.index))
    reason = (
        f"{chosen}: best validation F1 ({f1:.4f}) among the {len(eligible)} of {len(table)} candidates "
        f"within {params.latency_budget_ms:g} ms per image ({latency:.2f} ms, batched CPU)"
        + (f"; over budget: {', '.join(excluded)}" if excluded else "")
    )
    logger.info("selected %s", reason)
    return {"candidate": chosen, "threshold": threshold, "validation_f1": f1, "reason": reason}


def export_selected(
    params: ExportParams, selection: dict[str, Any], data_version: str, *models: keras.Model, names: list[str]
) -> bytes:
    """Export the selected candidate to ONNX with the contract's metadata.

    Args:
        params: The ONNX opset.
        selection: Output of :func:`select_candidate`.
        data_version: DVC hash of the manifest.
        models: The trained candidates.
        names: Their names, in the same order.

    Returns:
        The serialised ONNX model (threshold, class names, input size, MLflow run id and
        data version in its metadata).
    """
    run = mlflow.active_run()
    metadata = {
        "candidate": selection["candidate"],
        "threshold": repr(float(selection["threshold"])),
        "mlflow_run_id": run.info.run_id if run else "",
        "data_version": data_version,
    }
    return export_onnx(models[names.index(selection["candidate"])], params.opset, metadata)


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
    paths = (
        image_manifest.loc[image_manifest["split"] == "validation", "path"]
        .head(params.parity_images)
        .tolist()
    )
    images = np.concatenate(
        [batch.numpy() for batch in make_prediction_dataset(paths, int(model.input_shape[1]), 32)]
    )
    difference = check_parity(model, detector_onnx, images, params.parity_tolerance)  # raises on a mismatch
    logger.info("ONNX parity: max |Keras - ONNX| = %.3g on %d validation images", difference, len(images))
    return {
        **selection,
        "parity_images": len(images),
        "parity_max_abs_difference": difference,
        "parity_tolerance": params.parity_tolerance,
    }


def register_detector(
    params: ExportParams, detector_onnx: bytes, image_manifest: pd.DataFrame, parity_report: dict[str, Any]
) -> dict[str, Any]:
    """Register the export in MLflow and move the champion alias only if it does not regress.

    Args:
        params: Registered model name and alias.
        detector_onnx: The parity-checked export.
        image_manifest: The manifest (both models are scored on its validation images).
        parity_report: Output of :func:`verify_parity`.

    Returns:
        The export report: selection, parity and the registry decision with its reason.
    """
    validation = image_manifest[image_manifest["split"] == "validation"]
    size = int(onnx_metadata(detector_onnx)["input_height"])
    images = np.concatenate(
        [b.numpy() for b in make_prediction_dataset(validation["path"].tolist(), size, 64)]
    )
    decision = register_and_promote(
        detector_onnx,
        images,
        validation["label"].astype(int).to_numpy(),
        params.registered_model_name,
        params.champion_alias,
    )
    return {**parity_report, "registry": asdict(decision)}
