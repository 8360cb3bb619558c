"""Model selection: the rule, the budget, and the reason written to the report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ai_image_detection.pipelines.export.nodes import ExportParams, make_submission, select_candidate


def comparison(*rows: tuple[str, float, float, float]) -> tuple[pd.DataFrame, dict[str, float]]:
    """The evaluation's comparison table (candidate, F1, threshold) and the ONNX latency per candidate."""
    table = pd.DataFrame(rows, columns=["candidate", "f1", "onnx_ms", "threshold"])
    latency = dict(zip(table["candidate"], table.pop("onnx_ms"), strict=True))
    return table.assign(ms_per_image=1.0), latency  # Keras time must not matter


PARAMS = ExportParams(
    latency_budget_ms=10,
    latency_images=4,
    quantization={"calibration_images": 8, "max_f1_drop": 0.01, "ship_int8": False},
    opset=17,
    parity_tolerance=1e-4,
    parity_images=8,
    registered_model_name="ai-image-detector",
    champion_alias="champion",
)


def test_best_f1_within_the_budget_wins_and_the_reason_says_why() -> None:
    selection = select_candidate(
        PARAMS, *comparison(("big", 0.99, 40.0, 0.5), ("mid", 0.90, 5.0, 0.3), ("small", 0.85, 2.0, 0.5))
    )
    assert selection["candidate"] == "mid"
    assert selection["threshold"] == 0.3
    assert "best validation F1 (0.9000)" in selection["reason"]
    assert "over budget: big" in selection["reason"]
    assert "ONNX Runtime, batch 1" in selection["reason"]
    assert selection["onnx_ms_per_image"] == 5.0


def test_no_candidate_within_the_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"no candidate fits the 10 ms/image budget .*'slow': 20.0"):
        select_candidate(PARAMS, *comparison(("slow", 0.9, 20.0, 0.5)))


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
