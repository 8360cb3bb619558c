"""What inference costs on this CPU: throughput, FLOPs and the machine's peak.

Used by model selection (latency budget), by the int8 report and by ``make bench``, so every
figure of speed in the project comes from the same measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
import onnx

from ai_image_detection.contract import INPUT_NAME, OUTPUT_NAME
from ai_image_detection.onnx_runtime import onnx_session
from ai_image_detection.throughput import calls_per_second

_COUNTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def onnx_runner(onnx_model: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``images [N, H, W, 3] -> P(AI) [N, 1]`` backed by one warm session."""
    session = onnx_session(onnx_model)

    def run(images: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: images.astype(np.float32, copy=False)})[0])

    return run


def images_per_second(
    run: Callable[[np.ndarray], object],
    images: np.ndarray,
    batch_size: int,
    min_seconds: float = 1.0,
    min_calls: int = 5,
) -> float:
    """Steady-state throughput of ``run`` on batches of ``batch_size`` cut from ``images``.

    One warm-up call, then calls until both ``min_calls`` and ``min_seconds`` are reached.

    Args:
        run: The inference function (Keras ``predict``, an ONNX session, ...).
        images: At least ``batch_size`` images.
        batch_size: Images per call.
        min_seconds: Shortest measured time.
        min_calls: Fewest measured calls.

    Returns:
        Images per second.

    Raises:
        ValueError: If there are fewer images than ``batch_size``.
    """
    if len(images) < batch_size:
        raise ValueError(f"need at least {batch_size} images for batch size {batch_size}, got {len(images)}")
    batch = np.ascontiguousarray(images[:batch_size], dtype=np.float32)
    return batch_size * calls_per_second(run, batch, min_seconds, min_calls)


def gflops_per_image(onnx_model: bytes) -> float:
    """Floating-point operations for one image, counted on the ONNX graph (2 per multiply-add).

    Convolutions (including transposed) and matrix products are counted from their shapes at
    batch 1: those ONNX shape inference gives, and, for tensors it cannot infer (shapes computed
    at run time, as in a ViT's reshapes), those of one run on a blank image. Element-wise work is
    left out, as is usual.

    Args:
        onnx_model: A float32 model obeying the contract.

    Returns:
        GFLOPs per image.

    Raises:
        ValueError: If a counted operator's shapes cannot be inferred.
    """
    proto = onnx.load_from_string(onnx_model)
    proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    shapes = {tensor.name: list(tensor.dims) for tensor in proto.graph.initializer}
    for value in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    counted = [node for node in proto.graph.node if node.op_type in _COUNTED_OPS]
    unknown = {name for node in counted for name in (node.input[0], node.input[1], node.output[0])} - set(
        shapes
    )
    shapes |= _run_time_shapes(proto, sorted(unknown))
    flops = 0
    for node in counted:
        try:
            out = shapes[node.output[0]]
            weight = shapes[node.input[1]]
        except KeyError as missing:
            raise ValueError(
                f"cannot infer the shape of {missing} for {node.op_type} node {node.name!r}"
            ) from None
        if node.op_type == "Conv":
            macs = int(np.prod(out)) * int(np.prod(weight[1:]))  # each output: C_in/groups x kh x kw
        elif node.op_type == "ConvTranspose":
            macs = int(np.prod(shapes[node.input[0]])) * int(np.prod(weight[1:]))
        else:
            gemm_transposes_b = any(a.name == "transB" and a.i for a in node.attribute)
            inner = weight[-1] if gemm_transposes_b else weight[-2]
            macs = int(np.prod(out)) * int(inner)
        flops += 2 * macs
    return flops / 1e9


def _run_time_shapes(proto: onnx.ModelProto, names: list[str]) -> dict[str, list[int]]:
    """The shapes of the float tensors ``names`` in one ONNX Runtime run on a blank batch-1 image."""
    if not names:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.extend(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names
    )
    session = onnx_session(probe.SerializeToString())
    image = session.get_inputs()[0]
    blank = np.zeros([1, *image.shape[1:]], dtype=np.float32)
    tensors = session.run(names, {image.name: blank})
    return {name: list(tensor.shape) for name, tensor in zip(names, tensors, strict=True)}


MatrixProduct = Callable[[np.ndarray, np.ndarray], object]
"""A float32 matrix product ``(a, b) -> a @ b`` of one library (its result in any array type)."""


def onnx_matrix_product() -> MatrixProduct:
    """ONNX Runtime's float32 ``MatMul`` (the kernels the exported detectors run) as a function."""
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["a", "b"], ["product"])],
        "matrix_product",
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, ["n", "n"]) for name in ("a", "b")],
        [onnx.helper.make_tensor_value_info("product", onnx.TensorProto.FLOAT, ["n", "n"])],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    session = onnx_session(model.SerializeToString())

    def product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(["product"], {"a": a, "b": b})[0])

    return product


def matrix_product_gflops(
    products: Mapping[str, MatrixProduct], size: int = 4096, repeats: int = 3
) -> dict[str, float]:
    """Each library's float32 GFLOP/s on a square matrix product (best of ``repeats``, after a warm-up).

    No single library reaches this CPU's peak: NumPy's BLAS, ONNX Runtime's MLAS and TensorFlow's
    oneDNN each use their own kernels (on a 2-core AVX-512 machine: about 240, 415 and 440 GFLOP/s), so
    the machine's peak is the best of them (:func:`machine_peak_gflops`), never one library's figure.

    Args:
        products: Each library's name and its matrix product.
        size: Side of the square matrices (large enough that the product is compute-bound).
        repeats: Timed products per library.

    Returns:
        Each library's name and its GFLOP/s.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    rates = {}
    for name, product in products.items():
        np.asarray(product(a, b))
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            np.asarray(product(a, b))
            best = min(best, time.perf_counter() - started)
        rates[name] = 2 * size**3 / best / 1e9
    return rates


def machine_peak_gflops(rates: Mapping[str, float]) -> float:
    """This machine's float32 peak: the best library's matrix-product GFLOP/s (:func:`matrix_product_gflops`).

    Raises:
        ValueError: If no library was measured.
    """
    if not rates:
        raise ValueError("the peak needs at least one library's matrix-product rate")
    return max(rates.values())
