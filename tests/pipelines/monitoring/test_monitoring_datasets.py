"""The monitoring's inputs: the rotated prediction log, and the reference of the version behind an alias."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from kedro.io import DatasetError
from mlflow.tracking import MlflowClient

from ai_image_detection.datasets import JsonLinesDataset, ModelVersionArtifactDataset
from tests.pipelines.monitoring.synthetic import MODEL, prediction_lines, reference_table, write_log

ARTIFACT = "monitoring/monitoring_reference.parquet"


def test_the_log_and_its_rotations_load_oldest_first(tmp_path: Path) -> None:
    lines = prediction_lines(25)
    files = write_log(tmp_path, lines, per_file=10)
    assert sorted(path.name for path in files) == [
        "predictions.jsonl",
        "predictions.jsonl.1",
        "predictions.jsonl.2",
    ]
    (tmp_path / "predictions.jsonl.gz").write_bytes(b"not a rotation of the log")
    dataset = JsonLinesDataset(str(tmp_path / "predictions.jsonl"))

    log = dataset.load()

    assert log["prediction_id"].tolist() == [line["prediction_id"] for line in lines]
    assert dataset.exists()


def test_a_line_cut_short_is_skipped_not_fatal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = prediction_lines(3)
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"time": "2026-12-01T\n\n[1, 2]\n'
    (tmp_path / "predictions.jsonl").write_text(text, encoding="utf-8")

    log = JsonLinesDataset(str(tmp_path / "predictions.jsonl")).load()

    assert len(log) == 3
    assert "skipped 2 lines" in caplog.text


def test_an_absent_log_is_an_empty_table(tmp_path: Path) -> None:
    dataset = JsonLinesDataset(str(tmp_path / "never" / "predictions.jsonl"))
    assert dataset.load().empty
    assert not dataset.exists()
    with pytest.raises(DatasetError, match="read-only"):
        dataset.save(pd.DataFrame())  # type: ignore[arg-type]


def _version_with(client: MlflowClient, reference: pd.DataFrame | None, folder: Path) -> str:
    """Register a version of ``MODEL`` from a run that logged ``reference`` (or nothing)."""
    with mlflow.start_run() as run:
        if reference is not None:
            path = folder / "monitoring_reference.parquet"
            reference.to_parquet(path)
            mlflow.log_artifact(str(path), "monitoring")
    if not client.search_registered_models(f"name = '{MODEL}'"):
        client.create_registered_model(MODEL)
    version = client.create_model_version(MODEL, f"runs:/{run.info.run_id}/detector", run_id=run.info.run_id)
    return str(version.version)


def test_the_reference_of_the_version_behind_the_alias(tmp_path: Path, tracking: MlflowClient) -> None:
    reference = reference_table(30)
    first = _version_with(tracking, reference, tmp_path)
    second = _version_with(tracking, reference.assign(probability_ai=0.5), tmp_path)
    tracking.set_registered_model_alias(MODEL, "champion", first)
    dataset = ModelVersionArtifactDataset(MODEL, ARTIFACT, alias="champion")

    served = dataset.load()

    assert (served["model_version"], served["alias"], served["note"]) == (first, "champion", None)
    assert served["artifact"] == f"runs:/{served['run_id']}/{ARTIFACT}"
    pd.testing.assert_frame_equal(served["table"], reference)
    pinned = ModelVersionArtifactDataset(MODEL, ARTIFACT, version=second).load()
    assert pinned["model_version"] == second
    assert pinned["alias"] is None
    assert set(pinned["table"]["probability_ai"]) == {0.5}


def test_a_version_registered_before_references_loads_with_a_note(
    tmp_path: Path, tracking: MlflowClient
) -> None:
    version = _version_with(tracking, None, tmp_path)
    tracking.set_registered_model_alias(MODEL, "champion", version)

    served = ModelVersionArtifactDataset(MODEL, ARTIFACT).load()

    assert served["table"] is None
    assert served["model_version"] == version
    assert "has no monitoring_reference.parquet" in served["note"]


def test_no_champion_is_a_clear_error(tracking: MlflowClient) -> None:
    with pytest.raises(DatasetError, match="no alias 'champion' of 'ai-image-detector'.*make run"):
        ModelVersionArtifactDataset(MODEL, ARTIFACT).load()
