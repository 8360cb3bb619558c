"""The ``monitoring`` pipeline: ``kedro run --pipelines monitoring`` (``make monitor``).

Not part of ``kedro run``: it watches the deployed service (its prediction log and the feedback
store), not the training.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.monitoring.nodes import (
    compile_report,
    decide_retraining,
    measure_drift,
    plot_monitoring,
    render_report,
    select_monitored_predictions,
    summarise_feedback,
    summarise_predictions,
)


def create_pipeline(**kwargs: object) -> Pipeline:
    """Read the log and the feedback, compare with the served version's reference, flag, report."""
    return Pipeline(
        [
            Node(
                select_monitored_predictions,
                ["prediction_log", "served_model_reference", "params:monitoring"],
                ["monitored_predictions", "monitoring_scope"],
                name="select_monitored_predictions_node",
            ),
            Node(
                summarise_predictions,
                ["monitored_predictions", "served_model_reference"],
                "prediction_summary",
                name="summarise_predictions_node",
            ),
            Node(
                measure_drift,
                ["monitored_predictions", "served_model_reference", "params:monitoring"],
                "drift_figures",
                name="measure_drift_node",
            ),
            Node(
                summarise_feedback,
                ["feedback_records", "served_model_reference", "monitoring_scope"],
                "feedback_summary",
                name="summarise_feedback_node",
            ),
            Node(
                decide_retraining,
                ["prediction_summary", "drift_figures", "feedback_summary", "params:monitoring"],
                "drift_flag",
                name="decide_retraining_node",
            ),
            Node(
                compile_report,
                [
                    "served_model_reference",
                    "monitoring_scope",
                    "prediction_summary",
                    "drift_figures",
                    "feedback_summary",
                    "drift_flag",
                ],
                ["monitoring_report", "monitoring_metrics"],
                name="compile_report_node",
            ),
            Node(
                plot_monitoring,
                ["monitored_predictions", "served_model_reference"],
                ["monitoring_probability_plot", "monitoring_input_plot"],
                name="plot_monitoring_node",
            ),
            Node(
                render_report,
                ["monitoring_report", "monitoring_probability_plot", "monitoring_input_plot"],
                "monitoring_html_report",
                name="render_report_node",
            ),
        ]
    )
