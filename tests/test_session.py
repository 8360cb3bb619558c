"""One KedroSession smoke test: the registered pipelines run end to end on the small sample set."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.project import configure_project
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from mlflow.tracking import MlflowClient

from ai_image_detection.onnx_export import onnx_metadata
from ai_image_detection.pipeline_registry import register_pipelines

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The project's configuration in a scratch folder, so the run writes only there."""
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is installed (editable) in the environment
    for env_var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(env_var, raising=False)
    monkeypatch.setenv("KEDRO_DISABLE_TELEMETRY", "1")
    monkeypatch.chdir(tmp_path)
    bootstrap_project(tmp_path)
    yield tmp_path


def test_pipelines_are_registered() -> None:
    configure_project("ai_image_detection")
    pipelines = register_pipelines()
    assert {"sample_data", "ingestion", "augmentation", "training", "__default__"} <= set(pipelines)
    default_nodes = {node.name for node in pipelines["__default__"].nodes}
    assert "generate_pairs_node" not in default_nodes, "kedro run must never regenerate raw data"
    assert {node.name for node in pipelines["ingestion"].nodes} <= default_nodes
    assert "small_cnn.train_candidate_node" in default_nodes, "one namespace per candidate"


@pytest.mark.slow
def test_sample_data_then_default_run(project_copy: Path) -> None:
    with KedroSession.create(
        project_path=project_copy, runtime_params={"sample_data": {"size": "small"}}
    ) as session:
        session.run(pipeline_names=["sample_data"])
    raw = project_copy / "data" / "01_raw"
    train = pd.read_csv(raw / "train.csv")
    assert len(train) + len(pd.read_csv(raw / "test.csv")) == 2 * 48
    assert (project_copy / "data" / "08_reporting" / "sample_contact_sheet.png").stat().st_size > 0

    with KedroSession.create(project_path=project_copy) as session:
        session.run()
    manifest = pd.read_parquet(project_copy / "data" / "03_primary" / "image_manifest.parquet")
    assert set(manifest["split"]) == {"train", "validation", "test"}
    assert manifest.loc[manifest["split"] != "test", "label"].notna().all()
    report = json.loads((project_copy / "data" / "08_reporting" / "ingestion_report.json").read_text())
    assert report["summary"]["ingested"] == len(manifest) == 2 * 48
    assert report["problems"] == []
    assert (project_copy / "data" / "06_models" / "candidates" / "small_cnn.keras").stat().st_size > 0
    history = json.loads(
        (project_copy / "data" / "07_model_output" / "training_history" / "small_cnn.json").read_text()
    )
    assert len(history["val_loss"]) >= 1
    assert (project_copy / "data" / "08_reporting" / "augmentation_grid.png").stat().st_size > 0
    evaluation = json.loads(
        (project_copy / "data" / "08_reporting" / "evaluation" / "small_cnn.json").read_text()
    )
    assert {"threshold", "validation", "test", "robustness"} <= set(evaluation)
    detector = (project_copy / "data" / "06_models" / "detector.onnx").read_bytes()
    assert onnx_metadata(detector)["candidate"] == "small_cnn"
    export = json.loads((project_copy / "data" / "08_reporting" / "export_report.json").read_text())
    assert export["parity_max_abs_difference"] <= export["parity_tolerance"]
    assert export["registry"]["alias_moved"], "the first registered model becomes champion"
    submission = pd.read_csv(project_copy / "data" / "07_model_output" / "submission.csv")
    assert list(submission.columns) == ["id", "label"]
    assert sorted(submission["id"]) == sorted(pd.read_csv(raw / "test.csv")["id"])

    tracking = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1, "one run per `kedro run`; the data-only sample_data run opened none"
    assert [child.info.run_name for child in children] == ["small_cnn"]
    assert children[0].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert "augmentation/augmentation_grid.png" in [
        a.path for a in tracking.list_artifacts(parents[0].info.run_id, "augmentation")
    ]
