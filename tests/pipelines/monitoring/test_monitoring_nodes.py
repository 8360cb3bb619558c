"""The monitoring nodes on synthetic logs, feedback and references."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest
from pydantic import ValidationError

from ai_image_detection.pipelines.monitoring.nodes import (
    NO_PREDICTIONS,
    compile_report,
    decide_retraining,
    measure_drift,
    select_monitored_predictions,
    summarise_feedback,
    summarise_predictions,
)
from ai_image_detection.pipelines.monitoring.params import MonitoringParams
from tests.pipelines.monitoring.synthetic import (
    PARAMS,
    VERSION,
    feedback_record,
    feedback_records,
    prediction_lines,
    reference_table,
    served_reference,
)

REFERENCE = served_reference(reference_table())


def monitor(
    lines: list[dict[str, Any]],
    records: dict[str, Any] | None = None,
    reference: dict[str, Any] = REFERENCE,
    params: MonitoringParams = PARAMS,
) -> dict[str, Any]:
    """The whole chain of nodes, as the pipeline runs them; the report."""
    live, scope = select_monitored_predictions(pd.DataFrame(lines), reference, params)
    summary = summarise_predictions(live, reference)
    drift = measure_drift(live, reference, params)
    feedback = summarise_feedback(records or {}, reference, scope)
    flag = decide_retraining(summary, drift, feedback, params)
    report, _ = compile_report(reference, scope, summary, drift, feedback, flag)
    return report


def test_other_model_versions_are_summarised_apart_not_mixed_in() -> None:
    lines = prediction_lines(120) + prediction_lines(30, seed=7, version="2", shift=0.5)
    live, scope = select_monitored_predictions(pd.DataFrame(lines), REFERENCE, PARAMS)
    assert len(live) == 120
    assert set(live["model_version"]) == {VERSION}
    assert scope["logged"] == 150
    assert [(other["model"], other["predictions"]) for other in scope["other_versions"]] == [
        ("ai-image-detector v2", 30)
    ]


def test_a_version_logged_as_a_number_is_the_same_version() -> None:
    lines = prediction_lines(5)
    for line in lines[:3]:
        line["model_version"] = int(VERSION)
    del lines[4]["model_version"]  # a line without it: the column holds floats and a gap
    live, scope = select_monitored_predictions(pd.DataFrame(lines), REFERENCE, PARAMS)
    assert len(live) == 4
    assert [other["model"] for other in scope["other_versions"]] == ["ai-image-detector vunknown"]


def test_the_window_keeps_the_last_days_before_the_latest_line() -> None:
    old = prediction_lines(40, seed=2, start="2026-11-01T00:00:00Z")
    recent = prediction_lines(60, seed=3, start="2026-12-01T00:00:00Z")
    params = PARAMS.model_copy(update={"window_days": 7})
    live, scope = select_monitored_predictions(pd.DataFrame(old + recent), REFERENCE, params)
    assert len(live) == 60
    assert scope["window"]["start"] == "2026-11-24T00:59:00+00:00"


def test_verdict_and_provenance_shares() -> None:
    report = monitor(prediction_lines(200))
    predictions = report["predictions"]
    assert predictions["count"] == 200
    assert sum(predictions["verdict_counts"].values()) == 200
    assert predictions["inconclusive_share"] == predictions["verdict_shares"]["inconclusive"]
    assert predictions["declared_by_provenance_share"] == pytest.approx(0.1), "every tenth is declared"
    assert predictions["provenance_found_share"] == pytest.approx(0.1)
    assert sum(predictions["reference_verdict_shares"].values()) == pytest.approx(1.0)
    assert predictions["latency_ms"]["p50"] < predictions["latency_ms"]["p95"]


def test_answers_per_upload_format_show_a_storage_shortcut() -> None:
    lines = prediction_lines(300)
    for line in lines:  # lossless uploads taken for AI, as a model that learned JPEG as "human" would
        if line["format"] == "PNG" and line["decided_by"] == "pixels":
            line["probability_ai"], line["label"] = 0.9, "ai"
    lines[0]["format"] = None  # a line of an older log, without the field
    rows = {row["format"]: row for row in monitor(lines)["predictions"]["by_format"]}

    assert set(rows) == {"JPEG", "PNG", "unknown"}
    assert sum(row["predictions"] for row in rows.values()) == 300
    png, jpeg = rows["PNG"], rows["JPEG"]
    assert png["verdict_shares"]["ai"] == 1.0
    assert png["reference_verdict_shares"]["ai"] == pytest.approx(0.5, abs=0.1), "the reference is half AI"
    assert jpeg["verdict_shares"]["ai"] == pytest.approx(jpeg["reference_verdict_shares"]["ai"], abs=0.1)
    assert png["reference_images"] + jpeg["reference_images"] == 400
    assert rows["unknown"]["reference_images"] == 0
    assert rows["unknown"]["reference_verdict_shares"] == dict.fromkeys(["human", "inconclusive", "ai"])


def test_a_format_only_the_reference_has_shows_with_no_live_answers() -> None:
    lines = [line | {"format": "JPEG"} for line in prediction_lines(20)]
    rows = monitor(lines)["predictions"]["by_format"]
    assert [row["format"] for row in rows] == ["JPEG", "PNG"], "most predictions first"
    assert rows[1]["predictions"] == 0
    assert rows[1]["verdict_shares"] == dict.fromkeys(["human", "inconclusive", "ai"])
    assert rows[1]["reference_images"] > 0


def test_traffic_like_validation_is_not_flagged() -> None:
    report = monitor(prediction_lines(200))
    assert report["drift"]["probability_ai"]["band"] == "stable"
    assert {name: f["band"] for name, f in report["drift"]["inputs"].items()} == dict.fromkeys(
        ["width", "height", "bytes", "mean_luma", "std_luma", "format"], "stable"
    )
    assert report["flag"]["status"] == "ok"
    assert report["flag"]["retrain"] is False


def test_a_shift_of_p_ai_says_retrain_and_why() -> None:
    report = monitor(prediction_lines(200, ai_share=0.95))
    probability = report["drift"]["probability_ai"]
    assert probability["psi"] >= 0.25
    assert probability["ks_pvalue"] < 1e-6
    assert report["flag"]["retrain"] is True
    assert report["flag"]["status"] == "retrain"
    assert any("PSI of P(AI)" in reason for reason in report["flag"]["reasons"])


def test_input_drift_only_warns_unless_input_psi_is_set() -> None:
    lines = prediction_lines(200, shift=0.0)
    for line in lines:
        line["bytes"] *= 6
    report = monitor(lines)
    assert report["drift"]["inputs"]["bytes"]["band"] == "major"
    assert report["flag"]["retrain"] is False
    assert any("PSI of bytes" in line for line in report["flag"]["watch"])
    strict = PARAMS.model_copy(
        update={"retrain_when": PARAMS.retrain_when.model_copy(update={"input_psi": 0.25})}
    )
    assert monitor(lines, params=strict)["flag"]["retrain"] is True


def test_drift_is_shown_but_not_judged_on_too_few_predictions() -> None:
    report = monitor(prediction_lines(20, ai_share=0.95))
    assert report["drift"]["probability_ai"]["psi"] >= 0.25
    assert report["flag"]["retrain"] is False
    assert report["flag"]["status"] == "watch"
    assert report["flag"]["watch"][0].startswith("only 20 predictions")


def forty_percent_inconclusive() -> list[dict[str, Any]]:
    lines = prediction_lines(100)
    for index, line in enumerate(lines):
        line["label"] = "inconclusive" if index < 40 else "ai"
    return lines


def test_abstaining_more_than_on_the_validation_set_says_retrain() -> None:
    report = monitor(forty_percent_inconclusive())
    assert report["predictions"]["inconclusive_share"] == pytest.approx(0.4)
    reference_share = report["predictions"]["reference_verdict_shares"]["inconclusive"]
    assert reference_share < 0.25, "the band (0.3, 0.7) abstains on few of the reference's images"
    assert [reason for reason in report["flag"]["reasons"] if "inconclusive" in reason] == [
        f"40.0% of the answers inconclusive, {reference_share:.1%} on the validation set (>= 15% points more)"
    ]


def test_abstaining_as_much_as_on_the_validation_set_is_no_drift() -> None:
    wide = reference_table().assign(threshold_human=0.1, threshold_ai=0.9)  # abstains on most of it
    report = monitor(forty_percent_inconclusive(), reference=served_reference(wide))
    assert report["predictions"]["reference_verdict_shares"]["inconclusive"] > 0.4
    assert not any("inconclusive" in line for line in report["flag"]["reasons"] + report["flag"]["watch"])


def test_without_a_reference_band_the_inconclusive_share_is_only_watched() -> None:
    bandless = reference_table().drop(columns=["threshold_human", "threshold_ai"])
    report = monitor(forty_percent_inconclusive(), reference=served_reference(bandless))
    assert not any("inconclusive" in reason for reason in report["flag"]["reasons"])
    assert (
        "40.0% of the answers inconclusive; no reference share to judge it against" in report["flag"]["watch"]
    )


def test_feedback_counts_and_the_error_rate_it_confirms() -> None:
    report = monitor(prediction_lines(100), feedback_records())
    feedback = report["feedback"]
    assert (feedback["total"], feedback["with_consent"], feedback["with_image"]) == (12, 4, 4)
    assert feedback["claimed"] == {"ai": 7, "human": 5}
    mine = feedback["this_version"]
    assert mine["count"] == 10
    assert mine["on_verdict"] == {"human": 4, "inconclusive": 1, "ai": 5}
    assert mine["confirmed_errors"] == 3, "a claim on an inconclusive answer is no error"
    assert mine["confirmed_error_rate"] == pytest.approx(0.3)
    assert mine["errors_by_verdict"] == {"ai": 2, "human": 1}
    assert feedback["confirmed_errors_per_prediction"] == pytest.approx(3 / 100)
    assert feedback["other_versions"] == {"ai-image-detector v2": 2}
    assert report["flag"]["retrain"] is True
    assert any(
        reason.startswith("feedback confirms 3 wrong verdicts") for reason in report["flag"]["reasons"]
    )


def test_an_error_rate_on_too_little_feedback_is_not_judged() -> None:
    records = {"d/f-1": feedback_record(1, "human", "ai"), "d/f-2": feedback_record(2, "ai", "human")}
    report = monitor(prediction_lines(100), records)
    assert report["feedback"]["this_version"]["confirmed_error_rate"] == 1.0
    assert report["flag"]["retrain"] is False
    assert any("not judged" in line for line in report["flag"]["watch"])


def test_feedback_loaders_malformed_records_and_the_window() -> None:
    records: dict[str, Any] = {
        "2026-12-01/f-1": lambda: feedback_record(1, "human", "ai"),
        "2026-12-01/broken": lambda: {"feedback_id": "f-x", "claimed_label": "maybe"},
        "2026-11-01/f-old": {**feedback_record(3, "human", "ai"), "received_at": "2026-11-01T00:00:00Z"},
    }
    scope = {"window": {"start": "2026-11-24T00:00:00+00:00"}}
    summary = summarise_feedback(records, REFERENCE, scope)
    assert summary["skipped_records"] == 1
    assert summary["total"] == 1, "feedback before the window is left out"


def test_no_predictions_and_no_feedback_give_a_clear_report() -> None:
    report = monitor([])
    assert report["predictions"]["count"] == 0
    assert report["predictions"]["note"].startswith(NO_PREDICTIONS)
    assert report["drift"]["probability_ai"]["psi"] is None
    assert report["drift"]["note"].startswith(NO_PREDICTIONS)
    assert report["feedback"]["total"] == 0
    assert report["flag"] == {**report["flag"], "retrain": False, "status": "no data"}
    assert report["window"]["end"] is None


def test_a_version_without_reference_still_reports_answers_and_feedback() -> None:
    note = "ai-image-detector v3 has no monitoring_reference.parquet in its MLflow run"
    report = monitor(prediction_lines(80), feedback_records(), reference=served_reference(None, note))
    assert report["drift"] == {"probability_ai": None, "inputs": {}, "note": note}
    assert report["predictions"]["count"] == 80
    assert report["feedback"]["this_version"]["count"] == 10
    assert note in report["flag"]["watch"]
    assert report["model"]["reference_images"] == 0


def test_parameters_are_checked() -> None:
    with pytest.raises(ValidationError, match="must be above"):
        PARAMS.model_validate({**PARAMS.model_dump(), "psi_bands": {"moderate": 0.3, "major": 0.2}})
    with pytest.raises(ValidationError, match="Extra inputs"):
        PARAMS.model_validate({**PARAMS.model_dump(), "treshold": 1})
