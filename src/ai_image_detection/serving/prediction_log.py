"""The prediction log: one JSON line per verdict, without pixels, for the ``monitoring`` pipeline.

Lines are handed to a background thread (:class:`logging.handlers.QueueHandler` and
:class:`~logging.handlers.QueueListener`), so that ``/predict`` never waits for the disk; that thread
writes ``predictions.jsonl`` and rotates it by size into ``predictions.jsonl.1`` ... ``.N``, deleting
the oldest, so the log never holds more than ``(N + 1)`` times the rotation size.
"""

from __future__ import annotations

import logging
import queue
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener, RotatingFileHandler
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from ai_image_detection.serving.answers import ImageVerdict

LOG_FILE_NAME = "predictions.jsonl"
Endpoint = Literal["predict", "predict_batch", "annotate", "explain"]


class PredictionRecord(BaseModel):
    """What is kept about one verdict: the numbers, the image's facts, never its pixels."""

    time: str
    prediction_id: str
    endpoint: Endpoint
    model_name: str
    model_version: str
    probability_ai: float
    label: str
    decided_by: str
    threshold_human: float
    threshold_ai: float
    closest_family: str | None
    closest_family_probability: float | None
    width: int
    height: int
    format: str
    bytes: int
    tiles: int
    mean_luma: float
    std_luma: float
    latency_ms: float
    provenance_sources: list[str]
    declares_ai: bool


def prediction_record(
    answer: ImageVerdict, endpoint: Endpoint, size_bytes: int, luma: tuple[float, float], latency_ms: float
) -> PredictionRecord:
    """The log's line for a verdict: its numbers and the image's statistics, no pixels.

    Args:
        answer: The verdict.
        endpoint: Which endpoint answered it.
        size_bytes: The uploaded file's size.
        luma: Mean and standard deviation of the scored crops' luma (``tiling.crop_luma``).
        latency_ms: From the upload's arrival at the decoder to the verdict.

    Returns:
        The record.
    """
    same_names = answer.model_dump(
        include={
            "prediction_id",
            "model_name",
            "model_version",
            "probability_ai",
            "label",
            "decided_by",
            "closest_family",
            "closest_family_probability",
            "width",
            "height",
            "format",
            "tiles",
        }
    )
    return PredictionRecord(
        **same_names,
        time=utc_now(),
        endpoint=endpoint,
        threshold_human=answer.thresholds.human,
        threshold_ai=answer.thresholds.ai,
        bytes=size_bytes,
        mean_luma=round(luma[0], 3),
        std_luma=round(luma[1], 3),
        latency_ms=round(latency_ms, 2),
        provenance_sources=sorted({evidence.source for evidence in answer.provenance.evidence}),
        declares_ai=answer.provenance.declares_ai,
    )


def utc_now() -> str:
    """The current time as ISO 8601 UTC with milliseconds (``2026-12-01T10:00:00.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class PredictionLog:
    """Appends :class:`PredictionRecord` lines to ``<directory>/predictions.jsonl``, off the request path."""

    def __init__(self, directory: str, max_bytes: int, backups: int) -> None:
        """Open the log (creating its directory), or log nothing when ``directory`` is empty.

        Args:
            directory: Where the log lives; empty to turn logging off.
            max_bytes: Size at which the file is rotated.
            backups: Rotated files kept.
        """
        self.path = Path(directory) / LOG_FILE_NAME if directory else None
        self._logger = logging.getLogger(f"{__name__}.{id(self)}")
        self._logger.propagate = False  # the lines go to the file only, not to the service's log
        self._logger.setLevel(logging.INFO)
        self._listener: QueueListener | None = None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = RotatingFileHandler(self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        writer.setFormatter(logging.Formatter("%(message)s"))
        lines: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self._logger.addHandler(QueueHandler(lines))
        self._listener = QueueListener(lines, writer)
        self._listener.start()

    def write(self, record: PredictionRecord) -> None:
        """Queue one line (returns at once; the background thread writes it)."""
        if self._listener is not None:
            self._logger.info(record.model_dump_json())

    def close(self) -> None:
        """Write what is queued and close the file."""
        if self._listener is not None:
            self._listener.stop()
            for handler in self._listener.handlers:
                handler.close()
            self._listener = None
