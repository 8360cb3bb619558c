"""Model selection: the rule, the budget, and the reason written to the report."""

from __future__ import annotations

import pandas as pd
import pytest

from ai_image_detection.pipelines.export.nodes import ExportParams, select_candidate


def comparison(*rows: tuple[str, float, float, float]) -> pd.DataFrame:
    """The evaluation's comparison table: candidate, F1, ms per image, threshold."""
    return pd.DataFrame(rows, columns=["candidate", "f1", "ms_per_image", "threshold"])


PARAMS = ExportParams(
    latency_budget_ms=10,
    opset=17,
    parity_tolerance=1e-4,
    parity_images=8,
    registered_model_name="ai-image-detector",
    champion_alias="champion",
)


def test_best_f1_within_the_budget_wins_and_the_reason_says_why() -> None:
    selection = select_candidate(
        PARAMS, comparison(("big", 0.99, 40.0, 0.5), ("mid", 0.90, 5.0, 0.3), ("small", 0.85, 2.0, 0.5))
    )
    assert selection["candidate"] == "mid"
    assert selection["threshold"] == 0.3
    assert "best validation F1 (0.9000)" in selection["reason"]
    assert "over budget: big" in selection["reason"]


def test_no_candidate_within_the_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no candidate fits the 10 ms/image budget"):
        select_candidate(PARAMS, comparison(("slow", 0.9, 20.0, 0.5)))
