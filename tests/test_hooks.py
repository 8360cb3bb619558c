"""The settings checks that run before the first node: a missing latency budget stops the run at once."""

from __future__ import annotations

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node, Pipeline

from ai_image_detection.hooks import SettingsChecks
from tests.pipelines.export.test_export_nodes import PARAMS


def _select(export: dict[str, object], comparison: object) -> None:
    """Stands for the selection node: what matters is that it reads ``params:export``."""


def _catalog(budgets: dict[str, float], *, validated: bool = False) -> DataCatalog:
    """The parameters as the hook finds them: plain mappings, or models once Kedro has validated them."""
    export = (
        PARAMS.model_copy(update={"latency_budget_ms": budgets})
        if validated
        else {"latency_budget_ms": budgets}
    )
    return DataCatalog(
        datasets={
            "params:export": MemoryDataset(export, copy_mode="assign"),
            "params:training.candidates": MemoryDataset({"small_cnn": {}, "clip_vit_b16": {}}),
        }
    )


SELECTION = Pipeline([Node(_select, ["params:export", "candidate_comparison"], None)])
TRAINING_ONLY = Pipeline([Node(_select, ["params:training.candidates", "image_manifest"], None)])


@pytest.mark.parametrize("validated", [False, True])
def test_a_candidate_without_a_latency_budget_stops_the_run_before_any_node(validated: bool) -> None:
    with pytest.raises(ValueError, match=r"no budget for \['clip_vit_b16'\]"):
        SettingsChecks().before_pipeline_run(
            {}, SELECTION, _catalog({"small_cnn": 50.0}, validated=validated)
        )


def test_budgets_are_only_required_when_the_run_selects() -> None:
    SettingsChecks().before_pipeline_run({}, TRAINING_ONLY, _catalog({"small_cnn": 50.0}))
    SettingsChecks().before_pipeline_run({}, SELECTION, _catalog({"small_cnn": 50.0, "clip_vit_b16": 500.0}))
