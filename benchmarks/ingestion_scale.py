"""Ingestion at the real competition's size: 80,000 files, validated without holding pixels.

Generates a Kaggle-layout set of distinct 256×256 JPEGs in a scratch folder, then times the
ingestion nodes against a baseline measured in the same run: reading and hashing every file
(the I/O floor). The ingestion runs in a fresh process (nothing else loaded, as under
``kedro run --pipelines ingestion``), so its peak memory is its own: that process's peak, the
largest worker's, and their sum over all workers as an upper bound of the total (target: at most
1 GB at 80,000 files, issue 12).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ai_image_detection.pipelines.ingestion.nodes import (
    IngestionParams,
    drop_duplicates,
    list_raw_files,
    split_train_validation,
    validate_files,
)
from benchmarks.report import record

logger = logging.getLogger(__name__)
SIDE = 256


def _write_image(task: tuple[Path, int]) -> None:
    """Write one distinct JPEG: a smooth gradient with the index drawn into its pixels."""
    path, index = task
    rng = np.random.default_rng(index)
    base = np.linspace(0, 255, SIDE, dtype=np.float32)
    pixels = np.stack(
        [np.add.outer(base, base) / 2, np.tile(base, (SIDE, 1)), np.tile(base[:, None], (1, SIDE))], axis=2
    )
    pixels += rng.normal(0, 6, pixels.shape).astype(np.float32)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    path.write_bytes(buffer.getvalue())


def generate(raw_dir: Path, files: int) -> None:
    """Write ``files`` images and ``train.csv`` in the Kaggle layout."""
    (raw_dir / "train_data").mkdir(parents=True)
    names = [f"train_data/{index:06d}.jpg" for index in range(files)]
    tasks = [(raw_dir / name, index) for index, name in enumerate(names)]
    with multiprocessing.get_context("spawn").Pool() as pool:
        list(
            tqdm(
                pool.imap_unordered(_write_image, tasks, chunksize=256),
                total=files,
                desc="generating",
                unit="file",
            )
        )
    pd.DataFrame({"file_name": names, "label": [index % 2 for index in range(files)]}).to_csv(
        raw_dir / "train.csv", index=False
    )


def _own_peak_rss_mb() -> float:
    """This process's own peak resident set in MB: ``VmHWM`` of ``/proc/self/status`` on Linux.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss`` there: Linux carries a process's high-water mark
    across ``exec``, so a process spawned by a large one (``python -m benchmarks``, after the
    serving benchmark) would report its parent's resident set at the fork.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    # elsewhere (macOS) ru_maxrss is in bytes
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def _ingest(raw_dir: Path, normalised_dir: Path) -> dict[str, float | int]:
    """The ingestion nodes on ``raw_dir``, in this (fresh) process: time, counts, peak memory."""
    params = IngestionParams(
        raw_dir=str(raw_dir),
        layout="kaggle",
        min_side=32,
        max_pixels=40_000_000,
        validation_fraction=0.1,
        seed=0,
        normalised_dir=str(normalised_dir),
        workers=0,
    )
    started = time.perf_counter()
    candidates, _ = list_raw_files(params)
    valid, rejected = validate_files(candidates, params)
    unique, _ = drop_duplicates(valid)
    manifest = split_train_validation(unique, params)
    return {
        "seconds": time.perf_counter() - started,
        "ingested": len(manifest),
        "rejected": len(rejected),
        "peak_rss_main_mb": _own_peak_rss_mb(),
        "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def run(files: int) -> dict[str, float | int]:
    """Generate the set, measure the baseline and the ingestion, return the figures."""
    with tempfile.TemporaryDirectory(prefix="ingestion-bench-") as scratch:
        raw_dir = Path(scratch) / "raw"
        generate(raw_dir, files)
        started = time.perf_counter()
        for path in tqdm(sorted((raw_dir / "train_data").iterdir()), desc="hash-only baseline", unit="file"):
            hashlib.sha256(path.read_bytes()).hexdigest()
        hash_seconds = time.perf_counter() - started
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as fresh:
            ingestion = fresh.submit(_ingest, raw_dir, Path(scratch) / "normalised").result()
    workers = multiprocessing.cpu_count()
    seconds = float(ingestion["seconds"])
    total_mb = ingestion["peak_rss_main_mb"] + workers * ingestion["peak_rss_worker_mb"]
    return {
        "files": files,
        "image_side_px": SIDE,
        "workers": workers,
        "seconds": round(seconds, 1),
        "files_per_s": round(files / seconds, 1),
        "hash_only_files_per_s": round(files / hash_seconds, 1),
        "ratio_vs_hash_only": round(seconds / hash_seconds, 2),
        "ingested": ingestion["ingested"],
        "rejected": ingestion["rejected"],
        "peak_rss_main_mb": round(ingestion["peak_rss_main_mb"], 1),
        "peak_rss_worker_mb": round(ingestion["peak_rss_worker_mb"], 1),
        "peak_rss_total_at_most_mb": round(total_mb, 1),
        "within_1_gb": total_mb <= 1024,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and record its figures under ``"ingestion"``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=80_000)
    args = parser.parse_args(argv)
    record("ingestion", run(args.files))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    main()
