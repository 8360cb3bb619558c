"""Feedback records (the service's ``POST /feedback``, kept on S3) as counts and confirmed errors.

A record holds what the user claims the image is (``claimed_label``) and the prediction it is
about (its model version, verdict and how it was decided). A feedback *confirms an error* when
the verdict committed to a class (``ai`` or ``human``, not ``inconclusive``) and the user claims
the other one. Feedback is self-selected (people write in when they think the answer is wrong),
so the share of confirmed errors among feedback is not the model's error rate; confirmed errors
per logged prediction is a lower bound of it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pandas as pd

from ai_image_detection.contract import VERDICTS

logger = logging.getLogger(__name__)

CLAIMED_LABELS = ("ai", "human")
COMMITTED_VERDICTS = ("ai", "human")
FEEDBACK_COLUMNS = [
    "feedback_id",
    "received_at",
    "claimed_label",
    "consent",
    "stored_image",
    "model_name",
    "model_version",
    "verdict",
    "decided_by",
]


def feedback_table(records: Mapping[str, Callable[[], Any] | Mapping[str, Any]]) -> tuple[pd.DataFrame, int]:
    """One row per well-formed feedback record; the malformed ones are counted and skipped.

    Args:
        records: Partition id → record, or a function that loads it (a ``PartitionedDataset``).

    Returns:
        The table (:data:`FEEDBACK_COLUMNS`, ``received_at`` as UTC timestamps) and the number
        of records skipped (not a JSON object, no claimed label, or no prediction).
    """
    rows, skipped = [], 0
    for key, loader in sorted(records.items()):
        record = loader() if callable(loader) else loader
        prediction = record.get("prediction") if isinstance(record, Mapping) else None
        if not isinstance(prediction, Mapping) or record.get("claimed_label") not in CLAIMED_LABELS:
            logger.warning("feedback record %s skipped: not a feedback record of the contract", key)
            skipped += 1
            continue
        rows.append(
            {
                "feedback_id": str(record.get("feedback_id", key)),
                "received_at": record.get("received_at"),
                "claimed_label": record["claimed_label"],
                "consent": bool(record.get("consent", False)),
                "stored_image": bool(record.get("image_key")),
                "model_name": str(prediction.get("model_name")),
                "model_version": str(prediction.get("model_version")),
                "verdict": prediction.get("label"),
                "decided_by": prediction.get("decided_by"),
            }
        )
    table = pd.DataFrame(rows, columns=FEEDBACK_COLUMNS)
    table["received_at"] = pd.to_datetime(table["received_at"], utc=True, format="ISO8601", errors="coerce")
    return table, skipped


def _counts(values: pd.Series, names: tuple[str, ...]) -> dict[str, int]:
    """How many of each of ``names`` (zero included)."""
    return {name: int((values == name).sum()) for name in names}


def confirmed_errors(table: pd.DataFrame) -> pd.Series:
    """Whether each feedback confirms an error: a committed verdict and the other label claimed."""
    return table["verdict"].isin(COMMITTED_VERDICTS) & (table["claimed_label"] != table["verdict"])


def version_feedback(table: pd.DataFrame) -> dict[str, Any]:
    """The figures of the feedback on one model version.

    Args:
        table: That version's rows of :func:`feedback_table`.

    Returns:
        ``count``, ``claimed`` (per label), ``on_verdict`` (feedback per verdict answered),
        ``confirmed_errors``, ``confirmed_error_rate`` (over all its feedback; None without
        feedback), ``errors_by_verdict`` and ``errors_decided_by_provenance``.
    """
    errors = confirmed_errors(table)
    return {
        "count": len(table),
        "claimed": _counts(table["claimed_label"], CLAIMED_LABELS),
        "on_verdict": _counts(table["verdict"], VERDICTS),
        "confirmed_errors": int(errors.sum()),
        "confirmed_error_rate": float(errors.mean()) if len(table) else None,
        "errors_by_verdict": _counts(table.loc[errors, "verdict"], COMMITTED_VERDICTS),
        "errors_decided_by_provenance": int((errors & (table["decided_by"] == "provenance")).sum()),
    }


def feedback_figures(table: pd.DataFrame, model_name: str, model_version: str) -> dict[str, Any]:
    """Counts over every feedback, and the figures of the monitored model version's own.

    Args:
        table: Output of :func:`feedback_table` (already restricted to the window).
        model_name: The monitored registered model.
        model_version: Its version.

    Returns:
        ``total``, ``with_consent``, ``with_image``, ``claimed`` (per label), ``this_version``
        (:func:`version_feedback`) and ``other_versions`` (feedback count per other version).
    """
    mine = (table["model_name"] == model_name) & (table["model_version"] == model_version)
    others = table.loc[~mine]
    return {
        "total": len(table),
        "with_consent": int(table["consent"].sum()),
        "with_image": int(table["stored_image"].sum()),
        "claimed": _counts(table["claimed_label"], CLAIMED_LABELS),
        "this_version": version_feedback(table.loc[mine]),
        "other_versions": {
            f"{name} v{version}": len(part)
            for (name, version), part in others.groupby(["model_name", "model_version"], sort=True)
        },
    }
