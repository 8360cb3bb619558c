"""Mixed precision: the matrix products whose int8 weights move the scores most stay in float32."""

from __future__ import annotations

import numpy as np
import pytest

from ai_image_detection.inference_cost import onnx_runner
from ai_image_detection.metrics import binary_metrics
from ai_image_detection.pipelines.export.int8_report import mixed_precision_int8
from ai_image_detection.quantization import dynamic_quantizable_nodes
from tests.onnx_graphs import images, matrix_product_detector


def labelled(model: bytes) -> tuple[np.ndarray, np.ndarray, float]:
    """Images labelled by the float model itself at its median score: float32 F1 is 1."""
    batch = images(200)
    scores = onnx_runner(model)(batch)[:, 0]
    threshold = float(np.median(scores))
    return batch, (scores >= threshold).astype(int), threshold


def test_the_sensitive_layer_stays_float32_and_the_rest_is_int8() -> None:
    model = matrix_product_detector(outlier=200.0)
    batch, labels, threshold = labelled(model)
    int8, report = mixed_precision_int8(
        model, dynamic_quantizable_nodes(model), batch, labels, threshold, groups=3, max_f1_drop=0.01
    )
    assert report["groups"] == 3
    assert int(np.argmax(report["sensitivity"])) == 0, "the outlier layer moves the scores most"
    assert report["sensitivity"][0] > 10 * max(report["sensitivity"][1:])
    assert (report["float_groups"], report["float_nodes"], report["quantized_nodes"]) == ([0], 1, 2)
    assert binary_metrics(labels, onnx_runner(int8)(batch)[:, 0], threshold)["f1"] == 1.0


def test_at_least_one_group_is_quantised_even_when_none_is_enough() -> None:
    model = matrix_product_detector(outlier=200.0)
    batch, labels, threshold = labelled(model)
    _, report = mixed_precision_int8(
        model, dynamic_quantizable_nodes(model), batch, labels, threshold, groups=3, max_f1_drop=-1.0
    )
    assert len(report["float_groups"]) == 2 and report["quantized_nodes"] == 1


def test_one_group_leaves_nothing_to_choose() -> None:
    model = matrix_product_detector()
    batch, labels, threshold = labelled(model)
    with pytest.raises(ValueError, match="needs 2 groups"):
        mixed_precision_int8(
            model, dynamic_quantizable_nodes(model), batch, labels, threshold, groups=1, max_f1_drop=0.01
        )
