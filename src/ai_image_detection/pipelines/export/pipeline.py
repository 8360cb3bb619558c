"""The ``export`` pipeline: ``kedro run --pipelines export``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines import bind
from ai_image_detection.pipelines.export.monitoring_reference import build_monitoring_reference
from ai_image_detection.pipelines.export.nodes import (
    export_candidates,
    make_submission,
    measure_onnx_latency,
    quantize_detector,
    register_detector,
    select_candidate,
    verify_parity,
    write_model_card,
)
from ai_image_detection.session_config import candidate_names


def create_pipeline(**kwargs: object) -> Pipeline:
    """Export each candidate calibrated, select (unseen families first), submit, gate, quantise, register.

    The registered version's validation scores and input statistics are logged with it (the
    ``monitoring`` pipeline's reference).
    """
    names = candidate_names()
    models = [f"{name}.trained_model" for name in names]
    calibrations = [f"{name}.calibration" for name in names]

    return Pipeline(
        [
            Node(
                bind(export_candidates, names=names),
                [
                    "params:export",
                    "candidate_comparison",
                    "manifest_md5",
                    "image_manifest@pandas",
                    *models,
                    *calibrations,
                ],
                "candidate_onnx",
                name="export_candidates_node",
            ),
            Node(
                measure_onnx_latency,
                ["params:export", "candidate_onnx", "image_manifest@pandas"],
                "onnx_latency",
                name="measure_onnx_latency_node",
            ),
            Node(
                select_candidate,
                ["params:export", "candidate_comparison", "onnx_latency"],
                "model_selection",
                name="select_candidate_node",
            ),
            Node(
                bind(make_submission, names=names),
                ["params:ingestion.raw_dir", "model_selection", *[f"{name}.predictions" for name in names]],
                "submission",
                name="make_submission_node",
            ),
            Node(
                bind(verify_parity, names=names),
                [
                    "params:export",
                    "candidate_onnx",
                    "model_selection",
                    "image_manifest@pandas",
                    *models,
                    *calibrations,
                ],
                ["detector_onnx", "parity_report"],
                name="verify_parity_node",
            ),
            Node(
                quantize_detector,
                ["params:export", "detector_onnx", "image_manifest@pandas"],
                ["detector_int8_onnx", "quantization_report"],
                name="quantize_detector_node",
            ),
            Node(
                register_detector,
                [
                    "params:export",
                    "detector_onnx",
                    "detector_int8_onnx",
                    "quantization_report",
                    "image_manifest@pandas",
                    "parity_report",
                    "wild_generated_images",
                    "params:evaluation.wild_generated_human_resave",
                    "params:evaluation.robustness",
                ],
                "export_report",
                name="register_detector_node",
            ),
            Node(
                bind(build_monitoring_reference, names=names),
                [
                    "export_report",
                    "detector_onnx",
                    "image_manifest@pandas",
                    *[f"{name}.predictions" for name in names],
                ],
                "monitoring_reference",
                name="build_monitoring_reference_node",
            ),
            Node(
                bind(write_model_card, names=names),
                [
                    "export_report",
                    "quantization_report",
                    "image_manifest@pandas",
                    "unseen_family_table",
                    *[f"{name}.evaluation_report" for name in names],
                ],
                "model_card",
                name="write_model_card_node",
            ),
        ]
    )
