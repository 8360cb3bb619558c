"""The ``package`` pipeline: ``kedro run --pipelines package`` (``make package``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines.package.nodes import import_champion


def create_pipeline(**kwargs: object) -> Pipeline:
    """Import the registry's champion into the BentoML model store."""
    return Pipeline([Node(import_champion, "params:package", "package_report", name="import_champion_node")])
