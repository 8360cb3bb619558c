"""Nodes of the ``training`` pipeline: one candidate detector per Kedro namespace.

Each candidate is trained in a nested MLflow run of the ``kedro run``'s run (opened by
kedro-mlflow): flattened parameters, per-epoch loss / accuracy / AUC for train and
validation, the model summary, and tags with the git commit and the DVC (md5) hash of the
manifest, so every model traces back to its exact data and code. The parameters are in
:mod:`.params`, what every fit shares in :mod:`.fitting`, the rotation's helpers in
:mod:`.folds` and a probe's head fitting in :mod:`.probe_heads`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math

import keras
import mlflow
import numpy as np
import pandas as pd

from ai_image_detection.families import CLEAN_VIEW, attribution_families, without_family
from ai_image_detection.input_pipeline import (
    AugmentationParams,
    Perturbation,
    build_augmenter,
    make_dataset,
    perturbed_pixels,
)
from ai_image_detection.models import build_detector
from ai_image_detection.models.zoo import feature_extractor, probe_detector
from ai_image_detection.pipelines.training.fitting import (
    compile_for_training,
    describe_run,
    distribution_strategy,
    training_callbacks,
)
from ai_image_detection.pipelines.training.folds import (
    fold_recipe,
    fold_scored_rows,
    held_out_table,
    rotated_families,
)
from ai_image_detection.pipelines.training.params import (
    CandidateParams,
    Distribution,
    LeaveOneFamilyOutParams,
)
from ai_image_detection.pipelines.training.probe_heads import (
    FEATURE_SPLITS,
    fit_probe_head,
    stacked_features,
    view_name,
)
from ai_image_detection.scoring import keras_features, keras_scorer, probability_output, score_files

logger = logging.getLogger(__name__)


def manifest_version(image_manifest_file: bytes) -> str:
    """The DVC hash of the manifest: the md5 of the file's bytes.

    Args:
        image_manifest_file: The manifest parquet file, as bytes.

    Returns:
        The hex md5 digest (what ``dvc.lock`` records for the file).
    """
    return hashlib.md5(image_manifest_file, usedforsecurity=False).hexdigest()


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
        describe_run(
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
                compile_for_training(model, candidate, steps_per_epoch)
            fitted = model.fit(
                train,
                validation_data=validation,
                initial_epoch=start,
                epochs=end,
                callbacks=training_callbacks(candidate, model),
                verbose=2,
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(float(v) for v in values)
            start = end
        logger.info("%s: best validation loss %.4f", candidate_name, min(history["val_loss"]))
    return model, history


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
        ``fold`` (the held-out family), ``path``, ``view`` (``clean``: the image as stored),
        ``label``, ``split`` (``validation`` or ``held_out``), ``generator`` and the raw
        ``probability_ai`` of each scored image.

    Raises:
        ValueError: If a family to rotate is not among the trained AI families.
    """
    recipe = fold_recipe(candidate, rotation)
    scored: list[pd.DataFrame] = []
    for family in rotated_families(image_manifest, rotation):
        fold = without_family(image_manifest, family)
        model, _ = train_candidate(
            fold, recipe, augmentation, seed, distribution, data_version, f"{candidate_name}/without-{family}"
        )
        rows = fold_scored_rows(image_manifest, fold, family)
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
                fold=family, view=CLEAN_VIEW, probability_ai=[float(np.mean(t)) for t in tiles]
            )
        )
    return held_out_table(scored)


# --------------------------------------------------------------------------------------------
# Probes: a frozen pretrained backbone whose features are cached, and heads trained on them
# --------------------------------------------------------------------------------------------


def extract_features(
    image_manifest: pd.DataFrame, candidate: CandidateParams, max_tiles: int, seed: int
) -> pd.DataFrame:
    """The frozen backbone's features of every tile of every train and validation image.

    The one expensive step of a probe, done once per run: the heads of the candidate and of all
    its leave-one-family-out folds train on this table in seconds. Tiles are cut as the service
    cuts them (:mod:`ai_image_detection.tiling`), so a head scores exactly the crops it will see.
    Each training image also gets ``candidate.reshared_views_per_image`` re-shared views, each after
    a different degradation drawn from ``candidate.reshared_views`` (seeded), when there are any.

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
    views: list[tuple[str, list[str], Perturbation | None]] = [(CLEAN_VIEW, rows["path"].tolist(), None)]
    if candidate.reshared_views:
        train = rows.loc[rows["split"] == "train", "path"].to_numpy()
        # a random order of the degradations per image; its first ones are the image's views
        order = (
            np.random.default_rng(seed).random((len(train), len(candidate.reshared_views))).argsort(axis=1)
        )
        drawn = order[:, : candidate.reshared_views_per_image]
        for index, reshared in enumerate(candidate.reshared_views):
            views.append((view_name(reshared), train[(drawn == index).any(axis=1)].tolist(), reshared))
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
    head, history = fit_probe_head(
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

    Besides the images as stored (view ``clean``), each fold scores every cached re-shared view
    of the held-out family's training pairs (:func:`extract_features`): how a generator the heads
    never saw fares once its images are blurred, shrunk or re-compressed, which is how the public
    meets them, at no extra cost in features.

    Args:
        image_manifest: The manifest from ingestion.
        tile_features: Output of :func:`extract_features`.
        candidate: A probe and its hyper-parameters.
        seed: Seed of every fold.
        data_version: DVC hash of the manifest, recorded on each fold's run.
        rotation: Which families to rotate, and the epochs per fold.
        candidate_name: The candidate's name; each fold is a nested run ``<name>/without-<family>``.

    Returns:
        The same table as :func:`leave_one_family_out`, with a row per image and view: ``clean``
        for every scored image, and the re-shared views (named as in :func:`extract_features`)
        of the held-out pairs that have them.
    """
    recipe = fold_recipe(candidate, rotation)
    scored: list[pd.DataFrame] = []
    for family in rotated_families(image_manifest, rotation):
        fold = without_family(image_manifest, family)
        head, _ = fit_probe_head(
            fold, tile_features, recipe, seed, data_version, f"{candidate_name}/without-{family}"
        )
        rows = fold_scored_rows(image_manifest, fold, family)
        clean = tile_features["view"] == CLEAN_VIEW
        in_fold = tile_features["path"].isin(set(rows["path"]))  # as stored: the fold's validation too
        held_out = tile_features["path"].isin(set(rows.loc[rows["split"] == "held_out", "path"]))
        tiles = tile_features[(clean & in_fold) | (~clean & held_out)]
        tile_scores = np.asarray(probability_output(head.predict(stacked_features(tiles), verbose=0)))[:, 0]
        image_scores = (
            tiles[["path", "view"]]
            .assign(probability_ai=tile_scores)
            .groupby(["path", "view"], as_index=False, sort=False)["probability_ai"]
            .mean()
        )
        scored.append(
            image_scores.merge(rows[["path", "label", "split", "generator"]], on="path").assign(fold=family)
        )
    return held_out_table(scored)
