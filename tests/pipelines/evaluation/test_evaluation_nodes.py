"""Evaluation nodes on a tiny model and images made in the test."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image

from ai_image_detection.input_pipeline import Perturbation
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.pipelines.evaluation.nodes import (
    EvaluationParams,
    compare_candidates,
    evaluate_candidate,
    plot_candidate,
    predict,
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    raw = tmp_path_factory.mktemp("raw")
    rng = np.random.default_rng(0)
    rows = []
    for index in range(24):
        split = "test" if index >= 16 else "validation"
        folder = raw / ("test_data_v2" if split == "test" else "train_data")
        folder.mkdir(exist_ok=True)
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(path)
        label = pd.NA if index >= 20 else index % 2
        rows.append({"path": str(path), "source_path": str(path), "label": label, "split": split})
    return pd.DataFrame(rows).astype({"label": "Int8"})


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]))


def params() -> EvaluationParams:
    return EvaluationParams(
        robustness={
            "jpeg_q50": Perturbation(kind="jpeg", quality=50),
            "blur": Perturbation(kind="blur", sigma=1.0),
            "half": Perturbation(kind="downscale", factor=0.5),
            "crop": Perturbation(kind="centre_crop", factor=0.5),
        }
    )


def test_predictions_cover_validation_and_test_in_order(model: keras.Model, manifest: pd.DataFrame) -> None:
    predictions = predict(model, manifest)
    assert list(predictions["path"]) == list(manifest["path"])
    assert predictions["probability_ai"].between(0, 1).all()


def test_report_has_thresholds_splits_robustness_and_cost(model: keras.Model, manifest: pd.DataFrame) -> None:
    predictions = predict(model, manifest)
    report = evaluate_candidate(model, predictions, manifest, params())
    assert 0 <= report["threshold"] <= 1
    assert set(report["validation"]) == {"at_threshold", "at_0.5"}
    assert "test" in report, "the test split has some labels"
    assert set(report["robustness"]) == {"none", "jpeg_q50", "blur", "half", "crop"}
    assert report["robustness"]["none"] == report["validation"]["at_threshold"]
    assert report["seconds_per_image"] > 0
    assert report["parameters"] == model.count_params()
    assert isinstance(plot_candidate(predictions, report, params()), Figure)


def test_comparison(model: keras.Model, manifest: pd.DataFrame) -> None:
    predictions = predict(model, manifest)
    report = evaluate_candidate(model, predictions, manifest, params())
    worse = {**report, "validation": {"at_threshold": {**report["validation"]["at_threshold"], "f1": -1.0}}}
    bars, scatter, table = compare_candidates(report, worse, names=["a", "b"])
    assert isinstance(bars, Figure) and isinstance(scatter, Figure)
    assert list(table["candidate"]) == ["a", "b"]
