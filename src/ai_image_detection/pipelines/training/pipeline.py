"""The ``training`` pipeline: one Kedro namespace per candidate of ``training.candidates``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from ai_image_detection.pipelines import bind
from ai_image_detection.pipelines.training.nodes import (
    extract_features,
    leave_one_family_out,
    leave_one_family_out_probe,
    manifest_version,
    train_candidate,
    train_probe,
)
from ai_image_detection.session_config import candidates


def create_pipeline(**kwargs: object) -> Pipeline:
    """Hash the manifest; train each candidate in its own namespace, and its leave-one-family-out folds."""
    version = Pipeline(
        [Node(manifest_version, "image_manifest@bytes", "manifest_md5", name="manifest_version_node")]
    )
    return version + sum(
        (
            _probe_pipeline(name) if candidate.get("probe", False) else _candidate_pipeline(name)
            for name, candidate in candidates().items()
        ),
        start=Pipeline([]),
    )


def _candidate_pipeline(name: str) -> Pipeline:
    recipe = [  # what training the candidate takes, for the model and for each held-out-family fold
        "image_manifest@pandas",
        "params:candidate",
        "params:augmentation",
        "params:training.seed",
        "params:training.distribution",
        "manifest_md5",
    ]
    base = Pipeline(
        [
            Node(
                bind(train_candidate, candidate_name=name),
                recipe,
                ["trained_model", "training_history"],
                name="train_candidate_node",
            ),
            Node(
                bind(leave_one_family_out, candidate_name=name),
                [*recipe, "params:training.leave_one_family_out", "params:evaluation.max_tiles"],
                "held_out_family_scores",
                name="leave_one_family_out_node",
            ),
        ]
    )
    return _namespaced(base, name)


def _probe_pipeline(name: str) -> Pipeline:
    """A probe: cache the frozen backbone's features once, then train the heads and every fold on them."""
    recipe = ["image_manifest@pandas", "tile_features", "params:candidate", "params:training.seed"]
    base = Pipeline(
        [
            Node(
                extract_features,
                [
                    "image_manifest@pandas",
                    "params:candidate",
                    "params:evaluation.max_tiles",
                    "params:training.seed",
                ],
                "tile_features",
                name="extract_features_node",
            ),
            Node(
                bind(train_probe, candidate_name=name),
                [*recipe, "manifest_md5"],
                ["trained_model", "training_history"],
                name="train_candidate_node",
            ),
            Node(
                bind(leave_one_family_out_probe, candidate_name=name),
                [*recipe, "manifest_md5", "params:training.leave_one_family_out"],
                "held_out_family_scores",
                name="leave_one_family_out_node",
            ),
        ]
    )
    return _namespaced(base, name)


def _namespaced(base: Pipeline, name: str) -> Pipeline:
    """``base`` in the candidate's namespace: its parameters are its own, every other one shared."""
    shared = {p for p in base.inputs() if p.startswith("params:") and p != "params:candidate"}
    return Pipeline(
        base,
        namespace=name,
        inputs={"image_manifest@pandas", "manifest_md5"},
        parameters={"params:candidate": f"params:training.candidates.{name}", **{p: p for p in shared}},
    )
