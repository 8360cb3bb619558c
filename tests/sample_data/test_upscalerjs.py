"""UpscalerJS models: npm tarball fetch and verification, TF.js layers loader, up-scaler.

The tests build their own tiny TF.js layers package (``model.json`` and two weight shards, with
float32, uint8- and uint16-quantised weights and UpscalerJS's custom layers) in a tarball shaped
like the npm one, and check the loader against a forward pass written independently in NumPy.
No test needs the network: downloads come from a registry served on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import re
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import cbook
from numpy.typing import NDArray
from PIL import Image

from ai_image_detection.sample_data.upscalerjs import load_upscaler
from ai_image_detection.sample_data.upscalerjs_packages import (
    DEFAULT_CACHE_DIR,
    UPSCALERJS_MODELS,
    UpscalerJSError,
    UpscalerJSModel,
    fetch_package,
)
from ai_image_detection.sample_data.upscalerjs_tfjs import (
    PixelShuffle,
    build_keras_model,
    load_tfjs_layers_model,
)

UNREACHABLE = "http://127.0.0.1:9"
MODEL_DIR = "package/models/tiny"
Weights = dict[str, NDArray[np.float64]]


# ---------------------------------------------------------------------------------------------
# A tiny TF.js layers package and its NumPy reference
# ---------------------------------------------------------------------------------------------


def _layer(class_name: str, name: str, inbound: list[str], **config: Any) -> dict[str, Any]:
    nodes = [[[source, 0, 0, {}] for source in inbound]] if inbound else []
    return {
        "class_name": class_name,
        "name": name,
        "config": {"name": name, **config},
        "inbound_nodes": nodes,
    }


def _conv(name: str, source: str, filters: int, kernel: int, padding: str = "same") -> dict[str, Any]:
    return _layer(
        "Conv2D",
        name,
        [source],
        filters=filters,
        kernel_size=[kernel, kernel],
        strides=[1, 1],
        padding=padding,
        data_format="channels_last",
        dilation_rate=[1, 1],
        groups=1,
        activation="linear",
        use_bias=True,
        trainable=True,
        dtype="float32",
    )


# An RDN/RRDN in miniature: a dense block with ReLU and concatenation, a residual scaled by
# MultiplyBeta, a sub-pixel branch (PixelShuffle2x) and a nearest-neighbour branch (UpSampling2D).
TOPOLOGY_LAYERS = [
    _layer("InputLayer", "LR", [], batch_input_shape=[None, None, None, 3], dtype="float32"),
    _conv("F_m1", "LR", 8, 3),
    _conv("F_1", "F_m1", 4, 3),
    _layer("Activation", "F_1_Relu", ["F_1"], activation="relu"),
    _layer("Concatenate", "RDB_Concat", ["F_m1", "F_1_Relu"], axis=3),
    _conv("LFF", "RDB_Concat", 8, 1, padding="valid"),
    _layer("MultiplyBeta", "multiply_beta_1", ["LFF"], beta=0.2),
    _layer("Add", "LRL", ["F_m1", "multiply_beta_1"]),
    _conv("PreShuffle", "LRL", 12, 3),
    _layer("PixelShuffle2x", "pixel_shuffle_1", ["PreShuffle"], scale=2),
    _conv("UPN", "LRL", 3, 3),
    _layer(
        "UpSampling2D", "UPsample", ["UPN"], size=[2, 2], data_format="channels_last", interpolation="nearest"
    ),
    _layer("Add", "Both", ["pixel_shuffle_1", "UPsample"]),
    _conv("SR", "Both", 3, 3),
]
CONV_SHAPES = {
    "F_m1": (3, 3, 3, 8),
    "F_1": (3, 3, 8, 4),
    "LFF": (1, 1, 12, 8),
    "PreShuffle": (3, 3, 8, 12),
    "UPN": (3, 3, 8, 3),
    "SR": (3, 3, 3, 3),
}
QUANTISED = {"LFF/kernel": "uint8", "PreShuffle/kernel": "uint16", "UPN/bias": "uint8"}


def _tiny_package(rng: np.random.Generator, value_range: float) -> tuple[bytes, Weights]:
    """Write the tiny package as an npm-shaped ``.tgz``; return it and the dequantised weights."""
    gain = value_range / 255.0
    weights: Weights = {}
    manifest: list[dict[str, Any]] = []
    blob = b""
    for layer, shape in CONV_SHAPES.items():
        for variable, variable_shape in (("kernel", shape), ("bias", shape[-1:])):
            name = f"{layer}/{variable}"
            fan_in = float(np.prod(shape[:-1]))
            values = rng.normal(0.0, 1.0 / np.sqrt(fan_in), variable_shape)
            if variable == "bias":
                values = rng.normal(0.0, 20.0 * gain, variable_shape)
            entry: dict[str, Any] = {"name": name, "shape": list(variable_shape), "dtype": "float32"}
            if name in QUANTISED:
                dtype = np.dtype(QUANTISED[name]).newbyteorder("<")
                levels = float(np.iinfo(dtype).max)
                low, scale = float(values.min()), float(np.ptp(values)) / levels
                quantised = np.round((values - low) / scale).astype(dtype)
                entry["quantization"] = {"dtype": QUANTISED[name], "min": low, "scale": scale}
                weights[name] = quantised.astype(np.float64) * scale + low
                blob += quantised.tobytes()
            else:
                weights[name] = values.astype("<f4").astype(np.float64)
                blob += values.astype("<f4").tobytes()
            manifest.append(entry)
    split = len(blob) // 2 + 3  # the boundary falls inside a weight, as TF.js shards do
    shards = {"group1-shard1of2.bin": blob[:split], "group1-shard2of2.bin": blob[split:]}
    model_json = {
        "format": "layers-model",
        "generatedBy": "keras v2.10.0",
        "convertedBy": "TensorFlow.js Converter v1.2.6",
        "modelTopology": {
            "keras_version": "2.10.0",
            "backend": "tensorflow",
            "model_config": {
                "class_name": "Functional",
                "config": {
                    "name": "model",
                    "layers": TOPOLOGY_LAYERS,
                    "input_layers": [["LR", 0, 0]],
                    "output_layers": [["SR", 0, 0]],
                },
            },
        },
        "weightsManifest": [{"paths": list(shards), "weights": manifest}],
    }
    files = {
        "package/package.json": b'{"name": "@test/esrgan-tiny", "version": "0.0.1"}',
        f"{MODEL_DIR}/model.json": json.dumps(model_json).encode(),
        **{f"{MODEL_DIR}/{name}": data for name, data in shards.items()},
        "package/models/other/group1-shard1of2.bin": b"not this model's weights",
    }
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue(), weights


def _np_conv(
    x: NDArray[np.float64], weights: Weights, name: str, padding: str = "same"
) -> NDArray[np.float64]:
    kernel, bias = weights[f"{name}/kernel"], weights[f"{name}/bias"]
    size = kernel.shape[0]
    pad = size // 2 if padding == "same" else 0
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    height, width = padded.shape[0] - size + 1, padded.shape[1] - size + 1
    out = np.zeros((height, width, kernel.shape[3])) + bias
    for dy in range(size):
        for dx in range(size):
            out += padded[dy : dy + height, dx : dx + width] @ kernel[dy, dx]
    return out


def _np_depth_to_space(x: NDArray[np.float64], s: int) -> NDArray[np.float64]:
    """``tf.depthToSpace`` NHWC, written element by element from its definition."""
    height, width, depth = x.shape
    channels = depth // (s * s)
    out = np.zeros((height * s, width * s, channels))
    for h in range(height):
        for w in range(width):
            for i in range(s):
                for j in range(s):
                    out[h * s + i, w * s + j] = x[h, w, (i * s + j) * channels : (i * s + j + 1) * channels]
    return out


def _np_forward(x: NDArray[np.float64], weights: Weights) -> NDArray[np.float64]:
    f_m1 = _np_conv(x, weights, "F_m1")
    f_1 = np.maximum(_np_conv(f_m1, weights, "F_1"), 0.0)
    lff = _np_conv(np.concatenate([f_m1, f_1], axis=-1), weights, "LFF", padding="valid")
    lrl = f_m1 + 0.2 * lff
    shuffled = _np_depth_to_space(_np_conv(lrl, weights, "PreShuffle"), 2)
    upsampled = np.repeat(np.repeat(_np_conv(lrl, weights, "UPN"), 2, axis=0), 2, axis=1)
    return _np_conv(shuffled + upsampled, weights, "SR")


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _spec(tarball: bytes, value_range: float = 255.0) -> UpscalerJSModel:
    return UpscalerJSModel(
        package="@test/esrgan-tiny",
        version="0.0.1",
        model_json=f"{MODEL_DIR}/model.json",
        scale=2,
        licence="MIT",
        integrity=_integrity(tarball),
        training="GAN",
        value_range=value_range,
    )


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests to the local test registry must not go through a proxy of the machine."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, UpscalerJSModel, Weights]:
    """The tiny package pre-seeded in a cache and registered as ``tiny-x2``."""
    tarball, weights = _tiny_package(np.random.default_rng(0), 255.0)
    spec = _spec(tarball)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.tarball_name).write_bytes(tarball)
    monkeypatch.setitem(UPSCALERJS_MODELS, "tiny-x2", spec)
    return cache, spec, weights


class _Registry:
    """An npm-like registry on 127.0.0.1 serving fixed files."""

    def __init__(self, files: dict[str, bytes]) -> None:
        files_served = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                data = files_served.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def log_message(self, format: str, *args: Any) -> None:
                """Keep the test output quiet."""

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Registry:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def served_tiny() -> Iterator[tuple[bytes, str]]:
    """The tiny tarball and the path the registry serves it at."""
    tarball, _ = _tiny_package(np.random.default_rng(1), 255.0)
    yield tarball, "/@test/esrgan-tiny/-/esrgan-tiny-0.0.1.tgz"


# ---------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------


def test_rebuilt_model_reproduces_the_numpy_forward_pass(tiny: tuple[Path, UpscalerJSModel, Weights]) -> None:
    cache, spec, weights = tiny
    x = np.random.default_rng(2).uniform(0, 255, (7, 9, 3))

    model = load_tfjs_layers_model(cache / spec.tarball_name, spec.model_json)
    output = np.asarray(model.predict_on_batch(x[np.newaxis].astype(np.float32)))[0]

    expected = _np_forward(x, weights)
    assert output.shape == (14, 18, 3)
    np.testing.assert_allclose(output, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())


@pytest.mark.parametrize("value_range", [255.0, 1.0])
def test_upscaler_maps_uint8_to_uint8_in_the_models_pixel_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value_range: float
) -> None:
    tarball, weights = _tiny_package(np.random.default_rng(3), value_range)
    spec = _spec(tarball, value_range)
    (tmp_path / spec.tarball_name).write_bytes(tarball)
    monkeypatch.setitem(UPSCALERJS_MODELS, "tiny-x2", spec)
    image = np.random.default_rng(4).integers(0, 256, (6, 5, 3), dtype=np.uint8)

    upscale = load_upscaler("tiny-x2", tmp_path, registry=UNREACHABLE)  # from the cache only
    result = upscale(image)

    raw = _np_forward(image.astype(np.float64) * value_range / 255.0, weights)
    expected = np.rint(np.clip(raw, 0.0, value_range) * 255.0 / value_range)
    assert result.dtype == np.uint8
    assert result.shape == (12, 10, 3)
    assert 0 < (expected == 0).mean() < 1 or 0 < (expected == 255).mean() < 1  # clipping is exercised
    assert np.abs(result.astype(int) - expected).max() <= 1


def test_pixel_shuffle_is_tensorflows_depth_to_space() -> None:
    x = np.random.default_rng(5).normal(size=(2, 4, 5, 27)).astype(np.float32)

    shuffled = np.asarray(PixelShuffle(3)(x))

    np.testing.assert_array_equal(shuffled, tf.nn.depth_to_space(x, 3).numpy())


def test_unsupported_layers_are_named() -> None:
    layers = [
        TOPOLOGY_LAYERS[0],
        _layer("Lambda", "custom_fn", ["LR"], function="x * 2"),
    ]
    topology = {
        "model_config": {
            "class_name": "Functional",
            "config": {
                "layers": layers,
                "input_layers": [["LR", 0, 0]],
                "output_layers": [["custom_fn", 0, 0]],
            },
        }
    }

    with pytest.raises(UpscalerJSError, match=r"'custom_fn' is a Lambda.*supported: Conv2D"):
        build_keras_model(topology)


def test_images_that_are_not_uint8_rgb_are_refused(tiny: tuple[Path, UpscalerJSModel, Weights]) -> None:
    cache, _, _ = tiny
    upscale = load_upscaler("tiny-x2", cache, registry=UNREACHABLE)

    with pytest.raises(ValueError, match="uint8 numpy array; got float32"):
        upscale(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"shape \[h, w, 3\].*got \[4, 4, 4\]"):
        upscale(np.zeros((4, 4, 4), dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Registry, fetching and verification
# ---------------------------------------------------------------------------------------------


def test_unknown_model_names_are_refused_with_the_accepted_ones(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"unknown UpscalerJS model 'esrgan-huge-x2'; accepted: .*esrgan-slim-x2"
    ):
        load_upscaler("esrgan-huge-x2", tmp_path)
    with pytest.raises(ValueError, match="esrgan-thick-x4"):
        fetch_package("esrgan-huge-x2", tmp_path)
    assert not any(tmp_path.iterdir())


def test_registered_models_are_pinned_npm_tarballs() -> None:
    assert {"esrgan-slim-x2", "esrgan-medium-x4", "esrgan-thick-x8", "esrgan-legacy-gans-x4"} <= set(
        UPSCALERJS_MODELS
    )
    for name, spec in UPSCALERJS_MODELS.items():
        assert name.endswith(f"-x{spec.scale}")
        assert spec.package.startswith("@upscalerjs/esrgan-")
        assert spec.integrity.startswith("sha512-")
        assert len(base64.b64decode(spec.integrity.removeprefix("sha512-"))) == 64
        assert spec.value_range in {1.0, 255.0}
        assert spec.training in {"GAN", "PSNR"}
        assert spec.model_json.startswith("package/models/")
        assert spec.model_json.endswith("/model.json")
    slim = UPSCALERJS_MODELS["esrgan-slim-x2"]
    assert slim.tarball_url() == "https://registry.npmjs.org/@upscalerjs/esrgan-slim/-/esrgan-slim-1.0.0.tgz"
    assert slim.tarball_name == "upscalerjs-esrgan-slim-1.0.0.tgz"  # what `npm pack` writes


def test_downloads_once_verifies_and_caches(tmp_path: Path, served_tiny: tuple[bytes, str]) -> None:
    tarball, path = served_tiny
    spec = _spec(tarball)
    with _Registry({path: tarball}) as registry:
        fetched = fetch_package(spec, tmp_path, registry=registry.url)
    again = fetch_package(spec, tmp_path, registry=UNREACHABLE)  # registry gone: served from the cache

    assert fetched == again == tmp_path / "test-esrgan-tiny-0.0.1.tgz"
    assert fetched.read_bytes() == tarball
    assert [p.name for p in tmp_path.iterdir()] == [fetched.name]


def test_download_with_wrong_checksum_is_refused_and_not_kept(
    tmp_path: Path, served_tiny: tuple[bytes, str]
) -> None:
    tarball, path = served_tiny
    spec = _spec(tarball)
    with (
        _Registry({path: tarball[:99] + bytes([tarball[99] ^ 0xFF]) + tarball[100:]}) as registry,
        pytest.raises(
            UpscalerJSError, match=rf"checksum mismatch .*expected {re.escape(spec.integrity[:20])}"
        ),
    ):
        fetch_package(spec, tmp_path, registry=registry.url)

    assert not any(tmp_path.iterdir())


def test_cached_tarball_with_wrong_checksum_is_refused_and_deleted(
    tiny: tuple[Path, UpscalerJSModel, Weights],
) -> None:
    cache, spec, _ = tiny
    cached = cache / spec.tarball_name
    cached.write_bytes(cached.read_bytes() + b"tampered")

    with pytest.raises(UpscalerJSError, match="checksum mismatch for @test/esrgan-tiny@0.0.1"):
        load_upscaler("tiny-x2", cache, registry=UNREACHABLE)

    assert not cached.exists()


def test_unreachable_registry_names_the_url_and_how_to_pre_seed(tmp_path: Path) -> None:
    spec = UPSCALERJS_MODELS["esrgan-slim-x2"]
    url = f"{UNREACHABLE}/@upscalerjs/esrgan-slim/-/esrgan-slim-1.0.0.tgz"

    with pytest.raises(UpscalerJSError) as raised:
        fetch_package(spec, tmp_path, registry=UNREACHABLE, timeout=5)

    message = str(raised.value)
    assert f"cannot download {url}" in message
    assert f"npm pack @upscalerjs/esrgan-slim@1.0.0 --pack-destination {tmp_path}" in message
    assert f"curl -fL -o {tmp_path / spec.tarball_name} {url}" in message
    assert not any(tmp_path.iterdir())


def test_registry_must_be_http(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="registry must be an http"):
        fetch_package("esrgan-slim-x2", tmp_path, registry="file:///etc")


# ---------------------------------------------------------------------------------------------
# A real model, when its tarball is already in the cache of this machine
# ---------------------------------------------------------------------------------------------

_SLIM = UPSCALERJS_MODELS["esrgan-slim-x2"]


@pytest.mark.skipif(
    not (DEFAULT_CACHE_DIR / _SLIM.tarball_name).is_file(),
    reason=f"{_SLIM.tarball_name} is not in {DEFAULT_CACHE_DIR}",
)
def test_real_esrgan_slim_matches_upscalerjs_and_holds_up_against_bicubic() -> None:
    tarball = fetch_package(_SLIM, registry=UNREACHABLE)
    with tarfile.open(tarball) as archive:

        def png(member: str) -> NDArray[np.uint8]:
            data = archive.extractfile(member)
            assert data is not None
            return np.asarray(Image.open(data).convert("RGB"))

        fixture = png("package/assets/fixture.png")
        upscalerjs_result = png("package/assets/samples/2x/result.png")
    upscale = load_upscaler("esrgan-slim-x2", registry=UNREACHABLE)

    # The package's own sample: our Keras rebuild gives UpscalerJS's pixels.
    assert np.abs(upscale(fixture).astype(int) - upscalerjs_result).max() <= 1

    # A real photograph down ×2 and back up: as close to the original as bicubic, and a
    # plausible image (no colour shift), yet not bicubic.
    photo = np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB"))
    original = photo[140:396, 100:356]
    low = Image.fromarray(original).resize((128, 128), Image.Resampling.BICUBIC)
    bicubic = np.asarray(low.resize((256, 256), Image.Resampling.BICUBIC))
    restored = upscale(np.asarray(low))

    def psnr(image: NDArray[np.uint8], reference: NDArray[np.uint8]) -> float:
        error = (image[2:-2, 2:-2].astype(float) - reference[2:-2, 2:-2]) ** 2
        return float(10 * np.log10(255**2 / error.mean()))

    assert restored.shape == original.shape
    assert psnr(restored, original) > psnr(bicubic, original) - 1.0
    assert psnr(restored, original) > 25.0
    assert psnr(restored, bicubic) < 45.0
    assert abs(restored.mean() - original.mean()) < 1.0
