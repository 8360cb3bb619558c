"""Nodes of the ``training`` pipeline: one candidate detector per Kedro namespace.

Each candidate is trained in a nested MLflow run of the ``kedro run``'s run (opened by
kedro-mlflow): flattened parameters, per-epoch loss / accuracy / AUC for train and
validation, the model summary, and tags with the git commit and the DVC (md5) hash of the
manifest, so every model traces back to its exact data and code.
"""

from __future__ import annotations

import functools
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
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ai_image_detection.contract import OUTPUT_NAME
from ai_image_detection.families import (
    attribution_families,
    family_targets,
    held_out_pairs,
    trained_ai_families,
    without_family,
)
from ai_image_detection.input_pipeline import (
    AugmentationParams,
    Perturbation,
    build_augmenter,
    make_dataset,
    perturbed_pixels,
)
from ai_image_detection.models import BCEWithPriorPenalty, DetectorSpec, build_detector
from ai_image_detection.models.loss import MaskedSparseCategoricalCrossentropy
from ai_image_detection.models.zoo import feature_extractor, probe_detector, probe_head
from ai_image_detection.scoring import keras_features, keras_scorer, probability_output, score_files

logger = logging.getLogger(__name__)


class LossParams(BaseModel):
    """``BCE + alpha · (mean(p) − beta)²``, plus ``attribution_weight`` × the attribution cross-entropy."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(ge=0)
    beta: float = Field(ge=0, le=1)
    attribution_weight: float = Field(
        default=0.5, ge=0, description="weight of the family head's loss (0: attribution learns nothing)"
    )


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
    probe: bool = Field(
        default=False,
        description="keep the pretrained backbone frozen: cache its features once, train only the heads",
    )
    reshared_views: list[Perturbation] = Field(
        default=[],
        description=(
            "a probe's training tiles are also cached once more after one of these degradations, "
            "drawn per image (seeded), so its heads learn what survives re-sharing"
        ),
    )

    @model_validator(mode="after")
    def _probe_settings_only_on_probes(self) -> CandidateParams:
        """Settings that only a probe reads are an error elsewhere, not silently ignored."""
        if self.probe and self.detector.weights is None:
            raise ValueError(
                f"a probe freezes its backbone, and {self.detector.architecture} has no pretrained "
                "weights here (detector.weights is null): a frozen random backbone learns nothing"
            )
        if not self.probe and self.reshared_views:
            raise ValueError("reshared_views are cached features of a probe: set probe: true or drop them")
        if not self.probe and self.detector.class_token_layers:
            raise ValueError(
                "class_token_layers are the features a probe reads: set probe: true or drop them"
            )
        return self


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
    families = attribution_families(image_manifest)
    train = make_dataset(
        image_manifest,
        "train",
        size,
        batch,
        augmentation,
        seed,
        build_augmenter(augmentation, seed),
        families=families,
    )
    validation = make_dataset(
        image_manifest, "validation", size, batch, augmentation, seed, families=families
    )
    strategy = distribution_strategy(distribution)
    with strategy.scope():
        model = build_detector(candidate.detector, families)
    steps_per_epoch = math.ceil(int((image_manifest["split"] == "train").sum()) / batch)
    history: dict[str, list[float]] = {}
    with mlflow.start_run(run_name=candidate_name, nested=True):
        _describe_run(
            candidate_name,
            data_version,
            {"candidate": candidate.model_dump(), "augmentation": augmentation.model_dump()},
            model,
            distribution=f"{distribution} ({strategy.num_replicas_in_sync} replica(s))",
            families=families,
        )
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
                callbacks=_callbacks(candidate, model),
                verbose=2,
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            start = end
        logger.info("%s: best validation loss %.4f", candidate_name, min(history["val_loss"]))
    return model, history


def _describe_run(
    candidate_name: str,
    data_version: str,
    params: dict[str, Any],
    model: keras.Model,
    distribution: str,
    families: list[str],
) -> None:
    """Tags (candidate, commit, data version, distribution, families), parameters and the model summary."""
    mlflow.set_tags(
        {
            "candidate": candidate_name,
            "git_commit": _git_commit(),
            "manifest_md5": data_version,
            "distribution": distribution,
            "attribution_families": ",".join(families) or "none",
        }
    )
    mlflow.log_params(_flatten(params))
    mlflow.log_text(_summary(model), "model_summary.txt")


def _compile(model: keras.Model, candidate: CandidateParams, steps_per_epoch: int) -> None:
    """AdamW, warm-up then cosine decay; the product's loss (plus attribution's); accuracy and AUC.

    A model that attributes adds the attribution cross-entropy, weighted by
    ``loss.attribution_weight``; accuracy and AUC are P(AI)'s.
    """
    total = max(candidate.epochs * steps_per_epoch, 1)
    warmup = min(candidate.warmup_epochs * steps_per_epoch, total - 1)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else candidate.learning_rate,
        decay_steps=total - warmup,
        warmup_target=candidate.learning_rate if warmup else None,
        warmup_steps=warmup,
    )
    detection = BCEWithPriorPenalty(alpha=candidate.loss.alpha, beta=candidate.loss.beta)
    metrics = [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=candidate.weight_decay)
    if len(model.outputs) == 1:
        model.compile(optimizer=optimizer, loss=detection, metrics=metrics)
        return
    model.compile(
        optimizer=optimizer,
        loss=[detection, MaskedSparseCategoricalCrossentropy()],
        loss_weights=[1.0, candidate.loss.attribution_weight],
        metrics=[metrics, []],
    )


def _callbacks(candidate: CandidateParams, model: keras.Model) -> list[keras.callbacks.Callback]:
    """Early stopping on the validation detection loss (not the attribution's), and MLflow logging."""
    monitor = f"val_{OUTPUT_NAME}_loss" if len(model.outputs) > 1 else "val_loss"
    return [
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode="min", patience=candidate.early_stopping_patience, restore_best_weights=True
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
    recipe = _fold_recipe(candidate, rotation)
    scored: list[pd.DataFrame] = []
    for family in _rotated_families(image_manifest, rotation):
        fold = without_family(image_manifest, family)
        model, _ = train_candidate(
            fold, recipe, augmentation, seed, distribution, data_version, f"{candidate_name}/without-{family}"
        )
        rows = _fold_scored_rows(image_manifest, fold, family)
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
    return _held_out_table(scored)


def _fold_recipe(candidate: CandidateParams, rotation: LeaveOneFamilyOutParams) -> CandidateParams:
    """The candidate's recipe with the rotation's epochs per fold, when it sets them."""
    return candidate if rotation.epochs is None else candidate.model_copy(update={"epochs": rotation.epochs})


def _held_out_table(folds: list[pd.DataFrame]) -> pd.DataFrame:
    if not folds:
        return pd.DataFrame(columns=HELD_OUT_SCORE_COLUMNS)
    return pd.concat(folds, ignore_index=True)[HELD_OUT_SCORE_COLUMNS]


def _rotated_families(image_manifest: pd.DataFrame, rotation: LeaveOneFamilyOutParams) -> list[str]:
    """The families to hold out in turn; an error naming the trained ones for a family that is not."""
    available = trained_ai_families(image_manifest)
    families = available if rotation.families is None else rotation.families
    unknown = sorted(set(families) - set(available))
    if unknown:
        raise ValueError(
            f"cannot hold out {unknown}: the AI families in train and validation are {available}"
        )
    if not families:
        logger.warning("no generator families in train and validation: no leave-one-family-out folds")
    return families


def _fold_scored_rows(image_manifest: pd.DataFrame, fold: pd.DataFrame, family: str) -> pd.DataFrame:
    """What a fold is scored on: its own validation images and the held-out family's pairs."""
    held_out = image_manifest[
        held_out_pairs(image_manifest, [family]) & image_manifest["split"].isin(["train", "validation"])
    ]
    return pd.concat(
        [fold[fold["split"] == "validation"].assign(split="validation"), held_out.assign(split="held_out")]
    )


# --------------------------------------------------------------------------------------------
# Probes: a frozen pretrained backbone whose features are cached, and heads trained on them
# --------------------------------------------------------------------------------------------

FEATURE_SPLITS = ("train", "validation")
"""The splits whose features are cached: what the heads and the leave-one-family-out folds train on."""


def extract_features(
    image_manifest: pd.DataFrame, candidate: CandidateParams, max_tiles: int, seed: int
) -> pd.DataFrame:
    """The frozen backbone's features of every tile of every train and validation image.

    The one expensive step of a probe, done once per run: the heads of the candidate and of all
    its leave-one-family-out folds train on this table in seconds. Tiles are cut as the service
    cuts them (:mod:`ai_image_detection.tiling`), so a head scores exactly the crops it will see.
    Each training image also gets one ``reshared`` view, after one degradation drawn
    from ``candidate.reshared_views`` (seeded), when there are any.

    Args:
        image_manifest: The manifest from ingestion.
        candidate: A probe (``probe: true``) with a pretrained backbone.
        max_tiles: Tiles per image (``evaluation.max_tiles``).
        seed: Seed of the degradation drawn for each training image.

    Returns:
        ``path``, ``view`` (``clean``, or the degradation of a re-shared view), ``tile`` (its
        index in the image) and ``features`` (float32 list) per tile.

    Raises:
        ValueError: If the candidate is not a probe.
    """
    if not candidate.probe:
        raise ValueError("features are cached for probes only (probe: true)")
    rows = image_manifest[image_manifest["split"].isin(FEATURE_SPLITS) & image_manifest["label"].notna()]
    extractor = feature_extractor(candidate.detector)
    views: list[tuple[str, list[str], Perturbation | None]] = [("clean", rows["path"].tolist(), None)]
    if candidate.reshared_views:
        train = rows.loc[rows["split"] == "train", "path"].to_numpy()
        drawn = np.random.default_rng(seed).integers(len(candidate.reshared_views), size=len(train))
        for index, drawn_degradation in enumerate(candidate.reshared_views):
            views.append((_view_name(drawn_degradation), train[drawn == index].tolist(), drawn_degradation))
    tables = []
    for view, paths, degradation in views:
        tiles = score_files(
            keras_features(extractor),
            paths,
            candidate.detector.image_size,
            max_tiles,
            candidate.batch_size,
            transform=None
            if degradation is None
            else functools.partial(perturbed_pixels, perturbation=degradation),
            description=f"{extractor.name}: caching features ({view})",
        )
        tables.append(
            pd.DataFrame(
                {
                    "path": np.repeat(paths, [len(t) for t in tiles]),
                    "view": view,
                    "tile": np.concatenate([np.arange(len(t)) for t in tiles]) if tiles else [],
                    "features": [row for t in tiles for row in t],
                }
            )
        )
    return pd.concat(tables, ignore_index=True)


def _view_name(degradation: Perturbation) -> str:
    setting = {"jpeg": "quality", "blur": "sigma"}.get(degradation.kind, "factor")
    return f"{degradation.kind}_{getattr(degradation, setting):g}"


def train_probe(
    image_manifest: pd.DataFrame,
    tile_features: pd.DataFrame,
    candidate: CandidateParams,
    seed: int,
    data_version: str,
    candidate_name: str,
) -> tuple[keras.Model, dict[str, list[float]]]:
    """Train a probe's heads on the cached features; ship them behind the frozen extractor.

    Every tile of a training image is a sample (the service averages its tiles' answers);
    AdamW with the candidate's schedule, the product's loss, early stopping on validation.

    Args:
        image_manifest: The manifest from ingestion (train and validation splits are used).
        tile_features: Output of :func:`extract_features`.
        candidate: A probe and its hyper-parameters.
        seed: Seed of the heads' weights and of the sample order.
        data_version: DVC hash of the manifest, recorded as a tag.
        candidate_name: The candidate's name (its namespace), used for the nested run.

    Returns:
        The detector (raw RGB in, the heads' outputs out) and the heads' per-epoch history.
    """
    head, history = _fit_probe_head(
        image_manifest, tile_features, candidate, seed, data_version, candidate_name
    )
    return probe_detector(feature_extractor(candidate.detector), head), history


def leave_one_family_out_probe(
    image_manifest: pd.DataFrame,
    tile_features: pd.DataFrame,
    candidate: CandidateParams,
    seed: int,
    data_version: str,
    rotation: LeaveOneFamilyOutParams,
    candidate_name: str,
) -> pd.DataFrame:
    """:func:`leave_one_family_out` for a probe: each fold's heads train on the cached features.

    Args:
        image_manifest: The manifest from ingestion.
        tile_features: Output of :func:`extract_features`.
        candidate: A probe and its hyper-parameters.
        seed: Seed of every fold.
        data_version: DVC hash of the manifest, recorded on each fold's run.
        rotation: Which families to rotate, and the epochs per fold.
        candidate_name: The candidate's name; each fold is a nested run ``<name>/without-<family>``.

    Returns:
        The same table as :func:`leave_one_family_out`.
    """
    recipe = _fold_recipe(candidate, rotation)
    scored: list[pd.DataFrame] = []
    for family in _rotated_families(image_manifest, rotation):
        fold = without_family(image_manifest, family)
        head, _ = _fit_probe_head(
            fold, tile_features, recipe, seed, data_version, f"{candidate_name}/without-{family}"
        )
        rows = _fold_scored_rows(image_manifest, fold, family)
        tiles = tile_features[
            tile_features["path"].isin(set(rows["path"])) & (tile_features["view"] == "clean")
        ]
        tile_scores = np.asarray(probability_output(head.predict(_stacked(tiles), verbose=0)))[:, 0]
        image_scores = pd.Series(tile_scores, index=tiles["path"].to_numpy()).groupby(level=0).mean()
        scored.append(
            rows[["path", "label", "split", "generator"]].assign(
                fold=family, probability_ai=image_scores.reindex(rows["path"]).to_numpy()
            )
        )
    return _held_out_table(scored)


def _stacked(tile_features: pd.DataFrame) -> np.ndarray:
    return np.stack(list(tile_features["features"])).astype(np.float32)


def _fit_probe_head(
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
    clean = tile_features[tile_features["view"] == "clean"]
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
    inputs = {name: _stacked(rows) for name, rows in split.items()}
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
    _compile(head, candidate, math.ceil(len(inputs["train"]) / candidate.batch_size))
    with mlflow.start_run(run_name=run_name, nested=True):
        _describe_run(
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
            callbacks=_callbacks(candidate, head),
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
