"""The model contract, on the ONNX side: export a detector and prove the export is faithful.

Contract (README, "Export: the model contract"; names in :mod:`.contract`): input ``image``
float32 NHWC ``[N, H, W, 3]`` with raw 0–255 RGB (normalisation inside the graph), output
``[N, 1]`` = probability that the image is AI-generated. H, W, the decision threshold, the class
names, the MLflow run id and the data version travel in the ONNX metadata, so serving never
hard-codes them.
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

from ai_image_detection.contract import (
    CLASS_NAMES,
    FAMILIES_KEY,
    FAMILY_OUTPUT_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
)
from ai_image_detection.models.heads import model_families
from ai_image_detection.onnx_runtime import onnx_session

ISOLATED_CONVERSION_PARAMETERS = 20_000_000
"""Models with more weights than this are converted in a child process (CLIP ViT-B/16 has 86 M);
smaller ones in this process, which saves the child's start-up (importing TensorFlow, tf2onnx)."""


class ParityError(AssertionError):
    """Keras and ONNX Runtime disagree on the same images."""


def export_onnx(model: keras.Model, opset: int, metadata: Mapping[str, str]) -> bytes:
    """Convert a detector to ONNX with a dynamic batch and the contract's names.

    Args:
        model: A detector taking ``[N, H, W, 3]`` raw RGB and returning ``[N, 1]`` (and the
            attribution ``[N, K]`` when it has that head).
        opset: ONNX opset.
        metadata: Extra metadata (threshold, run id, data version, ...); the input size, the
            class names and (with attribution) the family names are always added.

    Returns:
        The serialised ONNX model.
    """
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    if model.count_params() <= ISOLATED_CONVERSION_PARAMETERS:
        proto = onnx.load_from_string(_converted(model, opset))
    else:
        with tempfile.TemporaryDirectory(prefix="onnx-export-") as folder:
            saved = Path(folder) / "detector.keras"
            model.save(saved)
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as converter:
                proto = onnx.load_from_string(converter.submit(_convert, str(saved), opset).result())
    families = model_families(model)
    for index, name in enumerate([OUTPUT_NAME, FAMILY_OUTPUT_NAME][: len(proto.graph.output)]):
        _rename_output(proto, index, name)
    entries = {
        "input_height": str(height),
        "input_width": str(width),
        "class_names": json.dumps(CLASS_NAMES),
        **({FAMILIES_KEY: json.dumps(families)} if families else {}),
        **metadata,
    }
    onnx.helper.set_model_props(proto, entries)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


def _convert(saved_model: str, opset: int) -> bytes:
    """tf2onnx's conversion of a saved detector, run in a process of its own.

    Converting a model of CLIP ViT-B/16's size makes tf2onnx (TensorFlow's freezing and graph
    optimisation, then its own passes) peak at about 40 times the weights (13 GB); in a child
    process all of it goes back to the system when the conversion ends, instead of staying in the
    run's heap where it would add up with every later step.
    """
    import ai_image_detection.models  # noqa: F401, PLC0415  registers the custom layers for loading

    return _converted(keras.saving.load_model(saved_model), opset)


def _converted(model: keras.Model, opset: int) -> bytes:
    """tf2onnx's conversion of a detector with a dynamic batch, serialised."""
    height, width = int(model.input_shape[1]), int(model.input_shape[2])
    signature = (tf.TensorSpec((None, height, width, 3), tf.float32, name=INPUT_NAME),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    return bytes(proto.SerializeToString())


def _rename_output(proto: onnx.ModelProto, index: int, name: str) -> None:
    """Rename the graph's ``index``-th output (and the node that produces it) to ``name``."""
    old = proto.graph.output[index].name
    for node in proto.graph.node:
        node.output[:] = [name if output == old else output for output in node.output]
    proto.graph.output[index].name = name


def onnx_predict(onnx_model: bytes, images: np.ndarray) -> list[np.ndarray]:
    """Run the ONNX model on CPU with ONNX Runtime: ``[N, H, W, 3]`` → every output, in graph order."""
    outputs = onnx_session(onnx_model).run(None, {INPUT_NAME: images.astype(np.float32)})
    return [np.asarray(output) for output in outputs]


def check_parity(model: keras.Model, onnx_model: bytes, images: np.ndarray, tolerance: float) -> float:
    """Fail unless Keras and ONNX Runtime agree to ``tolerance`` on ``images``, on every output.

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
    predicted = model.predict(images, verbose=0)
    expected = [np.asarray(p) for p in (predicted if isinstance(predicted, list | tuple) else [predicted])]
    actual = onnx_predict(onnx_model, images)
    if [a.shape for a in actual] != [e.shape for e in expected]:
        raise ParityError(
            f"ONNX output shapes {[a.shape for a in actual]} differ from Keras {[e.shape for e in expected]}"
        )
    largest = 0.0
    for name, onnx_output, keras_output in zip(
        [OUTPUT_NAME, FAMILY_OUTPUT_NAME], actual, expected, strict=False
    ):
        gap = np.abs(onnx_output - keras_output)
        difference = float(np.max(gap))
        if difference > tolerance:
            worst = int(np.argmax(gap.ravel()))
            raise ParityError(
                f"ONNX and Keras disagree on {name} by {difference:.3g} (> {tolerance:g}); worst entry "
                f"#{worst}: Keras {keras_output.ravel()[worst]:.6f}, ONNX {onnx_output.ravel()[worst]:.6f}"
            )
        largest = max(largest, difference)
    return largest
