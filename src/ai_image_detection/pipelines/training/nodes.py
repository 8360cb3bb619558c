"""Nodes of the ``training`` pipeline: one candidate detector per Kedro namespace.

Each candidate is trained in a nested MLflow run of the ``kedro run``'s run (opened by
kedro-mlflow): flattened parameters, per-epoch loss / accuracy / AUC for train and
validation, the model summary, and tags with the git commit and the DVC (md5) hash of the
manifest, so every model traces back to its exact data and code.
"""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
import subprocess
from typing import Any, Literal

import keras
import mlflow
import numpy as np
import pandas as pd
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field

from ai_image_detection.families import held_out_pairs, trained_ai_families, without_family
from ai_image_detection.input_pipeline import AugmentationParams, build_augmenter, make_dataset
from ai_image_detection.models import BCEWithPriorPenalty, DetectorSpec, build_detector
from ai_image_detection.scoring import keras_scorer, score_files

logger = logging.getLogger(__name__)


class LossParams(BaseModel):
    """``BCE + alpha · (mean(p) − beta)²``."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(ge=0)
    beta: float = Field(ge=0, le=1)


class CandidateParams(BaseModel):
    """One candidate of ``training.candidates`` in ``parameters_training.yml``."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorSpec
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: int = Field(ge=0, description="linear learning-rate warm-up, then cosine decay")
    freeze_backbone_epochs: int = Field(ge=0, description="epochs with a frozen backbone before fine-tuning")
    early_stopping_patience: int = Field(ge=1)
    loss: LossParams


HELD_OUT_SCORE_COLUMNS = ["fold", "path", "label", "split", "generator", "probability_ai"]


class LeaveOneFamilyOutParams(BaseModel):
    """The leave-one-family-out rotation (``training.leave_one_family_out``)."""

    model_config = ConfigDict(extra="forbid")

    families: list[str] | None = Field(
        default=None, description="families to rotate; null = every AI family in train and validation"
    )
    epochs: int | None = Field(default=None, ge=1, description="epochs per fold; null = the candidate's")


def manifest_version(image_manifest_file: bytes) -> str:
    """The DVC hash of the manifest: the md5 of the file's bytes.

    Args:
        image_manifest_file: The manifest parquet file, as bytes.

    Returns:
        The hex md5 digest (what ``dvc.lock`` records for the file).
    """
    return hashlib.md5(image_manifest_file, usedforsecurity=False).hexdigest()


Distribution = Literal["default", "mirrored"]


def distribution_strategy(name: Distribution) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named in ``training.distribution``.

    ``default`` is the single-device strategy; ``mirrored`` replicates the model on every local
    GPU (on a machine without one it runs on the CPU as a single replica), with
    ``batch_size`` the global batch split across replicas.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train_candidate(
    image_manifest: pd.DataFrame,
    candidate: CandidateParams,
    augmentation: AugmentationParams,
    seed: int,
    distribution: Distribution,
    data_version: str,
    candidate_name: str,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train one candidate with AdamW, warm-up + cosine schedule and early stopping.

    Args:
        image_manifest: The manifest from ingestion (train and validation splits are used).
        candidate: Architecture and hyper-parameters.
        augmentation: Input-pipeline and augmentation settings.
        seed: Seed of weights, shuffling and augmentation (same seed, same first batch).
        distribution: ``tf.distribute`` strategy (:func:`distribution_strategy`).
        data_version: DVC hash of the manifest, recorded as a tag.
        candidate_name: The candidate's name (its namespace), used for the nested run.

    Returns:
        The model with the best validation-loss weights restored, and its per-epoch history.
    """
    keras.utils.set_random_seed(seed)
    size, batch = candidate.detector.image_size, candidate.batch_size
    train = make_dataset(
        image_manifest, "train", size, batch, augmentation, seed, build_augmenter(augmentation, seed)
    )
    validation = make_dataset(image_manifest, "validation", size, batch, augmentation, seed)
    strategy = distribution_strategy(distribution)
    with strategy.scope():
        model = build_detector(candidate.detector)
    steps_per_epoch = math.ceil(int((image_manifest["split"] == "train").sum()) / batch)
    history: dict[str, list[float]] = {}
    with mlflow.start_run(run_name=candidate_name, nested=True):
        mlflow.set_tags(
            {
                "candidate": candidate_name,
                "git_commit": _git_commit(),
                "manifest_md5": data_version,
                "distribution": f"{distribution} ({strategy.num_replicas_in_sync} replica(s))",
            }
        )
        mlflow.log_params(
            _flatten({"candidate": candidate.model_dump(), "augmentation": augmentation.model_dump()})
        )
        mlflow.log_text(_summary(model), "model_summary.txt")
        phases = [(candidate.freeze_backbone_epochs, False), (candidate.epochs, True)]
        start = 0
        for end, backbone_trainable in phases:
            if end <= start:
                continue
            model.get_layer("backbone").trainable = backbone_trainable
            with strategy.scope():
                _compile(model, candidate, steps_per_epoch)
            fitted = model.fit(
                train,
                validation_data=validation,
                initial_epoch=start,
                epochs=end,
                callbacks=_callbacks(candidate),
                verbose=2,
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            start = end
        logger.info("%s: best validation loss %.4f", candidate_name, min(history["val_loss"]))
    return model, history


def _compile(model: keras.Model, candidate: CandidateParams, steps_per_epoch: int) -> None:
    """AdamW with linear warm-up then cosine decay, the prior-penalty loss, accuracy and AUC."""
    total = max(candidate.epochs * steps_per_epoch, 1)
    warmup = min(candidate.warmup_epochs * steps_per_epoch, total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else candidate.learning_rate,
        decay_steps=total - warmup,
        warmup_target=candidate.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=schedule, weight_decay=candidate.weight_decay),
        loss=BCEWithPriorPenalty(alpha=candidate.loss.alpha, beta=candidate.loss.beta),
        metrics=[keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")],
    )


def _callbacks(candidate: CandidateParams) -> list[keras.callbacks.Callback]:
    return [
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=candidate.early_stopping_patience, restore_best_weights=True
        ),
        keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: mlflow.log_metrics(
                {k: float(v) for k, v in logs.items()}, step=epoch
            )
        ),
    ]


def _summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line), expand_nested=False)
    return "\n".join(lines)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _git_commit() -> str:
    """The checked-out commit (``"unknown"`` outside a git work tree), plus ``-dirty`` if modified."""
    git = shutil.which("git")
    if git is None:
        return "unknown"
    try:
        commit = subprocess.run([git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True)  # noqa: S603
        status = subprocess.run(  # noqa: S603 - fixed arguments
            [git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def leave_one_family_out(
    image_manifest: pd.DataFrame,
    candidate: CandidateParams,
    augmentation: AugmentationParams,
    seed: int,
    distribution: Distribution,
    data_version: str,
    rotation: LeaveOneFamilyOutParams,
    max_tiles: int,
    candidate_name: str,
) -> pd.DataFrame:
    """Train the candidate's recipe once per generator family with that family held out, score it.

    Each fold trains on every pair but the held-out family's (its AI images and their content
    twins), with the candidate's own recipe, and scores its own validation images and the
    held-out pairs as the service would (tiles, mean). What the rotation measures is how the
    recipe does on a generator it has never seen, the field's real problem.

    Args:
        image_manifest: The manifest from ingestion.
        candidate: Architecture and hyper-parameters.
        augmentation: Input-pipeline and augmentation settings.
        seed: Seed of every fold.
        distribution: ``tf.distribute`` strategy name.
        data_version: DVC hash of the manifest, recorded on each fold's run.
        rotation: Which families to rotate, and the epochs per fold.
        max_tiles: Tiles per image when scoring (``evaluation.max_tiles``).
        candidate_name: The candidate's name; each fold is a nested run ``<name>/without-<family>``.

    Returns:
        ``fold`` (the held-out family), ``path``, ``label``, ``split`` (``validation`` or
        ``held_out``), ``generator`` and the raw ``probability_ai`` of each scored image.

    Raises:
        ValueError: If a family to rotate is not among the trained AI families.
    """
    available = trained_ai_families(image_manifest)
    families = available if rotation.families is None else rotation.families
    unknown = sorted(set(families) - set(available))
    if unknown:
        raise ValueError(
            f"cannot hold out {unknown}: the AI families in train and validation are {available}"
        )
    if not families:
        logger.warning("no generator families in train and validation: no leave-one-family-out folds")
    recipe = (
        candidate if rotation.epochs is None else candidate.model_copy(update={"epochs": rotation.epochs})
    )
    scored = [pd.DataFrame(columns=HELD_OUT_SCORE_COLUMNS)]
    for family in families:
        fold = without_family(image_manifest, family)
        model, _ = train_candidate(
            fold, recipe, augmentation, seed, distribution, data_version, f"{candidate_name}/without-{family}"
        )
        held_out = image_manifest[
            held_out_pairs(image_manifest, [family]) & image_manifest["split"].isin(["train", "validation"])
        ]
        rows = pd.concat(
            [
                fold[fold["split"] == "validation"].assign(split="validation"),
                held_out.assign(split="held_out"),
            ]
        )
        tiles = score_files(
            keras_scorer(model),
            rows["path"].tolist(),
            candidate.detector.image_size,
            max_tiles,
            candidate.batch_size * 4,
            description=f"scoring the fold without {family}",
        )
        scored.append(
            rows[["path", "label", "split", "generator"]].assign(
                fold=family, probability_ai=[float(np.mean(t)) for t in tiles]
            )
        )
    return pd.concat(scored, ignore_index=True)[HELD_OUT_SCORE_COLUMNS]
