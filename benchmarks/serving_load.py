"""Load on the real service: requests/s and p50/p99 latency at 1, 8, 32 and 64 concurrent clients.

``bentoml serve`` of the same packaged model twice, one after the other in the same run: batching
on (the crops of the requests that wait during a model call share the next one), then off
(``AIID_BATCHING=0``: each request's crops are one model call of their own); everything else is
identical. Clients post real validation images (each request the next one) to ``/predict`` on
127.0.0.1 for a bounded number of requests per level. Clients and server share this machine's
cores, as they would on one box, so each level also reports the CPU time per answered request of
the load clients and of the server (its whole process tree): what the model does not use goes
there. Every answer counts in p50/p99, errors included; refused (503) requests are also reported
apart as ``shed``.
Targets (issue 12): no errors at 64 clients with the default settings; at 32 clients the service's
crops/s at least 80 % of what the same model does alone in ONNX Runtime at batch 32 (measured first,
in this run, on an idle machine); with ``small_cnn``, p99 < 1 s and batching at least 2x unbatched.
The model's GFLOP/s at 32 clients, next to the machine's matrix-product peak measured in the same
run, shows how much headroom batching had; so does ``batching_ceiling``: the model alone at its
fastest call size (powers of two up to 64) over the model alone at one request's crops per call, the
most any batching can buy over calls of one request each (a model already at the machine's peak on
one request has a ceiling near 1, or below it when larger calls are slower per crop). The service
at 32 clients is also compared with that fastest call size (``batched_over_onnx_runtime_best_at_32``):
the baseline at its best, where batch 32 may flatter the service.

Where the shipped model is not ``small_cnn``, the trained ``small_cnn`` candidate is exported as the
export pipeline exports candidates (calibrated, with its own band) into a bench-only BentoML model,
loaded the same way in both modes, and removed afterwards: its figures are ``small_cnn`` in the record.

The prediction log's cost (issue 14: nothing slows ``/predict`` measurably): p50 of one client's
sequential requests with the log on and off (``AIID_PREDICTION_LOG_DIR=""``), in alternating rounds
of the same run, each mode's best round kept; ``logging_p50_ratio`` is on over off.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import bentoml
import httpx
import keras
import numpy as np
import pandas as pd
import psutil
import yaml

import ai_image_detection.models  # noqa: F401  registers the custom layers and loss for loading
from ai_image_detection.image_io import ImageLimits, decode_image
from ai_image_detection.inference_cost import (
    gflops_per_image,
    images_per_second,
    onnx_runner,
)
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.pipelines.export.nodes import ExportParams, export_candidates
from ai_image_detection.pipelines.package.nodes import MODEL_FILE
from ai_image_detection.serving.settings import ServingSettings
from ai_image_detection.tiling import tile_crops
from benchmarks.inference import peak_figures
from benchmarks.report import record

logger = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
MANIFEST = Path("data/03_primary/image_manifest.parquet")
CLIENTS = (1, 8, 32, 64)
REFERENCE_CLIENTS = "32"
LOGGING_ROUNDS = 3
BASELINE_ROUNDS = 3
BASELINE_SECONDS = 2.0
BASELINE_CALL_SIZES = (1, 2, 4, 8, 16, 32, 64)
LOGGING_REQUESTS = 48
REQUESTS_PER_LEVEL = 384
SERVICE = "ai_image_detection.serving.service:Detector"
MODEL_TAG = ServingSettings().model_tag
SMALL_CNN = "small_cnn"
CANDIDATES = Path("data/06_models/candidates")
EVALUATION = Path("data/08_reporting/evaluation")
EXPORT_PARAMETERS = Path("conf/base/parameters_export.yml")
BENCH_MODEL_NAME = "ai-image-detector-bench-small-cnn"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running ``bentoml serve``: its URL and process."""

    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user and system) used so far by the server and every process it started."""
        root = psutil.Process(self.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        return total


@contextmanager
def served(
    batching: bool, prediction_log_dir: str | None = None, model_tag: str = MODEL_TAG
) -> Iterator[Server]:
    """A ``bentoml serve`` of ``model_tag`` (the packaged champion) on a free loopback port, then stopped.

    Its prediction log goes to a scratch directory unless ``prediction_log_dir`` says where (empty:
    no log), never into the project's own log.
    """
    port = _free_port()
    scratch = tempfile.TemporaryDirectory(prefix="bench-predictions-")
    environment = {
        **os.environ,
        "AIID_BATCHING": "1" if batching else "0",
        "AIID_MODEL_TAG": model_tag,
        "AIID_PREDICTION_LOG_DIR": scratch.name if prediction_log_dir is None else prediction_log_dir,
        "BENTOML_DO_NOT_TRACK": "True",
    }
    command = [
        str(Path(sys.executable).with_name("bentoml")),
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
        yield Server(url, server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        scratch.cleanup()


def load(server: Server, images: list[bytes], clients: int, requests_per_client: int) -> dict[str, object]:
    """``clients`` concurrent clients, each posting ``requests_per_client`` images: what they got.

    The clients are tasks of one asyncio loop, each on its own connection: a load generator that
    takes little of the cores it shares with the server (32 client threads took 7 ms of CPU per
    request, which the server then lacked; these take about 1.5 ms).

    Returns:
        ``rps`` and ``crops_per_second`` (answered requests only), ``p50_ms`` and ``p99_ms`` over
        every answer, ``errors`` (every non-200), ``shed`` (the 503s among them), ``statuses``,
        and ``client_cpu_ms_per_request`` and ``server_cpu_ms_per_request`` (per answered request).
    """
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    crops = 0

    async def post(session: aiohttp.ClientSession, image: bytes) -> None:
        nonlocal crops
        form = aiohttp.FormData()
        form.add_field("image", image, filename="image.jpg", content_type="image/jpeg")
        started = time.perf_counter()
        try:
            async with session.post("/predict", data=form) as response:
                status = str(response.status)
                tiles = int((await response.json())["tiles"]) if response.status == 200 else 0
        except (aiohttp.ClientError, TimeoutError) as failure:
            status, tiles = type(failure).__name__, 0
        latencies.append(time.perf_counter() - started)
        statuses[status] += 1
        crops += tiles

    async def client(first: int) -> None:
        async with aiohttp.ClientSession(server.url, timeout=aiohttp.ClientTimeout(total=120)) as session:
            for index in range(first, first + requests_per_client):
                await post(session, images[index % len(images)])

    async def run_clients() -> tuple[float, float, float]:
        """Elapsed time, server CPU and client CPU seconds of the load (after one warm-up request)."""
        nonlocal crops
        async with aiohttp.ClientSession(server.url, timeout=aiohttp.ClientTimeout(total=120)) as session:
            await post(session, images[0])
        latencies.clear()
        statuses.clear()
        crops = 0
        server_cpu, client_cpu = server.cpu_seconds(), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(client(index * requests_per_client) for index in range(clients)))
        elapsed = time.perf_counter() - started
        return elapsed, server.cpu_seconds() - server_cpu, time.process_time() - client_cpu

    elapsed, server_cpu, client_cpu = asyncio.run(run_clients())
    milliseconds = 1000 * np.asarray(latencies)
    answered = statuses["200"]
    return {
        "rps": round(answered / elapsed, 2),
        "crops_per_second": round(crops / elapsed, 2),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 1),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 1),
        "errors": len(latencies) - answered,
        "shed": statuses["503"],
        "statuses": dict(statuses),
        "client_cpu_ms_per_request": round(1000 * client_cpu / max(answered, 1), 1),
        "server_cpu_ms_per_request": round(1000 * server_cpu / max(answered, 1), 1),
    }


def onnx_runtime_alone(onnx_model: bytes, paths: list[str]) -> tuple[dict[int, float], int]:
    """Crops/s of the packaged model alone in ONNX Runtime at each call size, and one request's crops.

    Call sizes are powers of two up to 64, and one request's crops (the images' mean tile count,
    as the service tiles them with the model's ``max_tiles``: what an unbatched service runs).
    The crops are the validation images' own; measured before any server starts, on an idle
    machine, each size the best of ``BASELINE_ROUNDS`` rounds (single rounds varied by 10 %).

    Returns:
        Crops/s by call size, and the crops per request.
    """
    metadata = onnx_metadata(onnx_model)
    size, max_tiles = int(metadata["input_height"]), int(metadata.get("max_tiles", 1))
    settings = ServingSettings()
    limits = ImageLimits(settings.min_side, settings.max_pixels)
    decoded = [decode_image(Path(path).read_bytes(), limits) for path in paths]
    crops = np.concatenate([tile_crops(np.asarray(image.pixels), size, max_tiles) for image in decoded])
    if len(crops) < max(BASELINE_CALL_SIZES):
        raise ValueError(f"{len(crops)} validation crops: the baseline needs {max(BASELINE_CALL_SIZES)}")
    per_request = max(1, round(len(crops) / len(decoded)))
    run = onnx_runner(onnx_model)
    speeds = {
        batch: max(
            images_per_second(run, crops, batch, min_seconds=BASELINE_SECONDS) for _ in range(BASELINE_ROUNDS)
        )
        for batch in sorted({*BASELINE_CALL_SIZES, per_request})
    }
    return speeds, per_request


def validation_images(count: int) -> tuple[list[str], list[bytes]]:
    """The first ``count`` validation images of the manifest: their paths and their bytes."""
    if not MANIFEST.exists():
        raise FileNotFoundError(f"{MANIFEST} is missing: run `make run` first")
    manifest = pd.read_parquet(MANIFEST)
    paths = manifest.loc[manifest["split"] == "validation", "path"].head(count).tolist()
    return paths, [Path(path).read_bytes() for path in paths]


def run(paths: list[str], images: list[bytes], model_tag: str = MODEL_TAG) -> dict[str, object]:
    """Both modes at every client count, against ONNX Runtime alone; returns the figures.

    Args:
        paths: The images' files (ONNX Runtime alone reads the first 64).
        images: The bytes the clients post, each request the next image (round the list again when
            a level asks for more requests than there are images).
        model_tag: The BentoML model served.
    """
    onnx_model = Path(bentoml.models.get(model_tag).path_of(MODEL_FILE)).read_bytes()
    peak = peak_figures()  # before any server runs, on an idle machine
    speeds, per_request = onnx_runtime_alone(onnx_model, paths[:64])
    alone, best = speeds[32], max(speeds.values())
    figures: dict[str, object] = {
        "onnx_runtime_alone_crops_per_second": {
            str(batch): round(speed, 2) for batch, speed in speeds.items()
        },
        "onnx_runtime_alone_crops_per_second_batch32": round(alone, 2),
        "onnx_runtime_alone_best_batch": max(speeds, key=lambda batch: speeds[batch]),
        "crops_per_request": per_request,
        "batching_ceiling": round(best / speeds[per_request], 2),
    }
    for mode, batching in (("batched", True), ("unbatched", False)):
        with served(batching, model_tag=model_tag) as server:
            figures[mode] = {
                str(clients): load(server, images, clients, max(1, REQUESTS_PER_LEVEL // clients))
                for clients in CLIENTS
            }
            logger.info("%s: %s", mode, figures[mode])
    at_32 = {mode: figures[mode][REFERENCE_CLIENTS] for mode in ("batched", "unbatched")}  # type: ignore[index]
    rps = {mode: float(at_32[mode]["rps"]) for mode in at_32}
    figures["batched_over_onnx_runtime_at_32"] = round(at_32["batched"]["crops_per_second"] / alone, 2)
    figures["batched_over_onnx_runtime_best_at_32"] = round(at_32["batched"]["crops_per_second"] / best, 2)
    figures["batched_over_unbatched_rps_at_32"] = round(rps["batched"] / max(rps["unbatched"], 1e-9), 2)
    figures["errors_at_64_batched"] = figures["batched"]["64"]["errors"]  # type: ignore[index]
    tiles = at_32["batched"]["crops_per_second"] / max(rps["batched"], 1e-9)
    figures["model_compute"] = model_compute(onnx_model, rps, tiles, peak)
    return figures


@contextmanager
def small_cnn_in_store() -> Iterator[str]:
    """The trained ``small_cnn`` candidate as a bench-only BentoML model (its tag), deleted afterwards.

    Exported as the export pipeline exports every candidate (:func:`.export_candidates`: calibrated,
    with the band and tiling evaluation chose for it), so the service loads it as it loads the champion.
    """
    params = ExportParams.model_validate(yaml.safe_load(EXPORT_PARAMETERS.read_text())["export"])
    detector = export_candidates(
        params,
        pd.read_csv(EVALUATION / "candidates.csv"),
        "",
        pd.read_parquet(MANIFEST),
        keras.saving.load_model(CANDIDATES / f"{SMALL_CNN}.keras"),
        json.loads((EVALUATION / f"{SMALL_CNN}_calibration.json").read_text()),
        names=[SMALL_CNN],
    )[SMALL_CNN]
    with bentoml.models.create(BENCH_MODEL_NAME, metadata={"candidate": SMALL_CNN}) as created:
        Path(created.path_of(MODEL_FILE)).write_bytes(detector)
    try:
        yield str(created.tag)
    finally:
        bentoml.models.delete(created.tag)


def logging_cost(images: list[bytes]) -> dict[str, float]:
    """p50 of one client's requests with the prediction log on and off, best of alternating rounds."""
    best: dict[str, float] = {}
    for _ in range(LOGGING_ROUNDS):
        for mode, directory in (("log_on", None), ("log_off", "")):
            with served(True, directory) as server:
                p50 = float(load(server, images, 1, LOGGING_REQUESTS)["p50_ms"])  # type: ignore[arg-type]
            best[mode] = min(best.get(mode, float("inf")), p50)
    return {
        "p50_ms_log_on": best["log_on"],
        "p50_ms_log_off": best["log_off"],
        "logging_p50_ratio": round(best["log_on"] / best["log_off"], 3),
    }


def model_compute(
    onnx_model: bytes, rps_at_32: dict[str, float], tiles: float, peak: dict[str, object]
) -> dict[str, object]:
    """The model's GFLOP/s at 32 clients in each mode next to this machine's matrix-product peak.

    Each request is ``tiles`` crops on average; their model FLOPs against the peak tell how much
    of the machine the model already uses, hence what batching could still buy.
    """
    per_image = gflops_per_image(onnx_model)
    return {
        "tiles_per_request": round(tiles, 2),
        "gflops_per_image": round(per_image, 4),
        "model_gflops_at_32": {mode: round(rps * tiles * per_image, 1) for mode, rps in rps_at_32.items()},
        **peak,
    }


def main() -> None:
    """Run and record under ``"serving"`` (``"serving <tag>"`` for another model than the default).

    Another model: ``AIID_MODEL_TAG=<bentoml model tag> python -m benchmarks.serving_load``. Unless
    the served model is ``small_cnn``, ``small_cnn`` is measured too (the issue's latency targets).
    """
    paths, images = validation_images(REQUESTS_PER_LEVEL)
    default = MODEL_TAG == ServingSettings.model_fields["model_tag"].default
    figures: dict[str, object] = {"model_tag": MODEL_TAG, **run(paths, images)}
    figures["prediction_log"] = logging_cost(images)
    served_candidate = onnx_metadata(Path(bentoml.models.get(MODEL_TAG).path_of(MODEL_FILE)).read_bytes())
    if served_candidate.get("candidate") != SMALL_CNN and (CANDIDATES / f"{SMALL_CNN}.keras").exists():
        with small_cnn_in_store() as tag:
            figures[SMALL_CNN] = run(paths, images, model_tag=tag)
    record("serving" if default else f"serving {MODEL_TAG}", figures)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    main()
