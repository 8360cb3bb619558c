"""What every fit of the ``training`` pipeline shares: strategy, compilation, callbacks, run description.

A whole detector (:func:`~ai_image_detection.pipelines.training.nodes.train_candidate`) and a
probe's heads (:mod:`~ai_image_detection.pipelines.training.probe_heads`) are compiled, stopped
early and described in their nested MLflow run the same way.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import keras
import mlflow
import tensorflow as tf

from ai_image_detection.contract import OUTPUT_NAME
from ai_image_detection.models import BCEWithPriorPenalty
from ai_image_detection.models.loss import MaskedSparseCategoricalCrossentropy
from ai_image_detection.pipelines.training.params import CandidateParams, Distribution


def distribution_strategy(name: Distribution) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy named in ``training.distribution``.

    ``default`` is the single-device strategy; ``mirrored`` replicates the model on every local
    GPU (on a machine without one it runs on the CPU as a single replica), with
    ``batch_size`` the global batch split across replicas.
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def describe_run(
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


def compile_for_training(model: keras.Model, candidate: CandidateParams, steps_per_epoch: int) -> None:
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


def training_callbacks(candidate: CandidateParams, model: keras.Model) -> list[keras.callbacks.Callback]:
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
