"""The MLflow registry: register the ONNX detector, move ``champion`` only on no regression.

The challenger and the current champion are scored on the *same* validation images, each at
its own input size and threshold (from its ONNX metadata), so the comparison holds even when the
champion was trained on another data version or at another resolution. The alias moves only
when the challenger is at least as good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import onnxruntime as ort
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ai_image_detection.metrics import binary_metrics
from ai_image_detection.onnx_export import onnx_metadata, onnx_predict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryDecision:
    """What happened in the registry, for the export report."""

    registered_model: str
    version: str
    challenger_f1: float
    champion_version: str | None
    champion_f1: float | None
    alias_moved: bool
    reason: str


ValidationImages = Callable[[int], np.ndarray]
"""The validation images ``[N, S, S, 3]`` raw RGB, centre-cropped to a model's input size ``S``."""


def onnx_f1(detector_onnx: bytes, validation_images: ValidationImages, labels: np.ndarray) -> float:
    """F1 of an ONNX detector on the validation images at its own input size and threshold (metadata)."""
    metadata = onnx_metadata(detector_onnx)
    images = validation_images(int(metadata["input_height"]))
    probabilities = onnx_predict(detector_onnx, images)[:, 0]
    return binary_metrics(labels, probabilities, float(metadata["threshold"]))["f1"]


def register_and_promote(
    detector_onnx: bytes,
    validation_images: ValidationImages,
    labels: np.ndarray,
    model_name: str,
    alias: str,
) -> RegistryDecision:
    """Score the detector and the current champion, register the detector, move ``alias`` unless it regresses.

    Both are scored before anything is registered, each on the same validation images cropped to
    its own input size, so a champion of another architecture or resolution compares fairly and
    a failure leaves the registry untouched.

    Args:
        detector_onnx: The exported detector (its metadata holds ``input_height`` and ``threshold``).
        validation_images: The validation images at a given input size, the same images for both models.
        labels: Their labels.
        model_name: Registered model name (e.g. ``ai-image-detector``).
        alias: The alias serving follows (``champion``).

    Returns:
        The decision, with both F1 scores and the reason.
    """
    client = MlflowClient()
    challenger_f1 = onnx_f1(detector_onnx, validation_images, labels)
    champion = _scored_champion(client, model_name, alias, validation_images, labels)
    info = mlflow.onnx.log_model(
        onnx.load_from_string(detector_onnx),
        name="detector",
        registered_model_name=model_name,
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort.__version__}"],
    )
    version = str(info.registered_model_version)
    client.set_model_version_tag(model_name, version, "validation_f1", f"{challenger_f1:.6f}")
    for key, value in onnx_metadata(detector_onnx).items():
        client.set_model_version_tag(model_name, version, key, value)
    if champion is None:
        client.set_registered_model_alias(model_name, alias, version)
        reason = f"no {alias} yet: version {version} becomes {alias}"
        return RegistryDecision(model_name, version, challenger_f1, None, None, True, reason)
    champion_version, champion_f1 = champion
    moved = challenger_f1 >= champion_f1
    if moved:
        client.set_registered_model_alias(model_name, alias, version)
    verdict = "moves to" if moved else "stays on"
    reason = (
        f"{alias} {verdict} version {version if moved else champion_version}: challenger v{version} F1 "
        f"{challenger_f1:.4f} vs {alias} v{champion_version} F1 {champion_f1:.4f} on the same "
        f"{len(labels)} validation images" + ("" if moved else " (no silent regression)")
    )
    logger.info(reason)
    return RegistryDecision(model_name, version, challenger_f1, champion_version, champion_f1, moved, reason)


def _scored_champion(
    client: MlflowClient,
    model_name: str,
    alias: str,
    validation_images: ValidationImages,
    labels: np.ndarray,
) -> tuple[str, float] | None:
    """The current ``alias`` version and its F1 on the validation images, or None when there is none."""
    try:
        current = client.get_model_version_by_alias(model_name, alias)
    except MlflowException:
        return None
    champion_onnx = mlflow.onnx.load_model(f"models:/{model_name}/{current.version}")
    return str(current.version), onnx_f1(champion_onnx.SerializeToString(), validation_images, labels)


def describe_version(model_name: str, version: str, description: str) -> None:
    """Set a registered version's description (the model card, shown in the MLflow UI)."""
    MlflowClient().update_model_version(model_name, version, description=description)
