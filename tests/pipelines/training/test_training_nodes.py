"""Training: a tiny candidate learns, MLflow holds its run, the same seed repeats."""

from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib import cbook
from mlflow.tracking import MlflowClient
from sklearn.datasets import images as sklearn_images

from ai_image_detection.input_pipeline import build_augmenter, make_dataset
from ai_image_detection.models import BCEWithPriorPenalty, build_detector
from ai_image_detection.pipelines.ingestion.nodes import (
    IngestionParams,
    list_raw_files,
    split_train_validation,
    validate_files,
)
from ai_image_detection.pipelines.sample_data.nodes import SampleDataParams, generate_pairs
from ai_image_detection.pipelines.training.nodes import CandidateParams, manifest_version, train_candidate
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from tests.test_input_pipeline import project_params

EPOCHS = 8


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A small real/AI set from photos this environment already has, ingested."""
    raw = tmp_path_factory.mktemp("raw")
    sklearn_dir = Path(sklearn_images.__file__).parent
    photos = [
        SourcePhoto(f"p:{path.name}", "pypi", "pkg", "1", path.name, "test", "test", path.read_bytes())
        for path in (
            sklearn_dir / "china.jpg",
            sklearn_dir / "flower.jpg",
            Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)),
        )
    ]
    params = SampleDataParams.model_validate(
        {
            "size": "t",
            "sizes": {"t": {"pairs": 160, "registries": ["pypi"]}},
            "seed": 3,
            "test_fraction": 0.0,
            "crop_size": 64,
            "min_scale": 0.35,
            "image_format": "jpg",
            "jpeg_quality": 95,
            "min_distinct_photos": 1,
            "workers": 1,
            "contact_sheet_pairs": 1,
            "decoder": {
                "families": ["transposed_conv", "nearest_conv"],
                "factors": [2],
                "factor_weights": [1.0],
                "hidden_channels": 8,
                "residual_strength": [1.0, 2.5],
            },
        }
    )
    train_images, _, train_table, _, _ = generate_pairs(photos, params)
    (raw / "train_data").mkdir()
    for name, data in train_images.items():
        (raw / "train_data" / name).write_bytes(data)
    train_table.to_csv(raw / "train.csv", index=False)
    ingestion = IngestionParams(
        raw_dir=str(raw),
        layout="kaggle",
        min_side=32,
        max_pixels=10**7,
        validation_fraction=0.2,
        seed=0,
        normalised_dir=str(raw / "normalised"),
        workers=1,
    )
    candidates, _ = list_raw_files(ingestion)
    valid, _ = validate_files(candidates, ingestion)
    return split_train_validation(valid, ingestion)


def tiny_candidate() -> CandidateParams:
    return CandidateParams.model_validate(
        {
            "detector": {
                "architecture": "small_cnn",
                "image_size": 64,
                "widths": [8, 16, 32],
                "dropout": 0.1,
            },
            "epochs": EPOCHS,
            "batch_size": 16,
            "learning_rate": 0.005,
            "weight_decay": 0.0001,
            "warmup_epochs": 0,
            "freeze_backbone_epochs": 1,
            "early_stopping_patience": 5,
            "loss": {"alpha": 0.5, "beta": 0.5},
        }
    )


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    yield MlflowClient(uri)
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_tiny_candidate_learns_and_is_tracked(manifest: pd.DataFrame, tracking: MlflowClient) -> None:
    with mlflow.start_run(run_name="kedro run") as parent:
        model, history = train_candidate(
            manifest, tiny_candidate(), project_params(), 42, "mirrored", "abc123", "tiny"
        )

    epochs_run = len(history["val_loss"])
    assert 2 <= epochs_run <= EPOCHS
    assert min(history["val_loss"][1:]) < history["val_loss"][0]
    assert model.get_layer("backbone").trainable, "the backbone is unfrozen after the warm-up epochs"
    [child] = tracking.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert child.info.run_name == "tiny"
    assert child.data.params["candidate.detector.architecture"] == "small_cnn"
    assert child.data.params["augmentation.jpeg.probability"] == "0.1"
    assert child.data.tags["manifest_md5"] == "abc123"
    assert child.data.tags["git_commit"]
    assert child.data.tags["distribution"] == "mirrored (1 replica(s))", "MirroredStrategy on the CPU"
    for metric in ("loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"):
        assert len(tracking.get_metric_history(child.info.run_id, metric)) == epochs_run
    assert [a.path for a in tracking.list_artifacts(child.info.run_id)] == ["model_summary.txt"]


def _first_batch_loss(manifest: pd.DataFrame, seed: int) -> float:
    candidate = tiny_candidate()
    keras.utils.set_random_seed(seed)
    augmentation = project_params()
    batches = make_dataset(manifest, "train", 64, 16, augmentation, seed, build_augmenter(augmentation, seed))
    model = build_detector(candidate.detector)
    images, labels = next(iter(batches))
    return float(BCEWithPriorPenalty(alpha=0.5, beta=0.5)(labels, model(images, training=False)))


def test_the_same_seed_gives_the_same_first_batch_loss(manifest: pd.DataFrame) -> None:
    assert _first_batch_loss(manifest, 7) == _first_batch_loss(manifest, 7)
    assert _first_batch_loss(manifest, 7) != _first_batch_loss(manifest, 8)


def test_manifest_version_is_the_dvc_md5() -> None:
    assert manifest_version(b"abc") == "900150983cd24fb0d6963f7d28e17f72"
    assert np.char.str_len(manifest_version(b"")) == 32
