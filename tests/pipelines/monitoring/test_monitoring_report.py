"""The HTML report is self-contained and escapes what came from the data; the figures are PNG."""

from __future__ import annotations

import base64
import math
import re

import pandas as pd

from ai_image_detection.pipelines.monitoring.nodes import plot_monitoring, render_report
from ai_image_detection.pipelines.monitoring.report import metrics
from tests.pipelines.monitoring.synthetic import prediction_lines, reference_table, served_reference
from tests.pipelines.monitoring.test_monitoring_nodes import monitor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_page_embeds_its_figures_and_loads_nothing_from_outside() -> None:
    report = monitor(prediction_lines(120))
    live = pd.DataFrame(prediction_lines(120))
    probability_png, inputs_png = plot_monitoring(live, served_reference(reference_table()))
    assert probability_png.startswith(PNG_SIGNATURE)
    assert inputs_png.startswith(PNG_SIGNATURE)

    page = render_report(report, probability_png, inputs_png)

    assert page.startswith("<!DOCTYPE html>")
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert [base64.b64decode(data) for data in embedded] == [probability_png, inputs_png]
    assert not re.search(r"(src|href)=\"(?!data:)", page), "no external resource"
    assert "<script" not in page
    for figure in ("PSI", "KS p-value", "inconclusive share", "confirmed error rate", "OK", "live ai"):
        assert figure in page


def test_every_text_from_the_data_is_escaped() -> None:
    hostile = "<img src=x onerror=alert(1)>"
    reference = served_reference(None, note=f"no reference {hostile}")
    reference["model_name"] = hostile
    lines = prediction_lines(10)
    for line in lines:
        line["model_name"] = hostile
        line["format"] = hostile
    report = monitor(lines, reference=reference)

    page = render_report(report, b"png", b"png")

    assert hostile not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "ai_share__img_src_x_onerror_alert_1__" in metrics(report), "a metric name MLflow accepts"


def test_figures_of_an_empty_log_still_render() -> None:
    empty = pd.DataFrame(columns=["probability_ai", "width", "format"])
    probability_png, inputs_png = plot_monitoring(empty, served_reference(reference_table()))
    assert probability_png.startswith(PNG_SIGNATURE)
    assert inputs_png.startswith(PNG_SIGNATURE)
    page = render_report(monitor([]), probability_png, inputs_png)
    assert "no predictions logged yet" in page
    assert "NO DATA" in page


def test_metrics_are_finite_numbers_at_step_zero() -> None:
    values = metrics(monitor(prediction_lines(120)))
    assert {"predictions", "inconclusive_share", "probability_ai_psi", "probability_ai_ks_pvalue"} <= set(
        values
    )
    assert {"format_psi", "bytes_psi", "feedback_total", "feedback_claimed_ai", "retrain"} <= set(values)
    assert {"ai_share_JPEG", "ai_share_PNG"} <= set(values), "the share answered ai per upload format"
    assert all(entry["step"] == 0 and math.isfinite(entry["value"]) for entry in values.values())
    empty = metrics(monitor([]))
    assert "probability_ai_psi" not in empty, "a figure that could not be computed is left out"
    assert empty["predictions"]["value"] == 0
