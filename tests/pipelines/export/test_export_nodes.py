"""Model selection: the rule, the budget, and the reason written to the report."""

from __future__ import annotations

from typing import Any

import pytest

from ai_image_detection.pipelines.export.nodes import ExportParams, select_candidate


def report(f1: float, ms: float, threshold: float = 0.5) -> dict[str, Any]:
    return {
        "validation": {"at_threshold": {"f1": f1}},
        "seconds_per_image": ms / 1000,
        "threshold": threshold,
    }


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
        PARAMS, report(0.99, 40.0), report(0.90, 5.0, 0.3), report(0.85, 2.0), names=["big", "mid", "small"]
    )
    assert selection["candidate"] == "mid"
    assert selection["threshold"] == 0.3
    assert "best validation F1 (0.9000)" in selection["reason"]
    assert "over budget: big" in selection["reason"]


def test_no_candidate_within_the_budget_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no candidate fits the 10 ms/image budget"):
        select_candidate(PARAMS, report(0.9, 20.0), names=["slow"])
