"""Does the model ever wait on input? Input-pipeline throughput next to the training step's.

Both are measured in the same run on the embedded data set with the first candidate of
``parameters_training.yml``: the tf.data training pipeline (decode, crop, augmentation,
batching; decoded images cached as in training) alone, and the compiled training step alone
on one batch kept in memory. A ratio above 1 means the input pipeline keeps up.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import pandas as pd
import yaml

from ai_image_detection.input_pipeline import AugmentationParams, build_augmenter, make_dataset
from ai_image_detection.models import BCEWithPriorPenalty, build_detector
from ai_image_detection.pipelines.training.params import CandidateParams
from benchmarks.report import record

logger = logging.getLogger(__name__)
MANIFEST = Path("data/03_primary/image_manifest.parquet")


def _images_per_second(batches: int, batch_size: int, seconds: float) -> float:
    return round(batches * batch_size / seconds, 1)


def run(batches: int = 40) -> dict[str, float | int | str]:
    """Measure both rates; returns the figures."""
    if not MANIFEST.exists():
        raise FileNotFoundError(f"{MANIFEST} is missing: run `make run` (or the ingestion pipeline) first")
    manifest = pd.read_parquet(MANIFEST)
    augmentation = AugmentationParams.model_validate(
        yaml.safe_load(Path("conf/base/parameters_augmentation.yml").read_text())["augmentation"]
    )
    training = yaml.safe_load(Path("conf/base/parameters_training.yml").read_text())["training"]
    name, values = next(iter(training["candidates"].items()))
    candidate = CandidateParams.model_validate(values)
    size, batch = candidate.detector.image_size, candidate.batch_size
    keras.utils.set_random_seed(0)
    dataset = make_dataset(manifest, "train", size, batch, augmentation, 0, build_augmenter(augmentation, 0))
    per_epoch = math.ceil(int((manifest["split"] == "train").sum()) / batch)
    for _ in dataset:  # one pass fills the decode cache, as the first training epoch does
        pass
    started = time.perf_counter()
    seen = sum(1 for _ in dataset.repeat().take(batches))
    input_rate = _images_per_second(seen, batch, time.perf_counter() - started)

    model = build_detector(candidate.detector)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=BCEWithPriorPenalty(0.5, 0.5))
    images, labels = next(iter(dataset))
    model.train_on_batch(images, labels)  # compile and warm up
    started = time.perf_counter()
    for _ in range(batches):
        model.train_on_batch(images, labels)
    step_rate = _images_per_second(batches, batch, time.perf_counter() - started)
    return {
        "candidate": name,
        "image_size": size,
        "batch_size": batch,
        "batches_per_epoch": per_epoch,
        "images_per_s": input_rate,
        "train_step_images_per_s": step_rate,
        "input_to_train_ratio": round(input_rate / step_rate, 2),
    }


def main() -> None:
    """Run the benchmark and record its figures under ``"input_pipeline"``."""
    record("input_pipeline", run())
