"""The monitoring report as one self-contained HTML page, and its figures as MLflow metrics.

The page carries everything inline (figures as base64 PNG, a small style sheet) so that it opens
from MLflow or a mail attachment without network access, and every text that came from the
data (model names, formats, notes, feedback labels) is HTML-escaped.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

STATUS_COLOURS = {"retrain": "#b3261e", "watch": "#a15c00", "ok": "#1e6b35", "no data": "#555555"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 70rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.flag { color: white; padding: 0.8rem 1rem; border-radius: 0.4rem; }
img { max-width: 100%; }
"""


def _text(value: Any) -> str:
    """A cell's text, escaped: numbers rounded, None as an em dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return escape(f"{value:.4g}")
    return escape(str(value))


def _cell(value: Any) -> str:
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="number">{_text(value)}</td>' if numeric else f"<td>{_text(value)}</td>"


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    """An HTML table; every cell escaped."""
    head = "".join(f"<th>{escape(str(name))}</th>" for name in header)
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(rows: Iterable[tuple[str, Any]]) -> str:
    """A two-column table of named figures, without a header; every cell escaped."""
    body = "".join(f"<tr><th>{escape(name)}</th>{_cell(value)}</tr>" for name, value in rows)
    return f"<table><tbody>{body}</tbody></table>"


def _items(items: Iterable[str]) -> str:
    listed = "".join(f"<li>{escape(item)}</li>" for item in items)
    return f"<ul>{listed}</ul>" if listed else "<p>none</p>"


def _flag(flag: Mapping[str, Any]) -> str:
    colour = STATUS_COLOURS.get(flag["status"], "#555555")
    headline = "RETRAIN" if flag["retrain"] else str(flag["status"]).upper()
    return (
        f'<div class="flag" style="background:{colour}"><strong>{escape(headline)}</strong></div>'
        f"<h3>Reasons</h3>{_items(flag['reasons'])}<h3>Watch</h3>{_items(flag['watch'])}"
        + table(["rule", "threshold"], sorted(flag["thresholds"].items()))
    )


def _model(model: Mapping[str, Any], window: Mapping[str, Any]) -> str:
    rows = [
        ("model", f"{model['model_name']} v{model['model_version']}"),
        ("registry alias", model.get("alias")),
        ("MLflow run of the version", model.get("run_id")),
        ("reference", model.get("artifact")),
        ("reference images (validation)", model.get("reference_images")),
        ("shipped precision", model.get("shipped_precision")),
        ("reference note", model.get("reference_note")),
        ("window (days)", window.get("days")),
        ("window start", window.get("start")),
        ("window end (latest logged prediction)", window.get("end")),
    ]
    return facts(rows)


def _predictions(predictions: Mapping[str, Any]) -> str:
    verdicts = [
        (
            name,
            predictions["verdict_counts"][name],
            predictions["verdict_shares"][name],
            predictions["reference_verdict_shares"][name],
        )
        for name in predictions["verdict_counts"]
    ]
    figures = [
        ("predictions of this version", predictions["count"]),
        ("predictions of every version in the window", predictions["all_versions"]),
        ("inconclusive share", predictions["inconclusive_share"]),
        ("declared AI by provenance (share)", predictions["declared_by_provenance_share"]),
        ("provenance found (share)", predictions["provenance_found_share"]),
        ("latency p50 (ms)", predictions["latency_ms"]["p50"]),
        ("latency p95 (ms)", predictions["latency_ms"]["p95"]),
        ("first", predictions["first"]),
        ("last", predictions["last"]),
        *((f"endpoint {name}", count) for name, count in predictions["endpoints"].items()),
    ]
    note = f"<p><strong>{escape(predictions['note'])}</strong></p>" if predictions["note"] else ""
    names = list(predictions["verdict_counts"])
    by_format = [
        (
            row["format"],
            row["predictions"],
            *(row["verdict_shares"][name] for name in names),
            row["reference_images"],
            *(row["reference_verdict_shares"][name] for name in names),
        )
        for row in predictions["by_format"]
    ]
    return (
        note
        + facts(figures)
        + table(["verdict", "count", "live share", "reference share"], verdicts)
        + "<h3>Answers per upload format</h3><p>A format answered &ldquo;ai&rdquo; far more often live "
        "than on the reference is how a storage shortcut shows (lossless human photos taken for AI).</p>"
        + table(
            [
                "format",
                "predictions",
                *(f"live {name}" for name in names),
                "reference images",
                *(f"reference {name}" for name in names),
            ],
            by_format,
        )
    )


def _drift(drift: Mapping[str, Any]) -> str:
    note = f"<p><strong>{escape(drift['note'])}</strong></p>" if drift["note"] else ""
    numeric = [("P(AI)", drift["probability_ai"])] if drift["probability_ai"] else []
    numeric += [(name, f) for name, f in drift["inputs"].items() if "ks_statistic" in f]
    rows = [
        (
            name,
            f["psi"],
            f["band"],
            f["ks_statistic"],
            f["ks_pvalue"],
            f["reference_n"],
            f["live_n"],
            f["reference_mean"],
            f["live_mean"],
        )
        for name, f in numeric
    ]
    header = [
        "",
        "PSI",
        "band",
        "KS statistic",
        "KS p-value",
        "reference n",
        "live n",
        "reference mean",
        "live mean",
    ]
    html = note + table(header, rows)
    for name, figures in drift["inputs"].items():
        if "reference_shares" not in figures:
            continue
        categories = sorted(set(figures["reference_shares"]) | set(figures["live_shares"]))
        html += f"<h3>{escape(name)}: PSI {_text(figures['psi'])} ({_text(figures['band'])})</h3>" + table(
            [name, "reference share", "live share"],
            [
                (c, figures["reference_shares"].get(c, 0.0), figures["live_shares"].get(c, 0.0))
                for c in categories
            ],
        )
    return html


def _feedback(feedback: Mapping[str, Any]) -> str:
    mine = feedback["this_version"]
    rows = [
        ("feedback (every version)", feedback["total"]),
        ("with consent to keep the image", feedback["with_consent"]),
        ("with a stored image", feedback["with_image"]),
        *((f"claimed {label}", count) for label, count in feedback["claimed"].items()),
        ("on this version", mine["count"]),
        *((f"on an answer {name!r}", count) for name, count in mine["on_verdict"].items()),
        ("confirmed wrong verdicts", mine["confirmed_errors"]),
        ("confirmed error rate (of this version's feedback)", mine["confirmed_error_rate"]),
        ("confirmed errors per prediction (a lower bound)", feedback["confirmed_errors_per_prediction"]),
        ("of them decided by provenance", mine["errors_decided_by_provenance"]),
        *((f"on {model}", count) for model, count in feedback["other_versions"].items()),
        ("malformed records skipped", feedback["skipped_records"]),
    ]
    return facts(rows)


def render_html(monitoring_report: Mapping[str, Any], plots: Mapping[str, bytes]) -> str:
    """The report page: flag, model and reference, predictions, drift, feedback, other versions, figures.

    Args:
        monitoring_report: ``drift.json`` (:func:`..nodes.compile_report`).
        plots: Title → PNG bytes, embedded as base64 images.

    Returns:
        A complete HTML document with no external resource.
    """
    model = monitoring_report["model"]
    title = f"Monitoring of {model['model_name']} v{model['model_version']}"
    others = [
        (
            o["model"],
            o["predictions"],
            o["inconclusive_share"],
            o["mean_probability_ai"],
            o["first"],
            o["last"],
        )
        for o in monitoring_report["other_versions"]
    ]
    figures = "".join(
        f'<h3>{escape(name)}</h3><img alt="{escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'
        for name, png in plots.items()
    )
    sections = [
        ("Drift flag", _flag(monitoring_report["flag"])),
        ("Model and reference", _model(model, monitoring_report["window"])),
        ("Predictions", _predictions(monitoring_report["predictions"])),
        ("Drift against the validation scores", _drift(monitoring_report["drift"])),
        ("Feedback", _feedback(monitoring_report["feedback"])),
        (
            "Other model versions (not in the figures above)",
            table(["model", "predictions", "inconclusive share", "mean P(AI)", "first", "last"], others),
        ),
        ("Figures", figures),
        (
            "Reading it",
            "<p>PSI below 0.1 is stable, 0.1 to 0.25 a moderate shift, 0.25 and above a major one. The "
            "reference is the validation set, about half AI images: a different share of AI images among "
            "uploads moves P(AI) without any drift of the generators. Feedback is self-selected, so its "
            "error rate is not the model's; confirmed errors per prediction is a lower bound of it.</p>",
        ),
    ]
    body = "".join(f"<h2>{escape(name)}</h2>{html}" for name, html in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>\n"
    )


def metrics(monitoring_report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """The report's headline figures for MLflow (``MlflowMetricsHistoryDataset``: name → value, step 0).

    Figures that could not be computed (no predictions, no reference) are left out.
    """
    predictions, drift, feedback = (
        monitoring_report["predictions"],
        monitoring_report["drift"],
        monitoring_report["feedback"],
    )
    values: dict[str, Any] = {
        "predictions": predictions["count"],
        "inconclusive_share": predictions["inconclusive_share"],
        "declared_by_provenance_share": predictions["declared_by_provenance_share"],
        "feedback_total": feedback["total"],
        "feedback_with_consent": feedback["with_consent"],
        **{f"feedback_claimed_{label}": count for label, count in feedback["claimed"].items()},
        "feedback_confirmed_errors": feedback["this_version"]["confirmed_errors"],
        "feedback_confirmed_error_rate": feedback["this_version"]["confirmed_error_rate"],
        "retrain": int(monitoring_report["flag"]["retrain"]),
        **{
            f"ai_share_{re.sub(r'[^A-Za-z0-9]', '_', row['format'])}": row["verdict_shares"]["ai"]
            for row in predictions["by_format"]
            if row["predictions"]
        },
    }
    compared = {"probability_ai": drift["probability_ai"] or {}, **drift["inputs"]}
    for name, figures in compared.items():
        for figure in ("psi", "ks_statistic", "ks_pvalue"):
            values[f"{name}_{figure}"] = figures.get(figure)
    return {
        name: {"value": float(value), "step": 0}
        for name, value in values.items()
        if value is not None and math.isfinite(float(value))
    }
