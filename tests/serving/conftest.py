"""A served model the tests make themselves: a tiny small_cnn exported to ONNX, in the BentoML store."""

from __future__ import annotations

import io
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
import pytest
from PIL import Image
from starlette.testclient import TestClient

from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.onnx_export import export_onnx
from ai_image_detection.pipelines.package.nodes import MODEL_FILE

MODEL_NAME = "test-detector"
INPUT_SIZE = 32
THRESHOLD = 0.5
SERVICE_ENV = {
    "AIID_MODEL_TAG": f"{MODEL_NAME}:latest",
    "AIID_MAX_FILES": "4",
    "AIID_MAX_BYTES": "3000000",
    "AIID_MAX_PIXELS": "4000000",
    "AIID_MIN_SIDE": "16",
}
"""What the service under test is told (as a container would be)."""


@pytest.fixture(scope="session")
def detector_onnx() -> bytes:
    keras.utils.set_random_seed(0)
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=INPUT_SIZE, widths=[4, 8]))
    return export_onnx(model, opset=17, metadata={"threshold": str(THRESHOLD)})


@pytest.fixture(scope="session")
def served_model(detector_onnx: bytes) -> str:
    """The test model in the (test-only) BentoML store, as the package pipeline would put it."""
    metadata = {
        "registered_model": "ai-image-detector",
        "registered_version": "7",
        "threshold": str(THRESHOLD),
    }
    with bentoml.models.create(MODEL_NAME, metadata=metadata) as model:
        with open(model.path_of(MODEL_FILE), "wb") as file:
            file.write(detector_onnx)
    return str(model.tag)


@pytest.fixture(scope="session")
def service_module(served_model: str) -> ModuleType:
    """The service module, imported once with the test settings (set only while it imports)."""
    with pytest.MonkeyPatch.context() as environment:
        for name, value in SERVICE_ENV.items():
            environment.setenv(name, value)
        from ai_image_detection.serving import service  # noqa: PLC0415  reads its settings at import

    return service


@pytest.fixture(scope="session")
def client(service_module: ModuleType) -> Iterator[TestClient]:
    """The service through ``Service.to_asgi()`` (startup and warm-up included)."""
    with TestClient(service_module.Detector.to_asgi()) as test_client:
        yield test_client


def encode(pixels: np.ndarray, fmt: str = "JPEG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB image (JPEG-friendly)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(target: str, log: Path) -> Iterator[str]:
    """``bentoml serve TARGET`` (a service import path or a Bento tag) on a free loopback port.

    Yields the URL once ``/readyz`` answers 200; stops the server afterwards.
    """
    port = free_port()
    environment = {**os.environ, **SERVICE_ENV, "BENTOML_DO_NOT_TRACK": "True"}
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
def live_server(served_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``bentoml serve`` of the service with the test model; its URL."""
    with serving(
        "ai_image_detection.serving.service:Detector", tmp_path_factory.mktemp("serve") / "log"
    ) as url:
        yield url
