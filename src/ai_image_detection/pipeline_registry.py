"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

OUTSIDE_DEFAULT = frozenset({"sample_data", "package", "monitoring"})
"""Pipelines `kedro run` alone never runs: making raw data, packaging for serving (`make serve`), and
watching the deployed service (`make monitor`)."""


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns:
        Every pipeline by its folder name, plus ``__default__``: all of them except the
        one that generates raw data (``make run`` calls ``sample_data`` only when
        ``data/01_raw/sample`` is absent), ``package`` (``make package`` / ``make serve``) and
        ``monitoring`` (``make monitor``).
    """
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipeline for name, pipeline in pipelines.items() if name not in OUTSIDE_DEFAULT),
        start=Pipeline([]),
    )
    return pipelines
