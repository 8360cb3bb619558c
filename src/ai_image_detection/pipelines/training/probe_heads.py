"""A probe's heads, trained on the cached features of its frozen pretrained backbone.

The features are cached once per run
(:func:`~ai_image_detection.pipelines.training.nodes.extract_features`); the heads of the
candidate and of each of its leave-one-family-out folds are fitted here on that table in seconds,
with the candidate's expert heads (:mod:`ai_image_detection.models.expert_head`) when it has them.
Each head may read only some of the cached CLIP blocks (``main_head_class_token_layers``, an
expert's ``class_token_layers``); the head it ships reads the whole feature vector, with zero
weight on the columns it did not learn from.
"""

from __future__ import annotations

import logging
import math

import keras
import mlflow
import numpy as np
import pandas as pd

from ai_image_detection.families import CLEAN_VIEW, attribution_families, family_targets
from ai_image_detection.input_pipeline import Perturbation
from ai_image_detection.models.expert_head import ExpertFit, fit_expert, with_experts
from ai_image_detection.models.zoo import feature_columns, probe_head, widened_probe_head
from ai_image_detection.pipelines.training.fitting import (
    compile_for_training,
    describe_run,
    training_callbacks,
)
from ai_image_detection.pipelines.training.params import CandidateParams, ExpertParams

logger = logging.getLogger(__name__)

FEATURE_SPLITS = ("train", "validation")
"""The splits whose features are cached: what the heads and the leave-one-family-out folds train on."""


def view_name(degradation: Perturbation) -> str:
    """How a re-shared view is named in the feature cache: ``blur_1.5``, ``webp_70``, ``downscale_0.4``."""
    setting = {"jpeg": "quality", "webp": "quality", "blur": "sigma"}.get(degradation.kind, "factor")
    resave = "" if degradation.resave_quality is None else f"_jpeg_{degradation.resave_quality}"
    return f"{degradation.kind}_{getattr(degradation, setting):g}{resave}"


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
    """Train the heads on the tiles of the manifest's train split, stopping early on validation.

    The main head learns from the blocks ``candidate.main_head_class_token_layers`` (every cached
    feature when null), each expert from its own; all of them ship on the whole feature vector.
    """
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
    width = inputs["train"].shape[1]
    main_columns = feature_columns(candidate.detector, candidate.main_head_class_token_layers, width)
    main_inputs = {name: features[:, main_columns] for name, features in inputs.items()}
    targets = {
        name: (
            (rows["label"].to_numpy(np.float32), family_targets(rows, families))
            if families
            else rows["label"].to_numpy(np.float32)
        )
        for name, rows in split.items()
    }
    head = probe_head(
        len(main_columns),
        families,
        candidate.detector.dropout,
        main_inputs["train"].mean(axis=0),
        np.maximum(main_inputs["train"].var(axis=0), 1e-12),
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
            main_inputs["train"],
            targets["train"],
            validation_data=(main_inputs["validation"], targets["validation"]),
            epochs=candidate.epochs,
            batch_size=candidate.batch_size,
            callbacks=training_callbacks(candidate, head),
            verbose=0,
        )
        if len(main_columns) < width:
            head = widened_probe_head(head, main_columns, width)
        if candidate.experts:
            experts = {
                name: _fitted_expert(split["train"], inputs["train"], candidate, name, expert, run_name)
                for name, expert in candidate.experts.items()
            }
            head = with_experts(head, experts)
    history = {key: [float(v) for v in values] for key, values in fitted.history.items()}
    logger.info(
        "%s: heads trained on %d tiles in %d epochs, best validation loss %.4f",
        run_name,
        len(inputs["train"]),
        len(history["val_loss"]),
        min(history["val_loss"]),
    )
    return head, history


def expert_rows(train: pd.DataFrame, reshared_views: list[Perturbation], expert: ExpertParams) -> pd.Series:
    """The training tiles an expert learns from: its views in both classes, every other tile of humans.

    Args:
        train: The training tiles (``view`` and ``label`` columns).
        reshared_views: The candidate's re-shared views (how the cache names them).
        expert: The expert's settings.

    Returns:
        A boolean mask over ``train``.
    """
    both_classes = {view_name(view) for view in reshared_views if view.kind in expert.view_kinds}
    if CLEAN_VIEW in expert.view_kinds:
        both_classes.add(CLEAN_VIEW)
    return train["view"].isin(both_classes) | (train["label"] == 0)


def _fitted_expert(
    train: pd.DataFrame,
    train_features: np.ndarray,
    candidate: CandidateParams,
    name: str,
    expert: ExpertParams,
    run_name: str,
) -> ExpertFit:
    """Fit one of the candidate's experts on its training tiles (``train_features``, a row per tile)."""
    learnt = expert_rows(train, candidate.reshared_views, expert).to_numpy()
    rows = train[learnt]
    width = train_features.shape[1]
    columns = feature_columns(candidate.detector, expert.class_token_layers, width)
    fitted = fit_expert(
        train_features[np.ix_(learnt, columns)],
        rows["label"].to_numpy(np.float32),
        expert.l2,
        candidate.loss.alpha,
        candidate.loss.beta,
    )
    mlflow.log_metrics(
        {
            f"expert_{name}_iterations": fitted.iterations,
            f"expert_{name}_loss": fitted.loss,
            f"expert_{name}_tiles": len(rows),
        }
    )
    if not fitted.converged:
        logger.warning(
            "%s: expert %s stopped unconverged after %d iterations", run_name, name, fitted.iterations
        )
    logger.info(
        "%s: expert %s fitted on %d tiles in %d L-BFGS iterations",
        run_name,
        name,
        len(rows),
        fitted.iterations,
    )
    return fitted if len(columns) == width else fitted.widened(columns, width)
