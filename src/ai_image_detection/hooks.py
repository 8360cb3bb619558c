"""Kedro hooks: settings that a late node would reject are checked before the first node runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import CatalogProtocol
from kedro.pipeline import Pipeline

EXPORT_PARAMS = "params:export"
CANDIDATES_PARAMS = "params:training.candidates"


def check_latency_budgets(latency_budget_ms: Mapping[str, float], candidates: Iterable[str]) -> None:
    """Every candidate has a latency budget.

    Args:
        latency_budget_ms: ``export.latency_budget_ms``.
        candidates: The candidates' names.

    Raises:
        ValueError: Naming the candidates without a budget.
    """
    unbudgeted = sorted(set(candidates) - set(latency_budget_ms))
    if unbudgeted:
        raise ValueError(
            f"export.latency_budget_ms has no budget for {unbudgeted}: state one per candidate "
            "(ms per model input, ONNX Runtime, batch 1) in parameters_export.yml"
        )


class SettingsChecks:
    """Checks across parameter files (one file's own rules live in its pydantic model)."""

    @hook_impl
    def before_pipeline_run(
        self, run_params: dict[str, Any], pipeline: Pipeline, catalog: CatalogProtocol
    ) -> None:
        """Every candidate has a latency budget when the run selects among them.

        Model selection compares each candidate's ONNX latency with its budget in
        ``parameters_export.yml``; without this check a missing budget would stop the run only
        after every candidate has trained.
        """
        if EXPORT_PARAMS in pipeline.inputs() and CANDIDATES_PARAMS in catalog:
            export = catalog.load(EXPORT_PARAMS)  # a mapping, or ExportParams once Kedro validated it
            budgets = export["latency_budget_ms"] if isinstance(export, Mapping) else export.latency_budget_ms
            check_latency_budgets(budgets, catalog.load(CANDIDATES_PARAMS))
