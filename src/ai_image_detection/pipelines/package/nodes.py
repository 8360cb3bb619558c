"""Nodes of the ``package`` pipeline: import ``models:/<name>@champion`` into the BentoML store."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import bentoml
import mlflow.onnx
from bentoml.exceptions import NotFound
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict

from ai_image_detection.contract import MAX_TILES_KEY, THRESHOLD_AI_KEY, THRESHOLD_HUMAN_KEY, THRESHOLD_KEY
from ai_image_detection.onnx_runtime import onnx_metadata

logger = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
"""The file name the service loads from the BentoML model's folder."""


class PackageParams(BaseModel):
    """Parameters of the ``package`` pipeline (``conf/base/parameters_package.yml``)."""

    model_config = ConfigDict(extra="forbid")

    registered_model_name: str
    champion_alias: str
    bentoml_model_name: str


def _latest_sha256(name: str) -> str | None:
    """The ONNX digest of the newest BentoML model called ``name``, or None if there is none."""
    try:
        return str(bentoml.models.get(f"{name}:latest").info.metadata.get("sha256"))
    except NotFound:
        return None


def import_champion(params: PackageParams) -> dict[str, Any]:
    """Copy the champion's ONNX model into the BentoML store with its metadata, unless already there.

    The newest BentoML model of that name is what the service serves, so a new store version is
    made whenever the champion differs from it (by the ONNX file's SHA-256), and nothing is
    done when it is the same.

    Args:
        params: Registry name, alias and the BentoML model name.

    Returns:
        The package report: BentoML tag, registry version, run id, digest, input size,
        threshold and whether a new store version was made.

    Raises:
        ValueError: If the registry has no model under that alias (run the export pipeline first).
    """
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(params.registered_model_name, params.champion_alias)
    except MlflowException as error:
        raise ValueError(
            f"no '{params.champion_alias}' in the MLflow registry for {params.registered_model_name!r} "
            f"(tracking URI {mlflow.get_tracking_uri()}): run `kedro run` (the export pipeline) first"
        ) from error
    # by version, not alias: the alias may move while this runs, and the metadata must match the bytes
    proto = mlflow.onnx.load_model(f"models:/{params.registered_model_name}/{version.version}")
    data = proto.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()
    contract = onnx_metadata(data)
    metadata: dict[str, str] = {
        "registered_model": params.registered_model_name,
        "registered_version": str(version.version),
        "alias": params.champion_alias,
        "mlflow_run_id": str(version.run_id),
        "sha256": digest,
        **{
            key: contract[key]
            for key in (
                "input_height",
                "input_width",
                THRESHOLD_KEY,
                THRESHOLD_HUMAN_KEY,
                THRESHOLD_AI_KEY,
                MAX_TILES_KEY,
                "generator_families",
                "unseen_families",
                "data_version",
            )
            if key in contract
        },
    }
    if _latest_sha256(params.bentoml_model_name) == digest:
        tag = str(bentoml.models.get(f"{params.bentoml_model_name}:latest").tag)
        logger.info("%s already holds %s v%s", tag, params.registered_model_name, version.version)
        return {**metadata, "bentoml_tag": tag, "imported": False}
    with bentoml.models.create(params.bentoml_model_name, metadata=metadata) as model:
        Path(model.path_of(MODEL_FILE)).write_bytes(data)
    logger.info("imported %s v%s as %s", params.registered_model_name, version.version, model.tag)
    return {**metadata, "bentoml_tag": str(model.tag), "imported": True}
