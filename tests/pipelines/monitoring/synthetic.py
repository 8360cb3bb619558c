"""Synthetic monitoring inputs: a reference, prediction-log lines and feedback records of the contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ai_image_detection.contract import verdict
from ai_image_detection.pipelines.monitoring.params import MonitoringParams

MODEL = "ai-image-detector"
VERSION = "3"
BAND = (0.3, 0.7)
PARAMS = MonitoringParams(
    window_days=None,
    min_predictions=50,
    psi_bins=10,
    psi_bands={"moderate": 0.1, "major": 0.25},
    retrain_when={
        "probability_psi": 0.25,
        "inconclusive_rise": 0.15,
        "feedback_error_rate": 0.2,
        "min_feedback": 5,
        "input_psi": None,
    },
)


def scores(rng: np.random.Generator, size: int, ai_share: float = 0.5) -> np.ndarray:
    """Calibrated-looking P(AI): humans near 0.15, AI images near 0.85."""
    is_ai = rng.random(size) < ai_share
    return np.clip(np.where(is_ai, rng.normal(0.85, 0.08, size), rng.normal(0.15, 0.08, size)), 0.001, 0.999)


def reference_table(size: int = 400, seed: int = 0) -> pd.DataFrame:
    """A monitoring reference with the columns the export pipeline writes (``REFERENCE_COLUMNS``)."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "label": (rng.random(size) < 0.5).astype(int),
            "generator": "camera/original",
            "probability_ai": scores(rng, size),
            "width": rng.choice([256, 320], size),
            "height": 256,
            "format": rng.choice(["JPEG", "PNG"], size, p=[0.7, 0.3]),
            "bytes": rng.normal(60_000, 8_000, size).round(),
            "tiles": 1,
            "mean_luma": rng.normal(115, 20, size),
            "std_luma": rng.normal(55, 8, size),
            "model_name": MODEL,
            "model_version": VERSION,
            "candidate": "small_cnn",
            "threshold_human": BAND[0],
            "threshold_ai": BAND[1],
            "shipped_precision": "fp32",
        }
    )
    return table


def served_reference(table: pd.DataFrame | None = None, note: str | None = None) -> dict[str, Any]:
    """What ``served_model_reference`` loads for version :data:`VERSION`."""
    return {
        "model_name": MODEL,
        "model_version": VERSION,
        "alias": "champion",
        "run_id": "0123abcd",
        "artifact": "runs:/0123abcd/monitoring/monitoring_reference.parquet",
        "table": table,
        "note": note,
    }


def prediction_lines(
    size: int,
    seed: int = 1,
    *,
    version: str = VERSION,
    ai_share: float = 0.5,
    shift: float = 0.0,
    start: str = "2026-12-01T08:00:00Z",
) -> list[dict[str, Any]]:
    """Log lines of the contract; ``shift`` moves P(AI) (clipped to [0, 1]) and makes images larger."""
    rng = np.random.default_rng(seed)
    probabilities = np.clip(scores(rng, size, ai_share) + shift, 0.001, 0.999)
    times = pd.Timestamp(start) + pd.to_timedelta(np.arange(size) * 60, unit="s")
    lines = []
    for index, (probability, time) in enumerate(zip(probabilities, times, strict=True)):
        declared = index % 10 == 0
        lines.append(
            {
                "time": time.isoformat().replace("+00:00", "Z"),
                "prediction_id": f"p-{seed}-{index:05d}",
                "endpoint": "predict",
                "model_name": MODEL,
                "model_version": version,
                "probability_ai": float(probability),
                "label": "ai" if declared else verdict(float(probability), *BAND),
                "decided_by": "provenance" if declared else "pixels",
                "threshold_human": BAND[0],
                "threshold_ai": BAND[1],
                "closest_family": None,
                "closest_family_probability": None,
                "width": int(rng.choice([256, 320])) * (4 if shift else 1),
                "height": 256 * (4 if shift else 1),
                "format": str(rng.choice(["JPEG", "PNG"], p=[0.7, 0.3])),
                "bytes": int(rng.normal(60_000, 8_000) * (6 if shift else 1)),
                "tiles": 1,
                "mean_luma": float(rng.normal(115, 20)),
                "std_luma": float(rng.normal(55, 8)),
                "latency_ms": float(rng.gamma(4, 10)),
                "provenance_sources": ["c2pa"] if declared else [],
                "declares_ai": declared,
            }
        )
    return lines


def write_log(folder: Path, lines: list[dict[str, Any]], per_file: int) -> list[Path]:
    """Write ``lines`` as the service's rotating log would: ``predictions.jsonl.N`` holds the oldest."""
    chunks = [lines[start : start + per_file] for start in range(0, len(lines), per_file)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for age, chunk in enumerate(reversed(chunks)):
        name = "predictions.jsonl" if age == 0 else f"predictions.jsonl.{age}"
        (folder / name).write_text("".join(json.dumps(line) + "\n" for line in chunk), encoding="utf-8")
        paths.append(folder / name)
    return paths


def feedback_record(
    index: int,
    claimed: str,
    verdict_given: str,
    *,
    version: str = VERSION,
    consent: bool = False,
    decided_by: str = "pixels",
) -> dict[str, Any]:
    """A feedback record of the contract about a prediction of ``version`` answered ``verdict_given``."""
    feedback_id = f"f-{index:04d}"
    return {
        "feedback_id": feedback_id,
        "prediction_id": f"p-{index:04d}",
        "received_at": f"2026-12-01T12:{index % 60:02d}:00Z",
        "claimed_label": claimed,
        "note": "<script>alert('x')</script>" if index == 0 else None,
        "consent": consent,
        "image_key": f"feedback/images/{feedback_id}.jpg" if consent else None,
        "image_sha256": "ab" * 32 if consent else None,
        "image_format": "JPEG" if consent else None,
        "prediction": {
            "probability_ai": 0.9 if verdict_given == "ai" else 0.1,
            "label": verdict_given,
            "decided_by": decided_by,
            "threshold_human": BAND[0],
            "threshold_ai": BAND[1],
            "closest_family": None,
            "model_name": MODEL,
            "model_version": version,
            "width": 256,
            "height": 256,
            "format": "JPEG",
            "provenance_sources": [],
            "declares_ai": False,
        },
    }


def feedback_records(version: str = VERSION, other: str = "2") -> dict[str, dict[str, Any]]:
    """Ten feedback records on ``version`` and two on ``other``, keyed as the store's partitions.

    Of the ten, 3 confirm an error, 1 is about an inconclusive answer, 4 come with consent. Keys
    are ``<date>/<feedback_id>``.
    """
    specs = [
        ("human", "ai", True),
        ("ai", "human", False),
        ("human", "ai", False),
        ("ai", "inconclusive", True),
        ("ai", "ai", False),
        ("human", "human", True),
        ("ai", "ai", False),
        ("human", "human", False),
        ("ai", "ai", True),
        ("human", "human", False),
    ]
    records = [
        feedback_record(index, claimed, given, version=version, consent=consent)
        for index, (claimed, given, consent) in enumerate(specs)
    ]
    records += [feedback_record(20 + index, "ai", "human", version=other) for index in range(2)]
    return {f"2026-12-01/{record['feedback_id']}": record for record in records}
