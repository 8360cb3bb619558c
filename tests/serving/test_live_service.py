"""The service as operators run it: a real ``bentoml serve`` process, and the Bento built offline."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bentoml
import httpx
import pytest
from conftest import FAMILIES, SERVICE_ENV, encode, photo, serving

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def batch_sizes(metrics: str) -> tuple[float, float]:
    """Sum and count of the crops-per-model-call histogram from ``/metrics``: crops and calls."""
    found = {}
    for kind in ("sum", "count"):
        match = re.search(rf"^aiid_model_call_crops_{kind}(\{{[^}}]*\}})? (\S+)$", metrics, re.M)
        assert match, f"no crops-per-call {kind} in /metrics"
        found[kind] = float(match.group(2))
    return found["sum"], found["count"]


@pytest.mark.slow
def test_real_server_answers_clients_and_batches_concurrent_requests(
    live_server: str, tmp_path: Path
) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(
        encode(photo(32, 32))
    )  # one crop per request, so a batch > 1 means requests were merged
    with bentoml.SyncHTTPClient(live_server) as client:
        verdict = client.predict(image=image)
    assert verdict["label"] in {"ai", "inconclusive", "human"} and verdict["model_version"] == "7"
    assert verdict["closest_family"] in FAMILIES and list(verdict["family_probabilities"]) == FAMILIES

    before_sum, before_count = batch_sizes(httpx.get(f"{live_server}/metrics").text)

    def post(_: int) -> int:
        return httpx.post(
            f"{live_server}/predict", files={"image": ("a.jpg", image.read_bytes())}, timeout=60
        ).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(post, range(96)))
    assert statuses == [200] * 96
    after_sum, after_count = batch_sizes(httpx.get(f"{live_server}/metrics").text)
    crops, batches = after_sum - before_sum, after_count - before_count
    assert crops == 96, "one crop per request"
    assert batches < 96, f"96 concurrent requests ran in {batches:.0f} model calls: no batching happened"

    bad = httpx.post(f"{live_server}/predict", files={"image": ("a.jpg", b"not an image")})
    assert bad.status_code == 415 and bad.json()["error"]["code"] == "not_an_image"
    assert httpx.get(f"{live_server}/readyz").status_code == 200

    metrics = httpx.get(f"{live_server}/metrics").text  # the service's own, next to BentoML's
    verdicts = re.findall(r'^aiid_verdicts_total\{[^}]*decided_by="pixels"[^}]*\} (\S+)$', metrics, re.M)
    assert sum(map(float, verdicts)) >= 97, "every verdict is counted, by label and by what decided it"
    assert re.search(r"^aiid_probability_ai_count(\{[^}]*\})? (\S+)$", metrics, re.M), "P(AI) histogram"
    assert re.search(r'^aiid_errors_total\{[^}]*code="not_an_image"[^}]*\} 1\.0$', metrics, re.M)


@pytest.mark.slow
@pytest.mark.usefixtures("served_model")
def test_64_clients_right_after_start_are_queued_not_refused(tmp_path: Path) -> None:
    """The default settings queue a burst of 64 clients that arrives as soon as the service is ready."""
    images = [encode(photo(256, 192, seed)) for seed in range(64)]

    def client(index: int) -> list[int]:
        with httpx.Client(base_url=url, timeout=120) as session:
            return [
                session.post("/predict", files={"image": ("a.jpg", images[(index + turn) % 64])}).status_code
                for turn in range(3)
            ]

    with serving("ai_image_detection.serving.service:Detector", tmp_path / "log") as url:
        with ThreadPoolExecutor(64) as pool:
            statuses = [status for answers in pool.map(client, range(64)) for status in answers]
    assert statuses == [200] * 192


@pytest.mark.slow
def test_bento_builds_offline_with_the_model_page_openapi_and_dockerfile(
    served_model: str, tmp_path: Path
) -> None:
    context = tmp_path / "src"
    shutil.copytree(
        PROJECT_ROOT / "src" / "ai_image_detection",
        context / "ai_image_detection",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(PROJECT_ROOT / "src" / ".bentoignore", context / ".bentoignore")
    environment = {**os.environ, **SERVICE_ENV, "BENTOML_DO_NOT_TRACK": "True"}
    subprocess.run(
        [
            BIN / "uv",
            "export",
            "--frozen",
            "--only-group",
            "serving",
            "--no-emit-project",
            "--no-hashes",
            "-q",
        ]
        + ["-o", context / "requirements-serving.txt"],
        cwd=PROJECT_ROOT,
        check=True,
    )
    subprocess.run(
        [BIN / "bentoml", "build", "-f", PROJECT_ROOT / "bentofile.yaml", context, "--output", "tag"],
        env=environment,
        check=True,
        capture_output=True,
    )
    bento = bentoml.bentos.get("ai-image-detector:latest")
    exported = tmp_path / "detector.bento"
    bentoml.bentos.export_bento(str(bento.tag), str(exported))
    with tarfile.open(exported) as archive:
        names = {name.removeprefix("./") for name in archive.getnames()}
        dockerfile = archive.extractfile("./env/docker/Dockerfile").read().decode()  # type: ignore[union-attr]
        requirements = archive.extractfile("./env/python/requirements.txt").read().decode()  # type: ignore[union-attr]
    model_version = served_model.split(":")[1]
    assert f"models/test-detector/{model_version}/model.onnx" in names
    assert "src/ai_image_detection/serving/static/index.html" in names
    assert {
        "src/ai_image_detection/serving/service.py",
        "src/ai_image_detection/serving/scorer.py",
        "src/ai_image_detection/serving/http_guard.py",
        "src/ai_image_detection/onnx_runtime.py",
    } <= names, "every module the service imports (the venv's copy would hide a missing one here)"
    assert "apis/openapi.yaml" in names
    assert "USER" in dockerfile or "BENTO_USER" in dockerfile
    assert "onnxruntime==" in requirements and "tensorflow" not in requirements, "serving pins only"
    assert "pydantic-settings==" in requirements and "onnx==" not in requirements
    assert not [name for name in names if "__pycache__" in name], ".bentoignore applies"

    with serving(str(bento.tag), tmp_path / "bento.log") as url:  # the Bento alone carries the service
        verdict = httpx.post(f"{url}/predict", files={"image": ("a.jpg", encode(photo(48, 48)))}, timeout=60)
        assert verdict.status_code == 200, verdict.text
        assert verdict.json()["model_version"] == "7"
        assert httpx.get(f"{url}/ui/").status_code == 200
