"""A probe's heads, trained on the cached features of its frozen pretrained backbone.

The features are cached once per run
(:func:`~ai_image_detection.pipelines.training.nodes.extract_features`); the heads of the
candidate and of each of its leave-one-family-out folds are fitted here on that table in seconds.
"""

from __future__ import annotations

import logging
import math

import keras
import mlflow
import numpy as np
import pandas as pd

from ai_image_detection.families import CLEAN_VIEW, attribution_families, family_targets
from ai_image_detection.models.zoo import probe_head
from ai_image_detection.pipelines.training.fitting import (
    compile_for_training,
    describe_run,
    training_callbacks,
)
from ai_image_detection.pipelines.training.params import CandidateParams

logger = logging.getLogger(__name__)

FEATURE_SPLITS = ("train", "validation")
"""The splits whose features are cached: what the heads and the leave-one-family-out folds train on."""


def stacked_features(tile_features: pd.DataFrame) -> np.ndarray:
    """The ``features`` column of a tile-feature table as one float32 matrix, a row per tile."""
    return np.stack(list(tile_features["features"])).astype(np.float32)


def fit_probe_head(
    image_manifest: pd.DataFrame,
    tile_features: pd.DataFrame,
    candidate: CandidateParams,
    seed: int,
    data_version: str,
    run_name: str,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train the heads on the tiles of the manifest's train split, stopping early on validation."""
    keras.utils.set_random_seed(seed)
    families = attribution_families(image_manifest)
    clean = tile_features[tile_features["view"] == CLEAN_VIEW]
    split = {  # every view of the training tiles; validation (early stopping) as it arrives, clean
        name: views.merge(
            image_manifest.loc[image_manifest["split"] == name, ["path", "label", "generator"]], on="path"
        )
        for name, views in (("train", tile_features), ("validation", clean))
    }
    missing = set(image_manifest.loc[image_manifest["split"].isin(FEATURE_SPLITS), "path"]) - set(
        clean["path"]
    )
    if missing:
        raise ValueError(
            f"{len(missing)} train/validation images have no cached features (e.g. {min(missing)})"
        )
    inputs = {name: stacked_features(rows) for name, rows in split.items()}
    targets = {
        name: (
            (rows["label"].to_numpy(np.float32), family_targets(rows, families))
            if families
            else rows["label"].to_numpy(np.float32)
        )
        for name, rows in split.items()
    }
    head = probe_head(
        inputs["train"].shape[1],
        families,
        candidate.detector.dropout,
        inputs["train"].mean(axis=0),
        np.maximum(inputs["train"].var(axis=0), 1e-12),
    )
    compile_for_training(head, candidate, math.ceil(len(inputs["train"]) / candidate.batch_size))
    with mlflow.start_run(run_name=run_name, nested=True):
        describe_run(
            run_name,
            data_version,
            {"candidate": candidate.model_dump()},
            head,
            distribution="probe heads on cached features",
            families=families,
        )
        fitted = head.fit(
            inputs["train"],
            targets["train"],
            validation_data=(inputs["validation"], targets["validation"]),
            epochs=candidate.epochs,
            batch_size=candidate.batch_size,
            callbacks=training_callbacks(candidate, head),
            verbose=0,
        )
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    logger.info(
        "%s: heads trained on %d tiles in %d epochs, best validation loss %.4f",
        run_name,
        len(inputs["train"]),
        len(history["val_loss"]),
        min(history["val_loss"]),
    )
    return head, history
