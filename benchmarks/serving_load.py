"""Load on the real service: requests/s and p50/p99 latency at 1, 8 and 32 concurrent clients.

``bentoml serve`` of the same packaged model twice, one after the other in the same run: the
scorer's ``score`` API batchable (adaptive batching), then not (``AIID_BATCHING=0``: each request's
crops are one model call of their own); everything else is identical.
Clients post a real validation image to ``/predict`` on 127.0.0.1 for a bounded number of
requests per level. Clients and server share this machine's cores, as they would on one box.
Target (issue "Serving"): batching at least 2x the unbatched throughput at 32 clients, p99 < 1 s.
The model's GFLOP/s at 32 clients, next to the machine's matrix-product peak measured in the same
run, shows how much headroom batching had.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pandas as pd

from ai_image_detection.inference_cost import gflops_per_image, machine_peak_gflops
from ai_image_detection.serving.settings import ServingSettings
from benchmarks.report import record

logger = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
MANIFEST = Path("data/03_primary/image_manifest.parquet")
CLIENTS = (1, 8, 32)
SERVICE = "ai_image_detection.serving.service:Detector"
MODEL_TAG = ServingSettings.from_env().model_tag


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def served(batching: bool) -> Iterator[str]:
    """A ``bentoml serve`` of the packaged champion on a free loopback port, stopped afterwards."""
    port = _free_port()
    environment = {**os.environ, "AIID_BATCHING": "1" if batching else "0", "BENTOML_DO_NOT_TRACK": "True"}
    command = [
        Path(sys.executable).with_name("bentoml"),
        "serve",
        SERVICE,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"bentoml serve exited with {server.returncode}: run `make package` first")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            raise TimeoutError(f"{url}/readyz not ready within 120 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def load(url: str, image: bytes, clients: int, requests_per_client: int) -> dict[str, object]:
    """``clients`` threads each posting ``requests_per_client`` images; throughput, latency, errors."""
    latencies: list[float] = []
    errors = 0
    statuses: Counter[str] = Counter()
    lock = threading.Lock()

    def client() -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=30) as session:
            for _ in range(requests_per_client):
                started = time.perf_counter()
                try:
                    status = str(session.post("/predict", files={"image": ("image.jpg", image)}).status_code)
                except httpx.TransportError as failure:
                    status = type(failure).__name__
                with lock:
                    latencies.append(time.perf_counter() - started)
                    errors += status != "200"
                    statuses[status] += 1

    httpx.post(f"{url}/predict", files={"image": ("image.jpg", image)}, timeout=30)  # warm-up
    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    milliseconds = 1000 * np.asarray(latencies)
    return {
        "rps": round((len(latencies) - errors) / elapsed, 1),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 1),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 1),
        "errors": errors,
        "statuses": dict(statuses),
    }


def run(requests_per_level: int = 384) -> dict[str, object]:
    """Both modes at every client count, and the model's compute at 32 clients; returns the figures."""
    if not MANIFEST.exists():
        raise FileNotFoundError(f"{MANIFEST} is missing: run `make run` first")
    manifest = pd.read_parquet(MANIFEST)
    image = Path(manifest.loc[manifest["split"] == "validation", "path"].iloc[0]).read_bytes()
    peak = machine_peak_gflops()  # before any server runs, on an idle machine
    figures: dict[str, object] = {}
    for mode, batching in (("batched", True), ("unbatched", False)):
        with served(batching) as url:
            tiles = int(httpx.post(f"{url}/predict", files={"image": ("image.jpg", image)}).json()["tiles"])
            figures[mode] = {
                str(clients): load(url, image, clients, max(1, requests_per_level // clients))
                for clients in CLIENTS
            }
            logger.info("%s: %s", mode, figures[mode])
    rps = {mode: float(figures[mode]["32"]["rps"]) for mode in ("batched", "unbatched")}  # type: ignore[index]
    figures["batched_over_unbatched_rps_at_32"] = round(rps["batched"] / max(rps["unbatched"], 1e-9), 2)
    figures["model_compute"] = model_compute(rps, tiles, peak)
    return figures


def model_compute(rps_at_32: dict[str, float], tiles: int, peak_gflops: float) -> dict[str, object]:
    """The model's GFLOP/s at 32 clients in each mode next to this machine's matrix-product peak.

    Each request is ``tiles`` crops; their model FLOPs against the peak tell how much of the
    machine the model already uses, hence what batching could still buy.
    """
    onnx_model = Path(bentoml.models.get(MODEL_TAG).path_of("model.onnx")).read_bytes()
    per_image = gflops_per_image(onnx_model)
    return {
        "tiles_per_request": tiles,
        "gflops_per_image": round(per_image, 4),
        "model_gflops_at_32": {mode: round(rps * tiles * per_image, 1) for mode, rps in rps_at_32.items()},
        "machine_peak_gflops": round(peak_gflops, 1),
    }


def main() -> None:
    """Run and record under ``"serving"``."""
    record("serving", run())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
