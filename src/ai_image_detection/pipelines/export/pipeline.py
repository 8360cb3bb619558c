"""The ``export`` pipeline: ``kedro run --pipelines export``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines import bind
from ai_image_detection.pipelines.export.nodes import (
    export_selected,
    register_detector,
    select_candidate,
    verify_parity,
)
from ai_image_detection.pipelines.training.pipeline import candidate_names


def create_pipeline(**kwargs: object) -> Pipeline:
    """Select by the rule in ``parameters_export.yml``, export to ONNX, check parity, register."""
    names = candidate_names()
    models = [f"{name}.trained_model" for name in names]

    return Pipeline(
        [
            Node(
                select_candidate,
                ["params:export", "candidate_comparison"],
                "model_selection",
                name="select_candidate_node",
            ),
            Node(
                bind(export_selected, names=names),
                ["params:export", "model_selection", "manifest_md5", *models],
                "detector_onnx",
                name="export_onnx_node",
            ),
            Node(
                bind(verify_parity, names=names),
                ["params:export", "detector_onnx", "model_selection", "image_manifest@pandas", *models],
                "parity_report",
                name="verify_parity_node",
            ),
            Node(
                register_detector,
                ["params:export", "detector_onnx", "image_manifest@pandas", "parity_report"],
                "export_report",
                name="register_detector_node",
            ),
        ]
    )
