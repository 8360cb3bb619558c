"""The model contract, on the ONNX side: export a detector and prove the export is faithful.

Contract (``DESIGN.md``): input ``image`` float32 NHWC ``[N, H, W, 3]`` with raw 0–255 RGB
(normalisation inside the graph), output ``[N, 1]`` = probability that the image is
AI-generated. H, W, the decision threshold, the class names, the MLflow run id and the data
version travel in the ONNX metadata, so serving never hard-codes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import keras
import numpy as np
import onnx
import onnxruntime as ort
import tensorflow as tf
import tf2onnx

from ai_image_detection.contract import CLASS_NAMES, INPUT_NAME, OUTPUT_NAME


class ParityError(AssertionError):
    """Keras and ONNX Runtime disagree on the same images."""


def export_onnx(model: keras.Model, opset: int, metadata: Mapping[str, str]) -> bytes:
    """Convert a detector to ONNX with a dynamic batch and the contract's names.

    Args:
        model: A detector taking ``[N, H, W, 3]`` raw RGB and returning ``[N, 1]``.
        opset: ONNX opset.
        metadata: Extra metadata (threshold, run id, data version, ...); the input size and
            class names are always added.

    Returns:
        The serialised ONNX model.
    """
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    signature = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    proto.graph.output[0].name = _rename_output(proto, OUTPUT_NAME)
    entries = {
        "input_height": str(height),
        "input_width": str(width),
        "class_names": json.dumps(CLASS_NAMES),
        **metadata,
    }
    onnx.helper.set_model_props(proto, entries)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _rename_output(proto: onnx.ModelProto, name: str) -> str:
    """Rename the graph's single output (and the node that produces it) to ``name``."""
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [name if output == old else output for output in node.output]
    return name


def onnx_metadata(onnx_model: bytes) -> dict[str, str]:
    """The metadata properties of a serialised ONNX model."""
    return {prop.key: prop.value for prop in onnx.load_from_string(onnx_model).metadata_props}


def onnx_predict(onnx_model: bytes, images: np.ndarray) -> np.ndarray:
    """Run the ONNX model on CPU with ONNX Runtime: ``[N, H, W, 3]`` → ``[N, 1]``."""
    session = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: images.astype(np.float32)})[0])


def check_parity(model: keras.Model, onnx_model: bytes, images: np.ndarray, tolerance: float) -> float:
    """Fail unless Keras and ONNX Runtime agree to ``tolerance`` on ``images``.

    Args:
        model: The Keras detector.
        onnx_model: Its export.
        images: Real images, ``[N, H, W, 3]`` raw RGB.
        tolerance: Largest accepted absolute difference of probabilities.

    Returns:
        The largest absolute difference found.

    Raises:
        ParityError: With the numbers, when the largest difference exceeds ``tolerance``.
    """
    expected = model.predict(images, verbose=0)
    actual = onnx_predict(onnx_model, images)
    if actual.shape != expected.shape:
        raise ParityError(f"ONNX output shape {actual.shape} differs from Keras {expected.shape}")
    difference = float(np.max(np.abs(actual - expected)))
    if difference > tolerance:
        worst = int(np.argmax(np.abs(actual - expected).ravel()))
        raise ParityError(
            f"ONNX and Keras disagree by {difference:.3g} (> {tolerance:g}); worst image #{worst}: "
            f"Keras {expected.ravel()[worst]:.6f}, ONNX {actual.ravel()[worst]:.6f}"
        )
    return difference
