"""The monitoring reference of the registered version: what it answered on validation, and on what.

Logged with the MLflow run that registers the version (``monitoring/monitoring_reference.parquet``),
so that the ``monitoring`` pipeline compares the service's traffic with the validation set of the
very version that serves it (found through the registry alias), not with whatever ran last.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from ai_image_detection.contract import MAX_TILES_KEY, THRESHOLD_AI_KEY, THRESHOLD_HUMAN_KEY, THRESHOLD_KEY
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.scoring import file_tiles
from ai_image_detection.tiling import crop_luma

logger = logging.getLogger(__name__)

REFERENCE_COLUMNS = [
    "label",
    "generator",
    "probability_ai",
    "width",
    "height",
    "format",
    "bytes",
    "tiles",
    "mean_luma",
    "std_luma",
    "model_name",
    "model_version",
    "candidate",
    "threshold_human",
    "threshold_ai",
    "shipped_precision",
]
"""One row per validation image: its calibrated P(AI) and the input statistics the service logs
(``bytes`` is the original file's size, ``tiles`` and the luma those of the scored crops), then
the version's facts repeated on every row so the file describes itself."""


def _input_statistics(path: str, source_path: str, size: int, max_tiles: int) -> dict[str, Any]:
    """File size, tiles and luma of one image, cut as the service cuts an upload of it."""
    tiles = file_tiles(path, size, max_tiles)
    mean_luma, std_luma = crop_luma(tiles)
    original = Path(source_path) if Path(source_path).is_file() else Path(path)
    return {
        "bytes": original.stat().st_size,
        "tiles": len(tiles),
        "mean_luma": mean_luma,
        "std_luma": std_luma,
    }


def build_monitoring_reference(
    export_report: dict[str, Any],
    detector_onnx: bytes,
    image_manifest: pd.DataFrame,
    *predictions: pd.DataFrame,
    names: list[str],
) -> pd.DataFrame:
    """The registered version's validation scores and input statistics (the monitoring reference).

    The scores are the evaluation's calibrated P(AI) of the selected candidate, which the ONNX
    export reproduces within the parity tolerance; when the int8 model ships
    (``shipped_precision``), they are the float32 model's.

    Args:
        export_report: Output of ``register_detector`` (candidate, registry version, precision).
        detector_onnx: The float32 export (input size, tiling and band from its metadata).
        image_manifest: The manifest (width, height and format of each image).
        predictions: One evaluation ``predictions`` table per candidate, in ``names`` order.
        names: The candidates' names.

    Returns:
        One row per validation image, :data:`REFERENCE_COLUMNS`.
    """
    candidate, registry = export_report["candidate"], export_report["registry"]
    metadata = onnx_metadata(detector_onnx)
    size, max_tiles = int(metadata["input_height"]), int(metadata[MAX_TILES_KEY])
    scored = predictions[names.index(candidate)]
    validation = scored.loc[
        scored["split"] == "validation", ["path", "source_path", "label", "generator", "probability_ai"]
    ]
    validation = validation.merge(
        image_manifest[["path", "width", "height", "format"]], on="path", how="left"
    )
    statistics = pd.DataFrame(
        [
            _input_statistics(path, source, size, max_tiles)
            for path, source in tqdm(
                validation[["path", "source_path"]].itertuples(index=False),
                total=len(validation),
                desc="monitoring reference",
                unit="image",
                leave=False,
            )
        ],
        columns=["bytes", "tiles", "mean_luma", "std_luma"],
    )
    reference = pd.concat([validation.reset_index(drop=True), statistics], axis=1).assign(
        model_name=registry["registered_model"],
        model_version=str(registry["version"]),
        candidate=candidate,
        threshold_human=float(metadata.get(THRESHOLD_HUMAN_KEY, metadata[THRESHOLD_KEY])),
        threshold_ai=float(metadata.get(THRESHOLD_AI_KEY, metadata[THRESHOLD_KEY])),
        shipped_precision=export_report["shipped_precision"],
    )
    logger.info(
        "monitoring reference of %s v%s: %d validation images",
        registry["registered_model"],
        registry["version"],
        len(reference),
    )
    return reference[REFERENCE_COLUMNS]
