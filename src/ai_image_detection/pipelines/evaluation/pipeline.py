"""The ``evaluation`` pipeline: a namespace per candidate, then the comparison and submission."""

from __future__ import annotations

from functools import partial, update_wrapper

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.evaluation.nodes import (
    compare_candidates,
    evaluate_candidate,
    make_submission,
    plot_candidate,
    predict,
)
from ai_image_detection.pipelines.training.pipeline import candidate_names


def create_pipeline(**kwargs: object) -> Pipeline:
    """Evaluate each trained candidate, compare them, and write the submission."""
    names = candidate_names()
    per_candidate = sum((_candidate_pipeline(name) for name in names), start=Pipeline([]))
    compare = update_wrapper(partial(compare_candidates, names=names), compare_candidates)
    submit = update_wrapper(partial(_submission, names=names), make_submission)
    return per_candidate + Pipeline(
        [
            Node(
                compare,
                [f"{name}.evaluation_report" for name in names],
                ["candidate_comparison_chart", "candidate_speed_size_chart", "candidate_comparison"],
                name="compare_candidates_node",
            ),
            Node(
                submit,
                ["params:ingestion.raw_dir"]
                + [f"{name}.predictions" for name in names]
                + [f"{name}.evaluation_report" for name in names],
                "submission",
                name="make_submission_node",
            ),
        ]
    )


def _submission(raw_dir: str, *inputs: object, names: list[str]) -> object:
    """Split the flat node inputs into predictions and reports for :func:`make_submission`."""
    predictions, reports = inputs[: len(names)], inputs[len(names) :]
    return make_submission(*predictions, reports=list(reports), names=names, raw_dir=raw_dir)  # type: ignore[arg-type]


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
