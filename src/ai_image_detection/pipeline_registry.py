"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

DATA_GENERATION_PIPELINES = frozenset({"sample_data"})
"""Pipelines that make raw data; `kedro run` alone never regenerates raw data."""


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        Every pipeline by its folder name, plus ``__default__``: all of them except the
        ones that generate raw data (``make run`` calls ``sample_data`` only when
        ``data/01_raw`` is empty).
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name not in DATA_GENERATION_PIPELINES),
        start=Pipeline([]),
    )
    return pipelines
