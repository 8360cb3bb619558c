"""FLOPs counted on the ONNX graph, throughput measurement and the machine's peak."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from ai_image_detection.inference_cost import (
    gflops_per_image,
    images_per_second,
    machine_peak_gflops,
    matrix_product_gflops,
    onnx_matrix_product,
    onnx_runner,
)


def conv_then_dense() -> bytes:
    """NHWC image [N, 8, 8, 3] -> 3x3 conv to 4 channels -> global mean -> dense to 1 -> sigmoid."""
    rng = np.random.default_rng(0)
    initialisers = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal((4, 1)).astype(np.float32), "dense"),
    ]
    nodes = [
        helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "w"], ["features"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "dense"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability_ai"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, [None, 1])],
        initialisers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def test_flops_are_counted_by_hand() -> None:
    conv_macs = 8 * 8 * 4 * (3 * 3 * 3)  # every output pixel and channel: C_in x kh x kw
    dense_macs = 4 * 1
    assert gflops_per_image(conv_then_dense()) == pytest.approx(2 * (conv_macs + dense_macs) / 1e9)


def test_onnx_runner_and_throughput() -> None:
    run = onnx_runner(conv_then_dense())
    images = np.random.default_rng(1).uniform(0, 255, (4, 8, 8, 3)).astype(np.float32)
    assert run(images).shape == (4, 1)
    assert images_per_second(run, images, batch_size=4, min_seconds=0.01) > 0


def test_throughput_needs_a_whole_batch() -> None:
    with pytest.raises(ValueError, match="need at least 32 images for batch size 32, got 4"):
        images_per_second(lambda batch: batch, np.zeros((4, 8, 8, 3)), batch_size=32)


def test_onnx_matrix_product_is_numpy_s_product() -> None:
    rng = np.random.default_rng(2)
    a, b = (rng.standard_normal((64, 64), dtype=np.float32) for _ in range(2))
    np.testing.assert_allclose(onnx_matrix_product()(a, b), a @ b, rtol=1e-4, atol=1e-4)


def test_the_peak_is_the_best_library_s_matrix_product_rate() -> None:
    products = {"numpy": np.matmul, "onnxruntime": onnx_matrix_product()}
    rates = matrix_product_gflops(products, size=128, repeats=2)
    assert set(rates) == {"numpy", "onnxruntime"}
    assert all(rate > 0 for rate in rates.values())
    assert machine_peak_gflops(rates) == max(rates.values())


def test_the_peak_needs_a_measured_library() -> None:
    with pytest.raises(ValueError, match="at least one library"):
        machine_peak_gflops({})


def tokens_then_dense() -> bytes:
    """A ViT-like reshape whose target shape is computed at run time, then a matrix product.

    ``image [N, 8, 8, 3] -> [64 N, 3] -> MatMul [3, 5]``: the token count comes out of arithmetic
    on the input's shape, which ONNX shape inference does not follow.
    """
    weight = numpy_helper.from_array(np.ones((3, 5), dtype=np.float32), "w")
    three = numpy_helper.from_array(np.array([3.0], dtype=np.float32), "three")
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Cast", ["shape"], ["shape_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceProd", ["shape_f"], ["size_f"], keepdims=1),
        helper.make_node("Div", ["size_f", "three"], ["tokens_f"]),
        helper.make_node("Cast", ["tokens_f"], ["tokens"], to=TensorProto.INT64),
        helper.make_node("Concat", ["tokens", "three_i"], ["target"], axis=0),
        helper.make_node("Reshape", ["image", "target"], ["sequence"]),
        helper.make_node("MatMul", ["sequence", "w"], ["probability_ai"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, None)],
        [weight, three, numpy_helper.from_array(np.array([3], dtype=np.int64), "three_i")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def test_flops_of_shapes_known_only_at_run_time_are_counted() -> None:
    assert gflops_per_image(tokens_then_dense()) == pytest.approx(2 * 64 * 3 * 5 / 1e9)
