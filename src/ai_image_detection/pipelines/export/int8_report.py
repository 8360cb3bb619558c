"""Which int8 variant is kept, and how it compares with float32 (``quantization_report``).

The figures of every variant are measured the same way, by :func:`runtime_figures`, on the same
validation images; :func:`int8_report` reads them
(:func:`~ai_image_detection.pipelines.export.nodes.quantize_detector`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ai_image_detection.inference_cost import images_per_second, onnx_runner
from ai_image_detection.metrics import binary_metrics

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
