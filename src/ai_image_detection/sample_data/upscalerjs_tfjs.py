"""UpscalerJS's TensorFlow.js layers models, rebuilt in Keras 3 straight from their npm tarball.

:func:`load_tfjs_layers_model` reads ``model.json`` and its weight shards without the
``tensorflowjs`` package, dequantises the weights, and rebuilds the network with the Keras 3
functional API, UpscalerJS's custom layers (``MultiplyBeta``, ``PixelShuffle<n>x``) included.
"""

from __future__ import annotations

import json
import logging
import re
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import keras
import numpy as np
from numpy.typing import NDArray

from ai_image_detection.sample_data.upscalerjs_packages import UpscalerJSError

logger = logging.getLogger(__name__)

# Bytes per element and NumPy dtype of the stored values (little-endian, as TF.js writes them).
_STORED_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
    "bool": np.dtype("u1"),
    "uint8": np.dtype("u1"),
    "uint16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
}


def read_tfjs_package(tarball: Path, model_json: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Read a ``model.json`` and the files next to it from an npm tarball, in one pass.

    Args:
        tarball: The ``.tgz`` file.
        model_json: Path of ``model.json`` inside the tarball (``package/...``).

    Returns:
        The parsed ``model.json`` and the bytes of every file in its directory, keyed by name.

    Raises:
        UpscalerJSError: If the tarball is unreadable or has no such ``model.json``.
    """
    directory = PurePosixPath(model_json).parent
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(tarball, mode="r|gz") as archive:
            for member in archive:
                path = PurePosixPath(member.name)
                if member.isfile() and path.parent == directory:
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        files[path.name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise UpscalerJSError(f"cannot read {tarball}: {error}") from error
    name = PurePosixPath(model_json).name
    if name not in files:
        raise UpscalerJSError(f"{tarball.name} has no {model_json}")
    return json.loads(files.pop(name)), files


def decode_weights(manifest: list[dict[str, Any]], files: dict[str, bytes]) -> dict[str, NDArray[Any]]:
    """Decode a TF.js ``weightsManifest`` into arrays, dequantising where the manifest says so.

    Each group's shards are concatenated and its weights read in order. A quantised weight
    (``quantization.dtype`` ``uint8``/``uint16``) is ``q * scale + min``; ``float16`` is widened.

    Args:
        manifest: The ``weightsManifest`` list of ``model.json``.
        files: Shard bytes by file name.

    Returns:
        Arrays by weight name (``"<layer>/<variable>"``), in the dtype the model declares.

    Raises:
        UpscalerJSError: If a shard is missing, a dtype unsupported or the bytes run short.
    """
    weights: dict[str, NDArray[Any]] = {}
    for group in manifest:
        missing = [path for path in group["paths"] if path not in files]
        if missing:
            raise UpscalerJSError(f"weight shards {missing} are missing next to model.json")
        buffer = b"".join(files[path] for path in group["paths"])
        offset = 0
        for entry in group["weights"]:
            array, offset = _decode_one(entry, buffer, offset)
            weights[entry["name"]] = array
        if offset != len(buffer):
            logger.warning("weight group %s has %d unread bytes", group["paths"], len(buffer) - offset)
    return weights


def _decode_one(entry: dict[str, Any], buffer: bytes, offset: int) -> tuple[NDArray[Any], int]:
    shape = tuple(int(d) for d in entry["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    declared = entry.get("dtype", "float32")
    quantization = entry.get("quantization")
    stored = quantization["dtype"] if quantization else declared
    if stored not in _STORED_DTYPES or declared not in {"float32", "int32", "bool"}:
        raise UpscalerJSError(
            f"weight {entry['name']!r} has dtype {declared!r} stored as {stored!r}; supported: "
            f"float32/int32/bool, quantised as {sorted(_STORED_DTYPES)}"
        )
    dtype = _STORED_DTYPES[stored]
    end = offset + count * dtype.itemsize
    if end > len(buffer):
        raise UpscalerJSError(
            f"weight {entry['name']!r} needs bytes {offset}-{end}; shards hold {len(buffer)}"
        )
    raw = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset)
    if quantization and stored in {"uint8", "uint16"}:
        values: NDArray[Any] = raw.astype(np.float32) * np.float32(quantization["scale"]) + np.float32(
            quantization["min"]
        )
        if declared == "int32":
            values = np.rint(values)
    else:
        values = raw
    return values.astype(_STORED_DTYPES[declared].newbyteorder("=")).reshape(shape), end


@keras.saving.register_keras_serializable(package="upscalerjs")
class MultiplyBeta(keras.layers.Layer):
    """Multiplies by a constant (the residual scaling of RRDN blocks, beta = 0.2)."""

    def __init__(self, beta: float = 0.2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.beta = float(beta)

    def call(self, inputs: Any) -> Any:
        """Scale the input by ``beta``."""
        return inputs * self.beta

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """Same shape as the input."""
        return input_shape

    def get_config(self) -> dict[str, Any]:
        """Config with ``beta``."""
        return {**super().get_config(), "beta": self.beta}


@keras.saving.register_keras_serializable(package="upscalerjs")
class PixelShuffle(keras.layers.Layer):
    """Depth-to-space in NHWC, as ``tf.depthToSpace(x, scale, 'NHWC')`` (sub-pixel convolution).

    Output pixel ``(h*s + i, w*s + j)`` channel ``c`` is input pixel ``(h, w)`` channel
    ``(i*s + j) * C + c``, where ``C`` is the number of output channels.
    """

    def __init__(self, scale: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale = int(scale)

    def call(self, inputs: Any) -> Any:
        """Move ``scale x scale`` blocks of channels into space."""
        s = self.scale
        batch, height, width, channels = (keras.ops.shape(inputs)[i] for i in range(4))
        out_channels = channels // (s * s)
        blocks = keras.ops.reshape(inputs, (batch, height, width, s, s, out_channels))
        blocks = keras.ops.transpose(blocks, (0, 1, 3, 2, 4, 5))
        return keras.ops.reshape(blocks, (batch, height * s, width * s, out_channels))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``[b, h*s, w*s, c/s²]``."""
        batch, height, width, channels = input_shape
        s = self.scale
        return (
            batch,
            None if height is None else height * s,
            None if width is None else width * s,
            None if channels is None else channels // (s * s),
        )

    def get_config(self) -> dict[str, Any]:
        """Config with ``scale``."""
        return {**super().get_config(), "scale": self.scale}


_PIXEL_SHUFFLE = re.compile(r"PixelShuffle(\d+)x")


def _conv2d(config: dict[str, Any]) -> keras.layers.Layer:
    if config.get("data_format", "channels_last") != "channels_last":
        raise UpscalerJSError(
            f"Conv2D {config['name']!r} is {config['data_format']}; only channels_last is supported"
        )
    return keras.layers.Conv2D(
        filters=config["filters"],
        kernel_size=tuple(config["kernel_size"]),
        strides=tuple(config.get("strides", (1, 1))),
        padding=config.get("padding", "valid"),
        dilation_rate=tuple(config.get("dilation_rate", (1, 1))),
        groups=config.get("groups", 1),
        activation=config.get("activation", "linear"),
        use_bias=config.get("use_bias", True),
        name=config["name"],
    )


def _pixel_shuffle(class_name: str, config: dict[str, Any]) -> keras.layers.Layer:
    """UpscalerJS registers one class per scale (``PixelShuffle4x``); the class name rules."""
    scale = int(class_name.removeprefix("PixelShuffle").removesuffix("x"))
    if int(config.get("scale", scale)) != scale:
        raise UpscalerJSError(
            f"{class_name} {config['name']!r} declares scale {config['scale']}, not {scale}"
        )
    return PixelShuffle(scale, name=config["name"])


_LAYER_BUILDERS: dict[str, Callable[[dict[str, Any]], keras.layers.Layer]] = {
    "Conv2D": _conv2d,
    "Activation": lambda c: keras.layers.Activation(c["activation"], name=c["name"]),
    "Concatenate": lambda c: keras.layers.Concatenate(axis=c.get("axis", -1), name=c["name"]),
    "Add": lambda c: keras.layers.Add(name=c["name"]),
    "UpSampling2D": lambda c: keras.layers.UpSampling2D(
        size=tuple(c.get("size", (2, 2))), interpolation=c.get("interpolation", "nearest"), name=c["name"]
    ),
    "MultiplyBeta": lambda c: MultiplyBeta(c.get("beta", 0.2), name=c["name"]),
}
SUPPORTED_LAYERS = (*_LAYER_BUILDERS, "InputLayer", "PixelShuffle<n>x")


def _build_layer(layer: dict[str, Any]) -> keras.layers.Layer:
    class_name, config = layer["class_name"], layer["config"]
    if _PIXEL_SHUFFLE.fullmatch(class_name):
        return _pixel_shuffle(class_name, config)
    if class_name not in _LAYER_BUILDERS:
        raise UpscalerJSError(
            f"layer {config.get('name')!r} is a {class_name}, which this loader does not rebuild; "
            f"supported: {', '.join(SUPPORTED_LAYERS)}"
        )
    return _LAYER_BUILDERS[class_name](config)


def build_keras_model(topology: dict[str, Any]) -> keras.Model:
    """Rebuild a Keras 2 functional topology (as TF.js stores it) with the Keras 3 functional API.

    Args:
        topology: ``modelTopology`` of a TF.js layers ``model.json``.

    Returns:
        The model, with freshly initialised weights.

    Raises:
        UpscalerJSError: If the topology is not functional, uses an unsupported layer or
            refers to layers that never become available.
    """
    model_config = topology.get("model_config", topology)
    if model_config.get("class_name") not in {"Functional", "Model"}:
        raise UpscalerJSError(
            f"model class {model_config.get('class_name')!r} is not supported; expected a functional model"
        )
    config = model_config["config"]
    tensors: dict[tuple[str, int], Any] = {}
    pending = list(config["layers"])
    while pending:
        waiting = []
        for layer in pending:
            if not _call_layer(layer, tensors):
                waiting.append(layer)
        if len(waiting) == len(pending):
            names = [layer["config"]["name"] for layer in waiting]
            raise UpscalerJSError(f"layers {names[:5]} wait on inputs that no layer produces")
        pending = waiting

    def pick(refs: list[list[Any]]) -> Any:
        picked = [_output(tensors, ref) for ref in refs]
        return picked[0] if len(picked) == 1 else picked

    return keras.Model(
        inputs=pick(config["input_layers"]), outputs=pick(config["output_layers"]), name=config.get("name")
    )


def _call_layer(layer: dict[str, Any], tensors: dict[tuple[str, int], Any]) -> bool:
    """Create ``layer`` and call it on each of its inbound nodes; ``False`` if inputs are not ready."""
    name = layer["config"].get("name", layer.get("name"))
    if layer["class_name"] == "InputLayer":
        shape = layer["config"].get("batch_input_shape") or layer["config"]["batch_shape"]
        tensors[(name, 0)] = keras.Input(
            shape=tuple(shape[1:]), dtype=layer["config"].get("dtype"), name=name
        )
        return True
    nodes = layer["inbound_nodes"]
    if not all((ref[0], ref[1]) in tensors for node in nodes for ref in node):
        return False
    keras_layer = _build_layer(layer)
    for index, node in enumerate(nodes):
        inputs = [_output(tensors, ref) for ref in node]
        kwargs = node[0][3] if len(node[0]) > 3 else {}  # noqa: PLR2004 - [name, node, tensor, kwargs]
        tensors[(name, index)] = keras_layer(inputs[0] if len(inputs) == 1 else inputs, **kwargs)
    return True


def _output(tensors: dict[tuple[str, int], Any], ref: list[Any]) -> Any:
    produced = tensors[(ref[0], int(ref[1]))]
    return produced[int(ref[2])] if isinstance(produced, list | tuple) else produced


def set_weights(model: keras.Model, weights: dict[str, NDArray[Any]]) -> None:
    """Assign decoded TF.js weights to the rebuilt model, by ``<layer>/<variable>`` name.

    Args:
        model: The rebuilt model.
        weights: Arrays by TF.js weight name; a scope prefix (``"model/F_0/kernel"``) is ignored.

    Raises:
        UpscalerJSError: If a variable has no weight, a weight no variable, or shapes differ.
    """
    by_name = {"/".join(name.split("/")[-2:]): array for name, array in weights.items()}
    if len(by_name) != len(weights):
        raise UpscalerJSError("weight names are ambiguous once scope prefixes are dropped")
    used: set[str] = set()
    for layer in model.layers:
        for variable in layer.weights:
            key = f"{layer.name}/{variable.name}"
            if key not in by_name:
                raise UpscalerJSError(f"model.json has no weight {key!r}")
            value = by_name[key]
            if tuple(value.shape) != tuple(variable.shape):
                raise UpscalerJSError(
                    f"weight {key!r} is {value.shape}; the layer needs {tuple(variable.shape)}"
                )
            variable.assign(value)
            used.add(key)
    unused = sorted(set(by_name) - used)
    if unused:
        raise UpscalerJSError(f"weights {unused[:5]} match no layer of the model")


def load_tfjs_layers_model(tarball: Path, model_json: str) -> keras.Model:
    """Rebuild the TF.js layers model stored at ``model_json`` in an npm tarball, with its weights.

    Args:
        tarball: The package ``.tgz``.
        model_json: Path of ``model.json`` inside the tarball.

    Returns:
        The Keras 3 model.

    Raises:
        UpscalerJSError: If the package cannot be read or the model cannot be rebuilt.
    """
    document, files = read_tfjs_package(tarball, model_json)
    if document.get("format", "layers-model") != "layers-model":
        raise UpscalerJSError(f"{model_json} is a {document['format']!r}; only layers-model is supported")
    model = build_keras_model(document["modelTopology"])
    set_weights(model, decode_weights(document["weightsManifest"], files))
    return model
