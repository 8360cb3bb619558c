"""Inference speed of the selected model: Keras against ONNX Runtime float32 and int8.

The Keras baseline is at its best: the faster of ``predict_on_batch`` and a compiled direct call
(``tf.function``), per batch size (``predict`` would add a per-call setup that flatters ONNX Runtime).

The same model in the same run, on real validation images, at batch 1 (one upload) and batch 32
(offline scoring). Also the model's GFLOPs per image, the GFLOP/s ONNX Runtime achieves, and
this machine's float32 peak (the best matrix product of NumPy, ONNX Runtime and Keras), so the
figures say how close to the hardware the served model runs. Targets (issue "Evaluation, model
selection, ONNX export"): ONNX fp32 at least 2x Keras at batch 1; int8 at least 1.5x fp32 with
at most 1 point of F1 lost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import ai_image_detection.models  # noqa: F401  registers the custom layers and loss for loading
from ai_image_detection.inference_cost import (
    MatrixProduct,
    gflops_per_image,
    images_per_second,
    machine_peak_gflops,
    matrix_product_gflops,
    onnx_matrix_product,
    onnx_runner,
)
from ai_image_detection.input_pipeline import make_prediction_dataset
from ai_image_detection.metrics import binary_metrics
from ai_image_detection.onnx_runtime import onnx_metadata
from benchmarks.report import record

logger = logging.getLogger(__name__)
MANIFEST = Path("data/03_primary/image_manifest.parquet")
SELECTION = Path("data/08_reporting/model_selection.json")
CANDIDATES = Path("data/06_models/candidates")
FLOAT32 = Path("data/06_models/detector.onnx")
INT8 = Path("data/06_models/detector.int8.onnx")
BATCHES = (1, 32)


def run(min_seconds: float = 3.0) -> dict[str, object]:
    """Measure every runtime at every batch size; returns the figures."""
    for needed in (MANIFEST, SELECTION, FLOAT32, INT8):
        if not needed.exists():
            raise FileNotFoundError(f"{needed} is missing: run `make run` (the export pipeline) first")
    name = json.loads(SELECTION.read_text())["candidate"]
    model = keras.saving.load_model(CANDIDATES / f"{name}.keras")
    float32, int8 = FLOAT32.read_bytes(), INT8.read_bytes()
    metadata = onnx_metadata(float32)
    manifest = pd.read_parquet(MANIFEST)
    validation = manifest[manifest["split"] == "validation"]
    size = int(metadata["input_height"])
    images = np.concatenate(
        [batch.numpy() for batch in make_prediction_dataset(validation["path"].tolist(), size, 64)]
    )
    compiled = tf.function(lambda batch: model(batch, training=False), reduce_retracing=True)
    keras_ways = {
        "predict_on_batch": model.predict_on_batch,
        "compiled_call": lambda batch: compiled(tf.constant(batch)),
    }
    runners = {"onnx_fp32": onnx_runner(float32), "onnx_int8": onnx_runner(int8)}
    throughput: dict[int, dict[str, float]] = {}
    keras_way: dict[int, str] = {}
    for batch in BATCHES:
        keras_rates = {
            way: images_per_second(function, images, batch, min_seconds)
            for way, function in keras_ways.items()
        }
        keras_way[batch] = max(keras_rates, key=lambda way: keras_rates[way])
        throughput[batch] = {"keras": round(keras_rates[keras_way[batch]], 1)} | {
            runtime: round(images_per_second(function, images, batch, min_seconds), 1)
            for runtime, function in runners.items()
        }
    labels, threshold = validation["label"].astype(int).to_numpy(), float(metadata["threshold"])
    f1 = {
        runtime: binary_metrics(labels, runners[runtime](images)[:, 0], threshold)["f1"]
        for runtime in ("onnx_fp32", "onnx_int8")
    }
    gflops = gflops_per_image(float32)
    figures: dict[str, object] = {
        "model": name,
        "input_size": size,
        "validation_images": len(images),
        **{f"batch{batch}": rates for batch, rates in throughput.items()},
        "keras_baseline": {f"batch{batch}": way for batch, way in keras_way.items()},
        "onnx_fp32_over_keras_batch1": round(throughput[1]["onnx_fp32"] / throughput[1]["keras"], 2),
        "int8_over_fp32_batch1": round(throughput[1]["onnx_int8"] / throughput[1]["onnx_fp32"], 2),
        "int8_over_fp32_batch32": round(throughput[32]["onnx_int8"] / throughput[32]["onnx_fp32"], 2),
        "f1_fp32": round(f1["onnx_fp32"], 4),
        "f1_int8": round(f1["onnx_int8"], 4),
        "f1_change_points": round(100 * (f1["onnx_int8"] - f1["onnx_fp32"]), 2),
        "gflops_per_image": round(gflops, 4),
        "achieved_gflops": round(gflops * max(rates["onnx_fp32"] for rates in throughput.values()), 1),
        **peak_figures(),
    }
    return figures


def library_matrix_products() -> dict[str, MatrixProduct]:
    """The float32 matrix product of each library that runs our models: NumPy, ONNX Runtime, Keras."""
    return {"numpy": np.matmul, "onnxruntime": onnx_matrix_product(), "keras": keras.ops.matmul}


def peak_figures() -> dict[str, object]:
    """Each library's matrix-product GFLOP/s and the machine's peak (the best of them), for the record."""
    rates = matrix_product_gflops(library_matrix_products())
    return {
        "matrix_product_gflops": {name: round(rate, 1) for name, rate in rates.items()},
        "machine_peak_gflops": round(machine_peak_gflops(rates), 1),
    }


def main() -> None:
    """Run and record under ``"inference"``."""
    record("inference", run())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    main()
