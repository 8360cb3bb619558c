"""The ``export`` pipeline: ``kedro run --pipelines export``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial, update_wrapper
from typing import Any

from kedro.pipeline import Node, Pipeline

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

    def bound(func: Callable[..., Any]) -> Callable[..., Any]:
        return update_wrapper(partial(func, names=names), func)

    return Pipeline(
        [
            Node(
                bound(select_candidate),
                ["params:export"] + [f"{name}.evaluation_report" for name in names],
                "model_selection",
                name="select_candidate_node",
            ),
            Node(
                bound(export_selected),
                ["params:export", "model_selection", "manifest_md5", *models],
                "detector_onnx",
                name="export_onnx_node",
            ),
            Node(
                bound(verify_parity),
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
