"""Small ONNX detectors written node by node, for tests that need a graph of known structure."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ai_image_detection.contract import INPUT_NAME, OUTPUT_NAME

SIDE = 8
"""Input images are ``[N, SIDE, SIDE, 3]`` raw RGB."""


def matrix_product_detector(
    widths: tuple[int, ...] = (16, 16), outlier: float = 0.0, threshold: float = 0.5, seed: int = 0
) -> bytes:
    """A detector of ``len(widths) + 1`` matrix products: flatten, ``x / 255``, ReLU layers, sigmoid.

    With ``outlier`` each output column of the first layer gets that weight on the first pixel's red
    value, which :func:`images` keeps at 0: float32 never sees it, but a per-channel int8 scale fitted
    to it rounds every other weight of the first layer to zero. ``threshold`` goes into the metadata.
    """
    rng = np.random.default_rng(seed)
    features = SIDE * SIDE * 3
    sizes = (features, *widths, 1)
    weights = [rng.normal(0, 1 / np.sqrt(a), (a, b)).astype(np.float32) for a, b in pairwise(sizes)]
    if outlier:
        weights[0][0, :] = outlier
    initializers = [
        numpy_helper.from_array(np.array([-1, features], dtype=np.int64), "shape"),
        numpy_helper.from_array(np.array(1 / 255, dtype=np.float32), "scale"),
        *(numpy_helper.from_array(w, f"weight_{i}") for i, w in enumerate(weights)),
    ]
    nodes = [
        helper.make_node("Reshape", [INPUT_NAME, "shape"], ["flat"], name="flatten"),
        helper.make_node("Mul", ["flat", "scale"], ["h0"], name="scale"),
    ]
    for i in range(len(weights)):
        nodes.append(helper.make_node("MatMul", [f"h{i}", f"weight_{i}"], [f"z{i}"], name=f"layer_{i}"))
        last = i == len(weights) - 1
        nodes.append(
            helper.make_node("Sigmoid" if last else "Relu", [f"z{i}"], [OUTPUT_NAME if last else f"h{i + 1}"])
        )
    graph = helper.make_graph(
        nodes,
        "matrix_product_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", SIDE, SIDE, 3])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", 1])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(
        model, {"threshold": repr(threshold), "input_height": str(SIDE), "input_width": str(SIDE)}
    )
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def images(count: int, seed: int = 1) -> np.ndarray:
    """Random raw RGB images ``[count, SIDE, SIDE, 3]`` whose first pixel's red value is 0."""
    pixels = np.random.default_rng(seed).uniform(0, 255, (count, SIDE, SIDE, 3)).astype(np.float32)
    pixels[:, 0, 0, 0] = 0
    return pixels
