"""int8 quantisation keeps the contract and stays close to the float32 model."""

from __future__ import annotations

import keras
import numpy as np
import onnx
import pytest

from ai_image_detection.contract import INPUT_NAME, OUTPUT_NAME
from ai_image_detection.inference_cost import onnx_runner
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.onnx_export import export_onnx, onnx_predict
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.quantization import (
    DYNAMIC_QUANTIZATION_NOTE,
    QUANTIZATION_NOTE,
    dynamic_quantizable_nodes,
    quantize_int8,
    quantize_int8_dynamic,
)
from tests.onnx_graphs import images as zero_corner_images
from tests.onnx_graphs import matrix_product_detector


@pytest.fixture(scope="module")
def float_model() -> bytes:
    keras.utils.set_random_seed(0)
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[8, 16]))
    return export_onnx(model, opset=17, metadata={"threshold": "0.42"})


def images(seed: int, count: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, 32, 32, 3)).astype(np.float32)


def test_int8_model_keeps_the_contract_and_the_metadata(float_model: bytes) -> None:
    quantized = quantize_int8(float_model, images(0, 32))
    proto = onnx.load_from_string(quantized)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in proto.graph.node}
    assert onnx_metadata(quantized) == {**onnx_metadata(float_model), "quantization": QUANTIZATION_NOTE}
    assert onnx.TensorProto.INT8 in {tensor.data_type for tensor in proto.graph.initializer}, "int8 weights"


def test_int8_scores_follow_the_float_scores(float_model: bytes) -> None:
    quantized = quantize_int8(float_model, images(0, 32))
    held_out = images(1, 16)
    expected, actual = onnx_runner(float_model)(held_out), onnx_runner(quantized)(held_out)
    assert actual.shape == expected.shape == (16, 1)
    assert np.max(np.abs(actual - expected)) < 0.05
    assert np.corrcoef(actual.ravel(), expected.ravel())[0, 1] > 0.9


def test_no_calibration_images_is_a_clear_error(float_model: bytes) -> None:
    with pytest.raises(ValueError, match="at least one image"):
        quantize_int8(float_model, images(0, 0))


def test_dynamic_int8_keeps_the_contract_and_the_answers(float_model: bytes) -> None:
    quantized = quantize_int8_dynamic(float_model)
    assert onnx_metadata(quantized)["quantization"] == DYNAMIC_QUANTIZATION_NOTE
    assert onnx_metadata(quantized)["threshold"] == onnx_metadata(float_model)["threshold"]
    batch = images(1, 8)
    [expected], [actual] = onnx_predict(float_model, batch), onnx_predict(quantized, batch)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, atol=0.05)


def test_dynamic_int8_keeps_the_named_matrix_products_in_float32() -> None:
    model = matrix_product_detector(outlier=200.0)
    assert dynamic_quantizable_nodes(model) == ["layer_0", "layer_1", "layer_2"], "in graph order"
    mixed = quantize_int8_dynamic(model, keep_float=["layer_0"])
    nodes = onnx.load_from_string(mixed).graph.node
    assert {node.name for node in nodes if node.op_type == "MatMul"} == {"layer_0"}
    assert sum(node.op_type == "MatMulInteger" for node in nodes) == 2
    assert onnx_metadata(mixed)["quantization"].endswith(
        "1 matrix products kept in float32 (the most sensitive)"
    )
    batch = zero_corner_images(64)
    expected = onnx_runner(model)(batch)
    # the outlier's int8 scale rounds the first layer's other weights to zero; float32 keeps them
    assert np.abs(onnx_runner(quantize_int8_dynamic(model))(batch) - expected).mean() > 0.05
    np.testing.assert_allclose(onnx_runner(mixed)(batch), expected, atol=0.01)


def test_keeping_a_node_that_is_no_matrix_product_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"cannot keep \['flatten'\] in float32"):
        quantize_int8_dynamic(matrix_product_detector(), keep_float=["flatten"])
