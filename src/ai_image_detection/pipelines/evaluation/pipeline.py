"""The ``evaluation`` pipeline: a namespace per candidate, then their comparison."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines import bind
from ai_image_detection.pipelines.evaluation.nodes import (
    compare_candidates,
    evaluate_candidate,
    plot_candidate,
    predict,
)
from ai_image_detection.pipelines.training.pipeline import candidate_names


def create_pipeline(**kwargs: object) -> Pipeline:
    """Evaluate each trained candidate and compare them."""
    names = candidate_names()
    per_candidate = sum((_candidate_pipeline(name) for name in names), start=Pipeline([]))
    return per_candidate + Pipeline(
        [
            Node(
                bind(compare_candidates, names=names),
                [f"{name}.evaluation_report" for name in names],
                ["candidate_comparison_chart", "candidate_speed_size_chart", "candidate_comparison"],
                name="compare_candidates_node",
            ),
        ]
    )


def _candidate_pipeline(name: str) -> Pipeline:
    base = Pipeline(
        [
            Node(predict, ["trained_model", "image_manifest@pandas"], "predictions", name="predict_node"),
            Node(
                evaluate_candidate,
                ["trained_model", "predictions", "image_manifest@pandas", "params:evaluation"],
                "evaluation_report",
                name="evaluate_candidate_node",
            ),
            Node(
                plot_candidate,
                ["predictions", "evaluation_report", "params:evaluation"],
                "evaluation_plots",
                name="plot_candidate_node",
            ),
        ]
    )
    return Pipeline(
        base,
        namespace=name,
        inputs={"image_manifest@pandas"},
        parameters={"params:evaluation": "params:evaluation"},
    )
