"""int8 quantisation of the ONNX detector with ONNX Runtime, two ways.

*Static* (:func:`quantize_int8`): the convolutions and matrix products get int8 weights (per
output channel) and int8 activations calibrated on real training images (QDQ format, which ONNX
Runtime fuses into integer kernels on CPU): what a convolutional network needs.
*Dynamic* (:func:`quantize_int8_dynamic`): int8 weights of the matrix products, activations
quantised per batch at run time: what a transformer needs (its activations have outliers that
one calibrated range per tensor clips; CLIP ViT-B/16 lost 24 points of F1 static, none dynamic).
Dynamic quantisation can leave named matrix products in float32 (``keep_float``): the export
pipeline's sensitivity search (:mod:`ai_image_detection.pipelines.export.int8_report`) keeps the
ones whose int8 weights move the scores most, when quantising them all costs more F1 than allowed.
The export pipeline makes the variants and keeps the best. The contract is unchanged: float32 raw
RGB in, float32 outputs, the same metadata plus ``quantization``.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from ai_image_detection.contract import INPUT_NAME
from ai_image_detection.onnx_runtime import onnx_metadata

logger = logging.getLogger(__name__)

QUANTIZED_OPS = ["Conv", "MatMul", "Gemm"]
DYNAMIC_OPS = ["MatMul", "Gemm"]
QUANTIZATION_NOTE = "int8 static QDQ, per-channel weights, activations calibrated on training images"
DYNAMIC_QUANTIZATION_NOTE = (
    "int8 dynamic: per-channel int8 weights of the matrix products, activations per batch"
)


class _ImageBatches(CalibrationDataReader):
    """Feeds calibration images to ONNX Runtime's calibrator, a few at a time."""

    def __init__(self, images: np.ndarray, batch_size: int) -> None:
        self._batches = iter(np.array_split(images.astype(np.float32), max(1, len(images) // batch_size)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def quantize_int8(onnx_model: bytes, calibration_images: np.ndarray, batch_size: int = 16) -> bytes:
    """Quantise a float32 detector to int8 (weights and activations), keeping its contract.

    Args:
        onnx_model: The float32 export.
        calibration_images: Real images ``[N, H, W, 3]`` raw RGB, from the training split
            (never the images the int8 model is then judged on).
        batch_size: Calibration batch size.

    Returns:
        The serialised int8 model, with the float model's metadata and a ``quantization`` entry.

    Raises:
        ValueError: If there are no calibration images.
    """
    if len(calibration_images) == 0:
        raise ValueError("int8 calibration needs at least one image, got none")
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = _prepared(onnx_model, Path(scratch)), Path(scratch) / "int8.onnx"
        quantize_static(
            str(prepared),
            str(quantized),
            _ImageBatches(calibration_images, batch_size),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(quantized))
    logger.info("int8 model: %d calibration images", len(calibration_images))
    return _with_metadata(proto, onnx_model, QUANTIZATION_NOTE)


def quantize_int8_dynamic(onnx_model: bytes, keep_float: Sequence[str] = ()) -> bytes:
    """Quantise the matrix products' weights to int8 (per channel); activations per batch at run time.

    Args:
        onnx_model: The float32 export.
        keep_float: Names of matrix products (:func:`dynamic_quantizable_nodes`) left in float32.

    Returns:
        The serialised int8 model, with the float model's metadata and a ``quantization`` entry
        (which says how many matrix products stayed float32, when any did).

    Raises:
        ValueError: If ``keep_float`` names a node that is not one of the model's matrix products.
    """
    with tempfile.TemporaryDirectory() as scratch:
        prepared, quantized = _prepared(onnx_model, Path(scratch)), Path(scratch) / "int8.onnx"
        unknown = sorted(set(keep_float) - set(_matrix_products(onnx.load(str(prepared)))))
        if unknown:
            raise ValueError(f"cannot keep {unknown} in float32: they are not matrix products of the model")
        quantize_dynamic(
            str(prepared),
            str(quantized),
            op_types_to_quantize=DYNAMIC_OPS,
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=list(keep_float),
        )
        proto = onnx.load(str(quantized))
    note = DYNAMIC_QUANTIZATION_NOTE
    if keep_float:
        note += f"; {len(set(keep_float))} matrix products kept in float32 (the most sensitive)"
    return _with_metadata(proto, onnx_model, note)


def dynamic_quantizable_nodes(onnx_model: bytes) -> list[str]:
    """The matrix products :func:`quantize_int8_dynamic` converts, by name, in graph order."""
    with tempfile.TemporaryDirectory() as scratch:
        return _matrix_products(onnx.load(str(_prepared(onnx_model, Path(scratch)))))


def _matrix_products(proto: onnx.ModelProto) -> list[str]:
    return [node.name for node in proto.graph.node if node.op_type in DYNAMIC_OPS]


def _prepared(onnx_model: bytes, scratch: Path) -> Path:
    """The float model written to ``scratch`` and pre-processed for quantisation (shapes, fusions)."""
    source, prepared = scratch / "f32.onnx", scratch / "prep.onnx"
    source.write_bytes(onnx_model)
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    return prepared


def _with_metadata(proto: onnx.ModelProto, float_model: bytes, note: str) -> bytes:
    """``proto`` with the float model's metadata and ``quantization: note``, serialised."""
    metadata = onnx_metadata(float_model)
    onnx.helper.set_model_props(proto, {**metadata, "quantization": note})
    return bytes(proto.SerializeToString())
