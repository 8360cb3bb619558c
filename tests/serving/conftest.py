"""Served models the tests make themselves: a tiny small_cnn exported to ONNX, in the BentoML store.

``test-detector`` carries today's contract (the inconclusive band, its tiling, its calibration, and
an attribution output ``family_probabilities`` with its ``families``); ``test-detector-legacy`` is
the same network without attribution and with only the metadata of models exported before the band
existed, and must still serve (one process holds one ASGI app of the service: BentoML's
metrics are process-global, so the legacy model is served by its own scorer, in process).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import bentoml
import httpx
import keras
import numpy as np
import onnx
import pytest
from PIL import Image
from starlette.testclient import TestClient

from ai_image_detection.contract import (
    CALIBRATION_KEY,
    FAMILIES_KEY,
    FAMILY_OUTPUT_NAME,
    INPUT_NAME,
    MAX_TILES_KEY,
    OUTPUT_NAME,
    THRESHOLD_AI_KEY,
    THRESHOLD_HUMAN_KEY,
    THRESHOLD_KEY,
    Verdict,
    verdict,
)
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.onnx_export import export_onnx
from ai_image_detection.onnx_runtime import onnx_session
from ai_image_detection.pipelines.package.nodes import MODEL_FILE
from ai_image_detection.serving.settings import ENV_PREFIX, ServingSettings
from ai_image_detection.tiling import tile_crops
from tests.conftest import LocalS3

MODEL_NAME = "test-detector"
LEGACY_MODEL_NAME = "test-detector-legacy"
INPUT_SIZE = 32
THRESHOLD_HUMAN, THRESHOLD, THRESHOLD_AI = 0.4, 0.5, 0.6
MODEL_MAX_TILES = 9
"""The tiling the test model's thresholds were (notionally) chosen on."""
SETTING_MAX_TILES = 3
"""``AIID_MAX_TILES``: lower than the model's, so it applies to the legacy model only."""
CALIBRATION = {"method": "temperature", "temperature": 1.7, "ece_before": 0.12, "ece_after": 0.03}
FAMILIES = ["human", "diffusion", "gan"]
"""The test model's attribution columns: each family follows one colour channel (red, green, blue)."""
FAMILY_WEIGHTS = 0.2 * (np.eye(3) - 1 / 3)
"""Family logits from the mean colour: a channel 10 levels above the other two leads their logits by 2."""
CONTRACT = {
    THRESHOLD_KEY: str(THRESHOLD),
    THRESHOLD_HUMAN_KEY: str(THRESHOLD_HUMAN),
    THRESHOLD_AI_KEY: str(THRESHOLD_AI),
    MAX_TILES_KEY: str(MODEL_MAX_TILES),
    CALIBRATION_KEY: json.dumps(CALIBRATION),
    FAMILIES_KEY: json.dumps(FAMILIES),
}
"""The test model's metadata, as the export pipeline writes it (input size and class names added)."""
SERVICE_ENV = {
    "AIID_MODEL_TAG": f"{MODEL_NAME}:latest",
    "AIID_MAX_FILES": "4",
    "AIID_MAX_BYTES": "3000000",
    "AIID_MAX_PIXELS": "4000000",
    "AIID_MIN_SIDE": "16",
    "AIID_MAX_TILES": str(SETTING_MAX_TILES),
    "AIID_MAX_BATCH_SIZE": "64",
}
"""What the service under test is told (as a container would be); its call size is set, so that
whether concurrent requests share a call does not hang on a measurement of the test machine."""
BAND_MARGIN = 0.02
"""How far from a band edge a test image's score must be, so that its verdict is unambiguous."""


def settings_from(environ: dict[str, str]) -> ServingSettings:
    """The settings read from an environment whose ``AIID_*`` variables are exactly those of ``environ``."""
    with pytest.MonkeyPatch.context() as environment:
        for name in [name for name in os.environ if name.upper().startswith(ENV_PREFIX)]:
            environment.delenv(name)
        for name, value in environ.items():
            environment.setenv(name, value)
        return ServingSettings()


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def spread_scores(model: keras.Model, images: np.ndarray) -> None:
    """Scale and centre the untrained head, so that photos score across (0, 1) as a trained model's do.

    An untrained small_cnn scores every image within 1e-4 of 0.5, too close together for tests of
    the inconclusive band; the head's logit becomes ``k * (logit - median)`` over ``images``.
    """
    probabilities = model.predict(images, verbose=0).reshape(-1).astype(np.float64)
    logits = np.log(probabilities / (1 - probabilities))
    scale = 1.5 / logits.std()
    head = model.get_layer(OUTPUT_NAME)
    head.kernel.assign(head.kernel * scale)
    head.bias.assign(scale * (head.bias - np.median(logits)))


def family_rows(crops: np.ndarray) -> np.ndarray:
    """What the test model's attribution output computes: ``softmax(mean colour @ FAMILY_WEIGHTS)``."""
    logits = crops.astype(np.float64).mean(axis=(1, 2)) @ FAMILY_WEIGHTS
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def with_attribution(network: bytes) -> bytes:
    """The network with the attribution output grafted on: ``family_probabilities`` of each image.

    Built with ``onnx.helper`` from the input (the export pipeline's network has no such head yet):
    the image's mean colour, through :data:`FAMILY_WEIGHTS`, through a softmax (:func:`family_rows`).
    """
    proto = onnx.load_from_string(network)
    proto.graph.initializer.append(
        onnx.numpy_helper.from_array(FAMILY_WEIGHTS.astype(np.float32), "attribution/weights")
    )
    proto.graph.node.extend(
        [
            onnx.helper.make_node(
                "ReduceMean", [INPUT_NAME], ["attribution/colour"], axes=[1, 2], keepdims=0
            ),
            onnx.helper.make_node(
                "MatMul", ["attribution/colour", "attribution/weights"], ["attribution/logits"]
            ),
            onnx.helper.make_node("Softmax", ["attribution/logits"], [FAMILY_OUTPUT_NAME], axis=-1),
        ]
    )
    proto.graph.output.append(
        onnx.helper.make_tensor_value_info(FAMILY_OUTPUT_NAME, onnx.TensorProto.FLOAT, ["N", len(FAMILIES)])
    )
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())


@pytest.fixture(scope="session")
def network_onnx() -> bytes:
    """The tiny small_cnn as the export pipeline exports it (P(AI) only), with today's metadata.

    Its ``families`` name the output that :func:`with_attribution` adds.
    """
    keras.utils.set_random_seed(0)
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=INPUT_SIZE, widths=[4, 8]))
    spread_scores(model, np.stack([photo(INPUT_SIZE, INPUT_SIZE, seed) for seed in range(16)]))
    return export_onnx(model, opset=17, metadata=CONTRACT)


@pytest.fixture(scope="session")
def detector_onnx(network_onnx: bytes) -> bytes:
    """The test model: the network with its attribution output."""
    return with_attribution(network_onnx)


@pytest.fixture(scope="session")
def legacy_onnx(network_onnx: bytes) -> bytes:
    """The network alone with a pre-band model's metadata: no band, tiling, calibration or attribution."""
    proto = onnx.load_from_string(network_onnx)
    kept = {prop.key: prop.value for prop in proto.metadata_props if prop.key not in CONTRACT}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {**kept, THRESHOLD_KEY: str(THRESHOLD)})
    return bytes(proto.SerializeToString())


def store(name: str, onnx_model: bytes, version: str) -> str:
    """Put an ONNX model in the (test-only) BentoML store, as the package pipeline would."""
    metadata = {
        "registered_model": "ai-image-detector",
        "registered_version": version,
        "threshold": str(THRESHOLD),
    }
    with bentoml.models.create(name, metadata=metadata) as model:
        with open(model.path_of(MODEL_FILE), "wb") as file:
            file.write(onnx_model)
    return str(model.tag)


@pytest.fixture(scope="session")
def served_model(detector_onnx: bytes) -> str:
    """The test model (registry version 7) in the BentoML store."""
    return store(MODEL_NAME, detector_onnx, "7")


@pytest.fixture(scope="session")
def legacy_model(legacy_onnx: bytes) -> str:
    """The legacy test model (registry version 6) in the BentoML store."""
    return store(LEGACY_MODEL_NAME, legacy_onnx, "6")


@pytest.fixture(scope="session")
def verdict_images(detector_onnx: bytes) -> dict[Verdict, tuple[bytes, float]]:
    """A 96x64 PNG whose score lies below the band, one inside it and one above it, with their scores.

    Scored as the service scores them (the model's tiling, the mean of the tiles' P(AI)); each score
    is at least ``BAND_MARGIN`` from a band edge.
    """
    session = onnx_session(detector_onnx)
    found: dict[Verdict, tuple[bytes, float]] = {}
    for seed in range(100):
        pixels = photo(96, 64, seed)
        crops = tile_crops(pixels, INPUT_SIZE, MODEL_MAX_TILES).astype(np.float32)
        score = float(np.mean(session.run([OUTPUT_NAME], {INPUT_NAME: crops})[0]))
        if min(abs(score - THRESHOLD_HUMAN), abs(score - THRESHOLD_AI)) > BAND_MARGIN:
            found.setdefault(verdict(score, THRESHOLD_HUMAN, THRESHOLD_AI), (encode(pixels, "PNG"), score))
        if len(found) == 3:
            return found
    raise AssertionError(f"no photo seed scores in each zone of the band; found {sorted(found)}")


FEEDBACK_PREFIX = "feedback-service"
"""Where the services under test keep feedback in the local S3 bucket."""


@pytest.fixture(scope="session")
def service_env(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """``SERVICE_ENV`` with the feedback store on the local S3 server and a prediction log of its own."""
    return {
        **SERVICE_ENV,
        **s3_server.credentials,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIID_FEEDBACK_BUCKET": s3_server.bucket,
        "AIID_FEEDBACK_PREFIX": FEEDBACK_PREFIX,
        "AIID_FEEDBACK_ENDPOINT_URL": s3_server.endpoint_url,
        "AIID_PREDICTION_LOG_DIR": str(tmp_path_factory.mktemp("predictions")),
    }


@pytest.fixture(scope="session")
def service_module(served_model: str, service_env: dict[str, str]) -> ModuleType:
    """The service module, imported once with the test settings (set only while it imports)."""
    with pytest.MonkeyPatch.context() as environment:
        for name, value in service_env.items():
            environment.setenv(name, value)
        from ai_image_detection.serving import service  # noqa: PLC0415  reads its settings at import

    return service


@pytest.fixture(scope="session")
def client(service_module: ModuleType, service_env: dict[str, str]) -> Iterator[TestClient]:
    """The service through ``Service.to_asgi()`` (startup and warm-up included).

    The service starts with the local S3 server's keys in the environment (its feedback store takes
    them when it starts), which are unset again once it runs.
    """
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as environment:
            for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
                environment.setenv(name, service_env[name])
            test_client = stack.enter_context(TestClient(service_module.Detector.to_asgi()))
        yield test_client


def encode(pixels: np.ndarray, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(target: str, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``bentoml serve TARGET`` (a service import path or a Bento tag) on a free loopback port.

    Its settings are ``env`` (``SERVICE_ENV`` by default); its prediction log goes next to ``log``
    unless ``env`` says where. Yields the URL once ``/readyz`` answers 200; stops the server afterwards.
    """
    port = free_port()
    environment = {
        **os.environ,
        "AIID_PREDICTION_LOG_DIR": str(log.parent / "predictions"),
        **(env or SERVICE_ENV),
        "BENTOML_DO_NOT_TRACK": "True",
    }
    command = [
        str(Path(sys.executable).with_name("bentoml")),
        "serve",
        target,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as output:
        server = subprocess.Popen(command, env=environment, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"bentoml serve exited early:\n{log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not ready in 180 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="session")
def live_server(
    served_model: str, service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real ``bentoml serve`` of the service with the test model (feedback on the local S3); its URL."""
    with serving(
        "ai_image_detection.serving.service:Detector", tmp_path_factory.mktemp("serve") / "log", service_env
    ) as url:
        yield url
