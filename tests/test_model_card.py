"""The model card carries the figures a reader needs to trust or distrust the model."""

from __future__ import annotations

import pandas as pd

from ai_image_detection.model_card import render_model_card


def metrics(f1: float) -> dict[str, float]:
    names = ("accuracy", "precision", "recall", "balanced_accuracy", "roc_auc", "average_precision")
    return {
        **dict.fromkeys(names, 0.9),
        "f1": f1,
        "ece": 0.05,
        "tpr_at_fpr_1pct": 0.7,
        "tpr_at_fpr_5pct": 0.8,
    }


def test_card_reports_data_metrics_robustness_int8_and_limits() -> None:
    export_report = {
        "candidate": "small_cnn",
        "reason": "small_cnn: best validation F1",
        "parity_max_abs_difference": 6e-8,
        "parity_images": 64,
        "parity_tolerance": 1e-4,
        "mlflow_run_id": "run123",
        "data_version": "md5abc",
        "shipped_precision": "fp32",
        "registry": {"registered_model": "ai-image-detector", "version": "7", "reason": "champion moves"},
    }
    evaluation = {
        "threshold": 0.4321,
        "threshold_objective": "f1",
        "parameters": 1234,
        "size_mb": 0.01,
        "validation": {"at_threshold": metrics(0.95), "at_0.5": metrics(0.94)},
        "robustness": {"none": metrics(0.95), "jpeg_q50": metrics(0.9), "blur_sigma_1": metrics(0.6)},
    }
    quantization = {
        "f1_fp32": 0.95,
        "f1_int8": 0.94,
        "f1_change_points": -1.0,
        "speedup_batch1": 1.5,
        "speedup_batch32": 1.6,
        "calibration_images": 256,
    }
    manifest = pd.DataFrame(
        {
            "split": ["train", "train", "validation", "validation", "test"],
            "label": [0, 1, 0, 1, None],
            "group": ["a", "a", "b", "b", "c"],
        }
    )
    card = render_model_card(export_report, evaluation, quantization, manifest)

    assert card.startswith("# Model card: ai-image-detector v7")
    assert "**0.4321**" in card
    assert "`run123`" in card
    assert "`md5abc`" in card
    assert "| train | 1 | 1 | 0 | 1 |" in card, "per split: AI, human, unlabelled, source photos"
    assert "| validation, at chosen threshold | 0.900 | 0.900 | 0.900 | 0.950 |" in card
    assert "test (unseen photos)" not in card, "no test row when the test split has no labels"
    assert "| blur_sigma_1 |" in card
    assert "weakest case above is `blur_sigma_1` (F1 0.600)" in card
    assert "-1.00 points" in card
    assert "## Intended use" in card
    assert "Generator families it\n  never saw" in card
