"""Nodes of the ``monitoring`` pipeline: the service's verdicts and feedback against its reference.

The reference is the served model version's own validation set, as the export pipeline logged
it with that version (``monitoring_reference.parquet``: calibrated P(AI) and input statistics of
each validation image). Predictions of other model versions are summarised apart, never mixed
into the drift figures. The statistics are in :mod:`.drift`, the feedback in :mod:`.feedback`,
the figures in :mod:`.charts` and the HTML in :mod:`.report`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ai_image_detection.contract import VERDICTS, verdict
from ai_image_detection.pipelines.monitoring import charts, flag, report
from ai_image_detection.pipelines.monitoring.drift import compare_categorical, compare_numeric
from ai_image_detection.pipelines.monitoring.feedback import feedback_figures, feedback_table
from ai_image_detection.pipelines.monitoring.params import MonitoringParams
from ai_image_detection.serving.prediction_log import PredictionRecord

logger = logging.getLogger(__name__)

NO_PREDICTIONS = "no predictions logged yet"
NUMERIC_INPUTS = ("width", "height", "bytes", "mean_luma", "std_luma")
"""Input statistics compared with the reference, when both have them."""
CATEGORICAL_INPUTS = ("format",)
LOG_COLUMNS = list(PredictionRecord.model_fields)
"""The prediction log's fields: the service's :class:`PredictionRecord`, the one contract of the log."""


def reference_table(served_model_reference: Mapping[str, Any]) -> pd.DataFrame:
    """The reference's rows (empty when the model version has none)."""
    table = served_model_reference.get("table")
    return table if isinstance(table, pd.DataFrame) else pd.DataFrame()


def _model_label(served_model_reference: Mapping[str, Any]) -> str:
    return f"{served_model_reference['model_name']} v{served_model_reference['model_version']}"


def _as_text(value: Any) -> str:
    """A name or version as text: ``3`` and ``3.0`` (a number in a column with gaps) are ``"3"``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unknown"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def normalise_log(prediction_log: pd.DataFrame) -> pd.DataFrame:
    """The log with every field of :data:`LOG_COLUMNS` (missing ones empty), ``time`` as UTC, oldest first."""
    log = prediction_log.reindex(columns=LOG_COLUMNS)
    log["time"] = pd.to_datetime(log["time"], utc=True, format="ISO8601", errors="coerce")
    for column in ("model_name", "model_version"):
        log[column] = log[column].map(_as_text)
    for column in ("probability_ai", "latency_ms", *NUMERIC_INPUTS):
        log[column] = pd.to_numeric(log[column], errors="coerce")
    return log.sort_values("time", kind="stable").reset_index(drop=True)


def _version_summary(name: str, version: str, part: pd.DataFrame) -> dict[str, Any]:
    """A few figures of another model version's predictions (no drift: its reference is not loaded)."""
    return {
        "model": f"{name} v{version}",
        "predictions": len(part),
        "inconclusive_share": float((part["label"] == "inconclusive").mean()),
        "mean_probability_ai": float(part["probability_ai"].mean()),
        "first": part["time"].min().isoformat() if part["time"].notna().any() else None,
        "last": part["time"].max().isoformat() if part["time"].notna().any() else None,
    }


def select_monitored_predictions(
    prediction_log: pd.DataFrame, served_model_reference: dict[str, Any], params: MonitoringParams
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The served model version's predictions in the window; the other versions summarised apart.

    Args:
        prediction_log: Every logged verdict (``predictions.jsonl`` and its rotations; may be empty).
        served_model_reference: The monitored model version and its reference.
        params: The window (``window_days`` before the log's latest line).

    Returns:
        The monitored predictions (:data:`LOG_COLUMNS`) and the scope: ``window`` (``days``,
        ``start``, ``end``), ``logged`` (lines of every version in the window) and
        ``other_versions`` (per other model version: predictions, inconclusive share, mean P(AI),
        first and last time).
    """
    log = normalise_log(prediction_log)
    end = log["time"].max() if log["time"].notna().any() else None
    start = end - pd.Timedelta(days=params.window_days) if end is not None and params.window_days else None
    if start is not None:
        log = log[log["time"] >= start]
    name, version = str(served_model_reference["model_name"]), str(served_model_reference["model_version"])
    mine = (log["model_name"] == name) & (log["model_version"] == version)
    others = [
        _version_summary(str(other_name), str(other_version), part)
        for (other_name, other_version), part in log[~mine].groupby(
            ["model_name", "model_version"], sort=True
        )
    ]
    logger.info("%d logged predictions in the window, %d of %s v%s", len(log), int(mine.sum()), name, version)
    scope = {
        "window": {
            "days": params.window_days,
            "start": start.isoformat() if start is not None else None,
            "end": end.isoformat() if end is not None else None,
        },
        "logged": len(log),
        "other_versions": others,
    }
    return log[mine].reset_index(drop=True), scope


def _shares(values: pd.Series, names: tuple[str, ...]) -> dict[str, float | None]:
    return {name: float((values == name).mean()) if len(values) else None for name in names}


def _reference_answers(reference: pd.DataFrame) -> pd.Series:
    """The answer to each reference image at the model version's own band (none without a band)."""
    if reference.empty or not {"threshold_human", "threshold_ai"} <= set(reference.columns):
        return pd.Series(dtype=str)
    return pd.Series(
        [
            verdict(p, low, high)
            for p, low, high in reference[["probability_ai", "threshold_human", "threshold_ai"]].itertuples(
                index=False
            )
        ],
        index=reference.index,
    )


def verdicts_by_format(live: pd.DataFrame, reference: pd.DataFrame) -> list[dict[str, Any]]:
    """Per upload format, the answers of the live traffic next to those on the reference's images.

    A format whose live answers lean to "ai" far more than its reference does is how a storage
    shortcut shows in production (a model that had learned JPEG traces as "human" answered "ai"
    to a quarter of lossless human photos; evaluation's per-format table is its offline twin).

    Args:
        live: The monitored predictions (``format``, ``label``).
        reference: The served version's reference (``format``, its band and scores); may be empty.

    Returns:
        One row per format seen live or in the reference, most predictions first: ``format``,
        ``predictions``, ``verdict_shares`` and ``reference_images``, ``reference_verdict_shares``
        (None where there is nothing to share out).
    """
    answers = _reference_answers(reference)
    reference_formats = (
        reference["format"].map(_as_text)
        if "format" in reference.columns
        else pd.Series("unknown", index=reference.index)
    )
    live_formats = live["format"].map(_as_text)
    rows = []
    for stored in sorted(set(live_formats) | set(reference_formats)):
        mine = live.loc[live_formats == stored, "label"]
        theirs = answers[reference_formats[answers.index] == stored]
        rows.append(
            {
                "format": stored,
                "predictions": len(mine),
                "verdict_shares": _shares(mine, VERDICTS),
                "reference_images": int((reference_formats == stored).sum()),
                "reference_verdict_shares": _shares(theirs, VERDICTS),
            }
        )
    return sorted(rows, key=lambda row: -row["predictions"])


def summarise_predictions(
    monitored_predictions: pd.DataFrame, served_model_reference: dict[str, Any]
) -> dict[str, Any]:
    """What the monitored model version answered: verdict shares, provenance, latency.

    Args:
        monitored_predictions: Output of :func:`select_monitored_predictions`.
        served_model_reference: The model version and its reference (the reference's verdict shares).

    Returns:
        ``count``, ``verdict_counts``, ``verdict_shares`` (and ``reference_verdict_shares``),
        ``by_format`` (:func:`verdicts_by_format`),
        ``inconclusive_share``, ``declared_by_provenance_share`` (verdicts decided by a valid AI
        claim), ``provenance_found_share``, ``endpoints``, ``latency_ms`` (p50, p95), ``first``,
        ``last`` and ``note`` (``"no predictions logged yet"`` when there are none).
    """
    live = monitored_predictions
    reference = reference_table(served_model_reference)
    found = live["provenance_sources"].map(lambda sources: isinstance(sources, list) and len(sources) > 0)
    latency = live["latency_ms"].dropna()
    return {
        "count": len(live),
        "verdict_counts": {name: int((live["label"] == name).sum()) for name in VERDICTS},
        "verdict_shares": _shares(live["label"], VERDICTS),
        "reference_verdict_shares": _shares(_reference_answers(reference), VERDICTS),
        "by_format": verdicts_by_format(live, reference),
        "inconclusive_share": float((live["label"] == "inconclusive").mean()) if len(live) else None,
        "declared_by_provenance_share": float((live["decided_by"] == "provenance").mean())
        if len(live)
        else None,
        "provenance_found_share": float(found.mean()) if len(live) else None,
        "endpoints": {str(k): int(v) for k, v in live["endpoint"].value_counts().items()},
        "latency_ms": {
            "p50": float(np.percentile(latency, 50)) if len(latency) else None,
            "p95": float(np.percentile(latency, 95)) if len(latency) else None,
        },
        "first": live["time"].min().isoformat() if live["time"].notna().any() else None,
        "last": live["time"].max().isoformat() if live["time"].notna().any() else None,
        "note": None if len(live) else f"{NO_PREDICTIONS} by {_model_label(served_model_reference)}",
    }


def measure_drift(
    monitored_predictions: pd.DataFrame, served_model_reference: dict[str, Any], params: MonitoringParams
) -> dict[str, Any]:
    """PSI and KS of P(AI) and of each input statistic the reference has, live against reference.

    Args:
        monitored_predictions: Output of :func:`select_monitored_predictions`.
        served_model_reference: The model version and its reference table.
        params: PSI bins and bands.

    Returns:
        ``probability_ai`` and ``inputs`` (per statistic) as :func:`.drift.compare_numeric` or
        :func:`.drift.compare_categorical` give them, and ``note`` (why figures are missing).
    """
    reference = reference_table(served_model_reference)
    if reference.empty:
        note = (
            served_model_reference.get("note") or f"no reference for {_model_label(served_model_reference)}"
        )
        return {"probability_ai": None, "inputs": {}, "note": note}
    bands = params.psi_bands
    live = monitored_predictions
    inputs: dict[str, Any] = {
        column: compare_numeric(reference[column], live[column], params.psi_bins, bands.moderate, bands.major)
        for column in NUMERIC_INPUTS
        if column in reference.columns
    }
    inputs |= {
        column: compare_categorical(reference[column], live[column], bands.moderate, bands.major)
        for column in CATEGORICAL_INPUTS
        if column in reference.columns
    }
    probability = compare_numeric(
        reference["probability_ai"], live["probability_ai"], params.psi_bins, bands.moderate, bands.major
    )
    return {
        "probability_ai": probability,
        "inputs": inputs,
        "note": None if len(live) else f"{NO_PREDICTIONS} by {_model_label(served_model_reference)}",
    }


def summarise_feedback(
    feedback_records: Mapping[str, Callable[[], Any] | Mapping[str, Any]],
    served_model_reference: dict[str, Any],
    monitoring_scope: dict[str, Any],
) -> dict[str, Any]:
    """Feedback counts, and the errors feedback confirms on the monitored model version.

    Args:
        feedback_records: The feedback store's records (partition id → loader).
        served_model_reference: The monitored model version.
        monitoring_scope: Output of :func:`select_monitored_predictions` (feedback received
            before the window's start is left out).

    Returns:
        :func:`.feedback.feedback_figures`, plus ``skipped_records``.
    """
    table, skipped = feedback_table(feedback_records)
    start = monitoring_scope["window"]["start"]
    if start is not None:
        table = table[table["received_at"] >= pd.Timestamp(start)]
    figures = feedback_figures(
        table, str(served_model_reference["model_name"]), str(served_model_reference["model_version"])
    )
    logger.info(
        "%d feedback (%d with consent), %d on the monitored version",
        figures["total"],
        figures["with_consent"],
        figures["this_version"]["count"],
    )
    return {**figures, "skipped_records": skipped}


def decide_retraining(
    prediction_summary: dict[str, Any],
    drift: dict[str, Any],
    feedback_summary: dict[str, Any],
    params: MonitoringParams,
) -> dict[str, Any]:
    """The drift flag: "retrain" with the reasons, or why not, and what to watch.

    The rule is :func:`.flag.findings`: drift and the inconclusive share are judged only once the
    model version has answered ``min_predictions`` times, the feedback error rate only on
    ``retrain_when.min_feedback`` feedback; below that the figures are listed under ``watch``.

    Args:
        prediction_summary: Output of :func:`summarise_predictions`.
        drift: Output of :func:`measure_drift`.
        feedback_summary: Output of :func:`summarise_feedback`.
        params: The thresholds.

    Returns:
        ``retrain`` (bool), ``status`` (``retrain``, ``watch``, ``ok`` or ``no data``),
        ``reasons``, ``watch`` and ``thresholds`` (the rule that was applied).
    """
    found = flag.findings(prediction_summary, drift, feedback_summary, params)
    reasons = [line for decides, line in found if decides]
    watch = [line for decides, line in found if not decides]
    status = (
        "retrain" if reasons else "no data" if not prediction_summary["count"] else "watch" if watch else "ok"
    )
    logger.log(logging.WARNING if reasons else logging.INFO, "monitoring: %s %s", status, "; ".join(reasons))
    return {
        "retrain": bool(reasons),
        "status": status,
        "reasons": reasons,
        "watch": watch,
        "thresholds": {"min_predictions": params.min_predictions, **params.retrain_when.model_dump()},
    }


def compile_report(
    served_model_reference: dict[str, Any],
    monitoring_scope: dict[str, Any],
    prediction_summary: dict[str, Any],
    drift: dict[str, Any],
    feedback_summary: dict[str, Any],
    drift_flag: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """``drift.json`` (every figure) and the MLflow metrics of the monitoring run.

    Args:
        served_model_reference: The model version and its reference.
        monitoring_scope: Output of :func:`select_monitored_predictions`.
        prediction_summary: Output of :func:`summarise_predictions`.
        drift: Output of :func:`measure_drift`.
        feedback_summary: Output of :func:`summarise_feedback`.
        drift_flag: Output of :func:`decide_retraining`.

    Returns:
        The report (``model``, ``window``, ``predictions``, ``drift``, ``feedback``,
        ``other_versions``, ``flag``) and the metrics (name → ``{"value", "step"}``).
    """
    reference = reference_table(served_model_reference)
    errors, count = feedback_summary["this_version"]["confirmed_errors"], prediction_summary["count"]
    model = {
        key: served_model_reference.get(key)
        for key in ("model_name", "model_version", "alias", "run_id", "artifact")
    }
    model |= {
        "reference_images": len(reference),
        "reference_note": served_model_reference.get("note"),
        "shipped_precision": str(reference["shipped_precision"].iloc[0])
        if "shipped_precision" in reference.columns and len(reference)
        else None,
    }
    feedback = {**feedback_summary, "confirmed_errors_per_prediction": errors / count if count else None}
    monitoring_report = {
        "model": model,
        "window": monitoring_scope["window"],
        "predictions": {**prediction_summary, "all_versions": monitoring_scope["logged"]},
        "drift": drift,
        "feedback": feedback,
        "other_versions": monitoring_scope["other_versions"],
        "flag": drift_flag,
    }
    return monitoring_report, report.metrics(monitoring_report)


def plot_monitoring(
    monitored_predictions: pd.DataFrame, served_model_reference: dict[str, Any]
) -> tuple[bytes, bytes]:
    """P(AI) histograms live against reference, and the input statistics', as PNG files.

    Args:
        monitored_predictions: Output of :func:`select_monitored_predictions`.
        served_model_reference: The model version and its reference.

    Returns:
        The P(AI) figure and the input-statistics figure, PNG.
    """
    reference = reference_table(served_model_reference)
    label = _model_label(served_model_reference)
    return (
        charts.probability_histograms(reference, monitored_predictions, label),
        charts.input_histograms(reference, monitored_predictions, NUMERIC_INPUTS, CATEGORICAL_INPUTS),
    )


def render_report(monitoring_report: dict[str, Any], probability_plot: bytes, input_plot: bytes) -> str:
    """The self-contained HTML report (figures embedded, every text escaped).

    Args:
        monitoring_report: Output of :func:`compile_report`.
        probability_plot: The P(AI) figure (PNG).
        input_plot: The input-statistics figure (PNG).

    Returns:
        The HTML page.
    """
    return report.render_html(monitoring_report, {"P(AI)": probability_plot, "Input statistics": input_plot})
