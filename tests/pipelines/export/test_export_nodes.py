"""Model selection (unseen families first, then false positives, then F1), the budget, the submission."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ai_image_detection.calibration import PlattScaling
from ai_image_detection.inference_cost import onnx_runner
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.onnx_export import ParityError, onnx_predict
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.pipelines.export.nodes import (
    ExportParams,
    export_candidates,
    make_submission,
    quantize_detector,
    select_candidate,
    verify_parity,
)
from tests.onnx_graphs import SIDE, matrix_product_detector
from tests.onnx_graphs import images as zero_corner_images


def comparison(*rows: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, float]]:
    """The evaluation's comparison table and the ONNX latency per candidate, from a few figures each."""
    defaults = {
        "threshold": 0.5,
        "unseen_roc_auc_mean": 0.8,
        "unseen_roc_auc_min": 0.7,
        "unseen_worst_family": "beta",
        "unseen_human_fpr": 0.05,
        "wild_generated_roc_auc": float("nan"),
        "f1": 0.9,
        "onnx_ms": 5.0,
        "ms_per_image": 1.0,  # Keras time must not matter
    }
    table = pd.DataFrame([{**defaults, **row} for row in rows])
    latency = dict(zip(table["candidate"], table.pop("onnx_ms"), strict=True))
    return table, latency


BUDGETED = "sharp general flags careful first second best near far mid small low high slow a b".split()
PARAMS = ExportParams(
    latency_budget_ms={**dict.fromkeys(BUDGETED, 10.0), "big": 30.0, "heavy": 100.0},
    latency_images=4,
    quantization={"calibration_images": 8, "max_f1_drop": 0.01, "ship_int8": False},
    opset=17,
    parity_tolerance=1e-4,
    parity_images=8,
    registered_model_name="ai-image-detector",
    champion_alias="champion",
    selection={"roc_auc_tolerance": 0.01, "fpr_tolerance": 0.01, "ai_answered_human_tolerance": 0.01},
)


def selected(*rows: dict[str, Any]) -> str:
    return str(select_candidate(PARAMS, *comparison(*rows))["candidate"])


def test_unseen_families_beat_validation_f1() -> None:
    sharp = {"candidate": "sharp", "f1": 0.99, "unseen_roc_auc_mean": 0.70, "unseen_human_fpr": 0.01}
    general = {"candidate": "general", "f1": 0.90, "unseen_roc_auc_mean": 0.85, "unseen_human_fpr": 0.05}
    assert selected(sharp, general) == "general"
    assert selected(general, sharp) == "general", "the order of the candidates does not matter"


def test_published_generated_images_count_as_much_as_the_held_out_families() -> None:
    upscalers = {"candidate": "low", "unseen_roc_auc_mean": 0.95, "wild_generated_roc_auc": 0.60}
    broader = {"candidate": "high", "unseen_roc_auc_mean": 0.90, "wild_generated_roc_auc": 0.75}
    assert selected(upscalers, broader) == "high", "mean 0.825 against 0.775"
    selection = select_candidate(PARAMS, *comparison(upscalers, broader))
    assert selection["never_seen_roc_auc"] == pytest.approx(0.825)
    assert "published generated images 0.7500" in selection["reason"]
    assert "best on generators never trained on (mean AUROC 0.8250;" in selection["reason"]


def test_a_tie_on_unseen_families_goes_to_fewer_false_positives() -> None:
    flags_humans = {"candidate": "flags", "f1": 0.99, "unseen_roc_auc_mean": 0.850, "unseen_human_fpr": 0.10}
    careful = {"candidate": "careful", "f1": 0.90, "unseen_roc_auc_mean": 0.845, "unseen_human_fpr": 0.02}
    assert selected(flags_humans, careful) == "careful"


def test_a_tie_on_both_goes_to_validation_f1() -> None:
    first = {"candidate": "first", "f1": 0.90, "unseen_roc_auc_mean": 0.850, "unseen_human_fpr": 0.020}
    second = {"candidate": "second", "f1": 0.95, "unseen_roc_auc_mean": 0.845, "unseen_human_fpr": 0.025}
    assert selected(first, second) == "second"


def test_a_tie_is_measured_from_the_best_not_chained() -> None:
    best = {"candidate": "best", "f1": 0.90, "unseen_roc_auc_mean": 0.850, "unseen_human_fpr": 0.10}
    near = {"candidate": "near", "f1": 0.91, "unseen_roc_auc_mean": 0.842, "unseen_human_fpr": 0.10}
    # Within the tolerance of "near" but not of "best": its low false-positive rate does not count.
    far = {"candidate": "far", "f1": 0.99, "unseen_roc_auc_mean": 0.838, "unseen_human_fpr": 0.00}
    assert selected(best, near, far) == "near"


def test_the_budget_still_applies_and_the_reason_names_the_figures() -> None:
    selection = select_candidate(
        PARAMS,
        *comparison(
            {"candidate": "big", "unseen_roc_auc_mean": 0.95, "onnx_ms": 40.0},
            {
                "candidate": "mid",
                "threshold": 0.3,
                "unseen_roc_auc_mean": 0.85,
                "unseen_roc_auc_min": 0.61,
                "unseen_worst_family": "waifu2x",
                "unseen_human_fpr": 0.02,
                "f1": 0.9,
            },
            {"candidate": "small", "unseen_roc_auc_mean": 0.80, "f1": 0.97, "onnx_ms": 2.0},
        ),
    )
    assert selection == {
        "candidate": "mid",
        "threshold": 0.3,
        "never_seen_roc_auc": 0.85,
        "unseen_roc_auc_mean": 0.85,
        "wild_generated_roc_auc": selection["wild_generated_roc_auc"],
        "unseen_human_fpr": 0.02,
        "validation_f1": 0.9,
        "onnx_ms_per_image": 5.0,
        "reason": selection["reason"],
    }
    reason = selection["reason"]
    assert math.isnan(selection["wild_generated_roc_auc"])
    assert reason.startswith("mid: leave-one-family-out AUROC 0.8500 (worst family waifu2x 0.6100)")
    assert "published generated images not measured" in reason
    assert "human false-positive rate 0.0200" in reason
    assert "validation F1 0.9000" in reason
    assert "among the 2 of 3 candidates within their latency budget (5.00 ms per image of its 10 ms" in reason
    assert reason.endswith("over budget: big")


def test_each_candidate_has_its_own_budget() -> None:
    heavy = {"candidate": "heavy", "unseen_roc_auc_mean": 0.95, "onnx_ms": 80.0}
    light = {"candidate": "small", "unseen_roc_auc_mean": 0.80, "onnx_ms": 2.0}
    assert selected(heavy, light) == "heavy", "80 ms is within heavy's 100 ms budget"


def test_a_candidate_without_a_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no budget for \['unbudgeted'\]"):
        selected({"candidate": "unbudgeted"})


def test_without_generator_families_f1_decides() -> None:
    nan = float("nan")
    low = {"candidate": "low", "f1": 0.8, "unseen_roc_auc_mean": nan, "unseen_human_fpr": nan}
    high = {"candidate": "high", "f1": 0.9, "unseen_roc_auc_mean": nan, "unseen_human_fpr": nan}
    assert selected(low, high) == "high"


def test_no_candidate_within_the_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no candidate fits its latency budget .*'slow': \(20.0, 10.0\)"):
        select_candidate(PARAMS, *comparison({"candidate": "slow", "onnx_ms": 20.0}))


def test_the_submission_comes_from_the_selected_candidate_at_its_threshold(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    paths = [str(raw / "train_data" / "v.png"), *(str(raw / "test_data_v2" / f"{i}.png") for i in range(3))]
    splits = ["validation", "test", "test", "test"]

    def predictions(probabilities: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"source_path": paths, "split": splits, "probability_ai": probabilities})

    fast = predictions([0.9, 0.2, 0.4, 0.8])
    accurate = predictions([0.9, 0.9, 0.9, 0.9])  # the better F1 that did not fit the budget
    selection = {"candidate": "fast", "threshold": 0.3}
    submission = make_submission(str(raw), selection, accurate, fast, names=["accurate", "fast"])
    assert list(submission.columns) == ["id", "label"]
    assert list(submission["id"]) == ["test_data_v2/0.png", "test_data_v2/1.png", "test_data_v2/2.png"]
    assert list(submission["label"]) == [0, 1, 1]


NAMES = ["a", "b"]
CALIBRATIONS = [
    {"method": "platt", "slope": 0.5, "intercept": 0.2, "ece_before": 0.2, "ece_after": 0.05},
    {"method": "platt", "slope": 2.0, "intercept": -1.0, "ece_before": 0.1, "ece_after": 0.04},
]


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, bytes], list[keras.Model], pd.DataFrame]:
    """Two tiny candidates exported with their calibrations, and the manifest they were judged on."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for index, (split, generator) in enumerate(
        [("train", "alpha/1"), ("validation", "beta/1"), ("validation", "camera/original")] * 2
        + [("unseen", "gamma/1"), ("unseen", "camera/original")]
    ):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        label = int(not generator.startswith("camera"))
        rows.append({"path": str(path), "split": split, "generator": generator, "label": label})
    manifest = pd.DataFrame(rows)
    table = pd.DataFrame(
        {
            "candidate": NAMES,
            "threshold": [0.4, 0.6],
            "threshold_human": [0.3, 0.55],
            "threshold_ai": [0.7, 0.65],
            "max_tiles": [9, 5],
        }
    )
    keras.utils.set_random_seed(0)
    models = [
        build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4])) for _ in NAMES
    ]
    onnx = export_candidates(PARAMS, table, "md5abc", manifest, *models, *CALIBRATIONS, names=NAMES)
    return onnx, models, manifest


def test_each_export_carries_its_band_tiling_calibration_and_families(
    exported: tuple[dict[str, bytes], list[keras.Model], pd.DataFrame],
) -> None:
    onnx, _, _ = exported
    assert list(onnx) == NAMES
    metadata = onnx_metadata(onnx["b"])
    assert metadata["candidate"] == "b"
    assert (metadata["threshold"], metadata["threshold_human"], metadata["threshold_ai"]) == (
        "0.6",
        "0.55",
        "0.65",
    )
    assert metadata["max_tiles"] == "5"
    assert json.loads(metadata["calibration"]) == CALIBRATIONS[1]
    assert json.loads(metadata["generator_families"]) == ["alpha", "beta"]
    assert "gamma" in json.loads(metadata["unseen_families"])
    assert metadata["data_version"] == "md5abc"
    assert metadata["mlflow_run_id"] == "", "no active run outside kedro run"
    assert onnx_metadata(onnx["a"])["max_tiles"] == "9"


def test_the_unseen_families_are_the_held_out_generators_only(
    exported: tuple[dict[str, bytes], list[keras.Model], pd.DataFrame],
) -> None:
    onnx, _, _ = exported
    assert json.loads(onnx_metadata(onnx["a"])["unseen_families"]) == ["gamma"]


def test_the_onnx_output_is_the_calibrated_probability(
    exported: tuple[dict[str, bytes], list[keras.Model], pd.DataFrame],
) -> None:
    onnx, models, _ = exported
    images = np.random.default_rng(1).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    for name, model, calibration in zip(NAMES, models, CALIBRATIONS, strict=True):
        scaling = PlattScaling(calibration["slope"], calibration["intercept"])
        expected = scaling(model.predict_on_batch(images))
        np.testing.assert_allclose(onnx_predict(onnx[name], images)[0], expected, rtol=1e-4, atol=1e-5)


def test_the_parity_gate_passes_the_selected_export_through(
    exported: tuple[dict[str, bytes], list[keras.Model], pd.DataFrame],
) -> None:
    onnx, models, manifest = exported
    selection = {"candidate": "b", "threshold": 0.6, "reason": "b: best"}
    detector, record = verify_parity(PARAMS, onnx, selection, manifest, *models, *CALIBRATIONS, names=NAMES)
    assert detector == onnx["b"]
    assert record["candidate"] == "b" and record["reason"] == "b: best"
    assert record["parity_images"] == 4, "the validation images, at most parity_images"
    assert 0 <= record["parity_max_abs_difference"] <= PARAMS.parity_tolerance
    assert record["parity_tolerance"] == PARAMS.parity_tolerance


def test_the_parity_gate_fails_when_the_export_is_not_the_calibrated_model(
    exported: tuple[dict[str, bytes], list[keras.Model], pd.DataFrame],
) -> None:
    onnx, models, manifest = exported
    selection = {"candidate": "b", "threshold": 0.6}
    wrong = [CALIBRATIONS[0], {**CALIBRATIONS[1], "slope": 5.0}]
    with pytest.raises(ParityError, match="ONNX and Keras disagree"):
        verify_parity(PARAMS, onnx, selection, manifest, *models, *wrong, names=NAMES)


def test_when_int8_loses_too_much_the_sensitive_matrix_products_stay_float32(tmp_path: Path) -> None:
    """Static and dynamic int8 both wreck the outlier layer; mixed precision keeps it, within 1 point."""
    pixels = zero_corner_images(120)
    probe = matrix_product_detector(outlier=200.0)
    scores = onnx_runner(probe)(pixels)[:, 0]
    threshold = float(np.median(scores[:80]))
    model = matrix_product_detector(outlier=200.0, threshold=threshold)
    rows = []
    for index, (image, score) in enumerate(zip(pixels.astype(np.uint8), scores, strict=True)):
        path = tmp_path / f"{index}.png"
        Image.fromarray(image).save(path)
        split = "validation" if index < 80 else "train"
        rows.append({"path": str(path), "split": split, "label": int(score >= threshold)})
    int8, report = quantize_detector(PARAMS, model, pd.DataFrame(rows))
    assert SIDE == int(onnx_metadata(int8)["input_height"])
    assert set(report["methods"]) == {"static", "dynamic", "dynamic_mixed"}
    assert max(report["methods"][name]["f1"] for name in ("static", "dynamic")) < 0.99
    assert report["method"] == "dynamic_mixed" and report["within_f1_tolerance"]
    assert report["mixed_precision"]["float_groups"] == [0]
    assert "kept in float32" in onnx_metadata(int8)["quantization"]
