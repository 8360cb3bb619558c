"""The ``evaluation`` pipeline: a namespace per candidate, then their comparison."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines import bind
from ai_image_detection.pipelines.evaluation.nodes import (
    calibrate,
    compare_candidates,
    evaluate_candidate,
    plot_candidate,
    score_images,
    summarise_held_out_families,
)
from ai_image_detection.session_config import candidate_names


def create_pipeline(**kwargs: object) -> Pipeline:
    """Evaluate each trained candidate and compare them."""
    names = candidate_names()
    per_candidate = sum((_candidate_pipeline(name) for name in names), start=Pipeline([]))
    return per_candidate + Pipeline(
        [
            Node(
                bind(compare_candidates, names=names),
                [f"{name}.evaluation_report" for name in names]
                + [f"{name}.unseen_family_report" for name in names],
                [
                    "candidate_comparison_chart",
                    "candidate_speed_size_chart",
                    "candidate_comparison",
                    "unseen_family_table",
                    "unseen_family_chart",
                ],
                name="compare_candidates_node",
            ),
        ]
    )


def _candidate_pipeline(name: str) -> Pipeline:
    base = Pipeline(
        [
            Node(
                score_images,
                ["trained_model", "image_manifest@pandas", "params:evaluation"],
                "raw_scores",
                name="score_images_node",
            ),
            Node(
                calibrate,
                ["raw_scores", "params:evaluation"],
                ["predictions", "calibration"],
                name="calibrate_node",
            ),
            Node(
                evaluate_candidate,
                [
                    "trained_model",
                    "predictions",
                    "calibration",
                    "image_manifest@pandas",
                    "held_out_family_scores",
                    "wild_generated_images",
                    "params:evaluation",
                ],
                "evaluation_report",
                name="evaluate_candidate_node",
            ),
            Node(
                plot_candidate,
                ["predictions", "evaluation_report", "params:evaluation"],
                "evaluation_plots",
                name="plot_candidate_node",
            ),
            Node(
                summarise_held_out_families,
                ["held_out_family_scores", "params:evaluation"],
                "unseen_family_report",
                name="summarise_held_out_families_node",
            ),
        ]
    )
    return Pipeline(
        base,
        namespace=name,
        inputs={"image_manifest@pandas", "wild_generated_images"},
        parameters={"params:evaluation": "params:evaluation"},
    )
