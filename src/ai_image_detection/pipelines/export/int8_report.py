"""Which int8 variant is kept, and how it compares with float32 (``quantization_report``).

The figures of every variant are measured the same way, by :func:`runtime_figures`, on the same
validation images; :func:`int8_report` reads them
(:func:`~ai_image_detection.pipelines.export.nodes.quantize_detector`). When no variant is within
the accepted F1 drop, :func:`mixed_precision_int8` keeps the most sensitive matrix products in
float32 and quantises the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ai_image_detection.inference_cost import images_per_second, onnx_runner
from ai_image_detection.metrics import binary_metrics
from ai_image_detection.quantization import quantize_int8_dynamic

logger = logging.getLogger(__name__)

MIN_GROUPS = 2
"""Mixed precision keeps some groups in float32 and quantises at least one: two at the least."""

F1_TIE = 0.001
"""Validation F1 differences within this are ties between the int8 variants (the faster wins)."""


def runtime_figures(
    model: bytes, images: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Validation F1 at ``threshold`` and ONNX Runtime images/s at batch 1 and 32."""
    run = onnx_runner(model)
    figures = {"f1": binary_metrics(labels, run(images)[:, 0], threshold)["f1"]}
    for batch in (1, 32):
        figures[f"images_per_second_batch{batch}"] = images_per_second(run, images, min(batch, len(images)))
    return figures


def int8_report(
    figures: dict[str, dict[str, float]], calibration_images: int, validation_images: int, max_f1_drop: float
) -> dict[str, Any]:
    """Keep the int8 variant with the higher F1, the faster at batch 1 when within ``F1_TIE``.

    Args:
        figures: :func:`runtime_figures` of ``fp32``, then of each int8 variant by its method.
        calibration_images: Training images the static variant was calibrated on.
        validation_images: Validation images the figures were measured on.
        max_f1_drop: The F1 the kept variant may lose against float32 (a share, not points).

    Returns:
        ``method`` (the kept variant), the image counts, ``methods`` (the figures of every
        variant), validation F1 and ONNX Runtime images/s at batch 1 and 32 of float32 and of
        the kept int8 model, the change in F1 points, the speed-ups, and
        ``within_f1_tolerance``.
    """
    variants = [name for name in figures if name != "fp32"]
    best_f1 = max(figures[name]["f1"] for name in variants)
    method = max(
        (name for name in variants if figures[name]["f1"] >= best_f1 - F1_TIE),
        key=lambda name: figures[name]["images_per_second_batch1"],
    )
    report: dict[str, Any] = {
        "method": method,
        "calibration_images": calibration_images,
        "validation_images": validation_images,
        "methods": {name: figures[name] for name in variants},
    }
    for precision, name in (("fp32", "fp32"), ("int8", method)):
        report[f"f1_{precision}"] = figures[name]["f1"]
        for batch in (1, 32):
            report[f"images_per_second_{precision}_batch{batch}"] = figures[name][
                f"images_per_second_batch{batch}"
            ]
    report["f1_change_points"] = 100 * (report["f1_int8"] - report["f1_fp32"])
    for batch in (1, 32):
        report[f"speedup_batch{batch}"] = (
            report[f"images_per_second_int8_batch{batch}"] / report[f"images_per_second_fp32_batch{batch}"]
        )
    report["within_f1_tolerance"] = -report["f1_change_points"] <= 100 * max_f1_drop
    return report


def mixed_precision_int8(
    detector_onnx: bytes,
    nodes: list[str],
    images: np.ndarray,
    labels: np.ndarray,
    threshold: float,
    groups: int,
    max_f1_drop: float,
) -> tuple[bytes, dict[str, Any]]:
    """Dynamic int8 with the most sensitive matrix products left in float32.

    The matrix products are cut into ``groups`` runs of consecutive nodes (in a transformer, about
    a block each). A group's sensitivity is the mean absolute change of P(AI) on ``images`` when it
    alone is quantised. Groups are then kept in float32, the most sensitive first, until validation
    F1 at ``threshold`` lies within ``max_f1_drop`` of float32, or only one group is left to
    quantise. Sensitivity needs no labels; the stop does (the same validation images and F1 as the
    int8 gate, so the report is that gate's figure, not an independent estimate).

    Args:
        detector_onnx: The float32 export.
        nodes: Its matrix products in graph order (:func:`dynamic_quantizable_nodes`).
        images: Validation images ``[N, S, S, 3]`` raw RGB.
        labels: Their labels (1 = AI).
        threshold: The stored forced-choice threshold.
        groups: How many runs of matrix products to judge (at most one per node).
        max_f1_drop: The F1 the int8 model may lose (a share, not points).

    Returns:
        The int8 model and ``{"groups", "sensitivity" (per group, in graph order), "float_groups"
        (their indices, most sensitive first), "float_nodes", "quantized_nodes"}``.

    Raises:
        ValueError: If the model has fewer than two matrix products (nothing to choose between).
    """
    if min(len(nodes), groups) < MIN_GROUPS:
        raise ValueError(
            f"mixed precision needs {MIN_GROUPS} groups of matrix products: {len(nodes)} nodes, "
            f"{groups} groups asked"
        )
    runs = [list(run) for run in np.array_split(np.asarray(nodes, dtype=object), min(groups, len(nodes)))]
    reference = onnx_runner(detector_onnx)(images)[:, 0]
    f1_fp32 = binary_metrics(labels, reference, threshold)["f1"]

    def scores(keep_float: list[str]) -> tuple[bytes, np.ndarray]:
        model = quantize_int8_dynamic(detector_onnx, keep_float)
        return model, onnx_runner(model)(images)[:, 0]

    sensitivity = []
    for index, run in enumerate(runs):
        _, quantized = scores([node for other in runs if other is not run for node in other])
        sensitivity.append(float(np.mean(np.abs(quantized - reference))))
        logger.info(
            "int8 sensitivity of group %d/%d (%d nodes): %.4f",
            index + 1,
            len(runs),
            len(run),
            sensitivity[-1],
        )
    kept: list[int] = []
    for index in np.argsort(sensitivity)[::-1][: len(runs) - 1]:
        kept.append(int(index))
        model, quantized = scores([node for group in kept for node in runs[group]])
        f1 = binary_metrics(labels, quantized, threshold)["f1"]
        logger.info("int8 with groups %s in float32: F1 %.4f (float32 %.4f)", kept, f1, f1_fp32)
        if f1_fp32 - f1 <= max_f1_drop:
            break
    float_nodes = sum(len(runs[group]) for group in kept)
    return model, {
        "groups": len(runs),
        "sensitivity": sensitivity,
        "float_groups": kept,
        "float_nodes": float_nodes,
        "quantized_nodes": len(nodes) - float_nodes,
    }
