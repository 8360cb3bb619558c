"""The ``monitoring`` pipeline on the project's own catalog entries, with a synthetic service behind them.

The catalog entries are those of ``conf/base/catalog.yml`` (relative paths, in a scratch working
directory); only the feedback store's S3 prefix is swapped for a local folder of the same layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient

from ai_image_detection.pipeline_registry import OUTSIDE_DEFAULT
from ai_image_detection.pipelines.monitoring import create_pipeline
from tests.pipelines.monitoring.synthetic import (
    MODEL,
    PARAMS,
    feedback_records,
    prediction_lines,
    reference_table,
    served_reference,
    write_log,
)
from tests.pipelines.monitoring.test_monitoring_datasets import _version_with

PROJECT_ROOT = Path(__file__).resolve().parents[3]
PIPELINE = create_pipeline()
REPORT_DIR = Path("data/08_reporting/monitoring")
REPORT_FILES = {"report.html", "drift.json", "probability_ai.png", "input_statistics.png"}


def project_catalog(feedback_dir: Path, *, mlflow_datasets: bool) -> dict[str, Any]:
    """The pipeline's entries of ``conf/base/catalog.yml``; feedback from ``feedback_dir`` instead of S3.

    Without ``mlflow_datasets`` the MLflow artifact entries are replaced by the datasets they wrap.
    """
    entries = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text(encoding="utf-8"))
    config = {name: entries[name] for name in PIPELINE.datasets() if name in entries}
    feedback = {key: value for key, value in config["feedback_records"].items() if key != "fs_args"}
    config["feedback_records"] = {**feedback, "path": str(feedback_dir)}
    if not mlflow_datasets:
        config = {
            name: entry.get("dataset", entry) if "Artifact" in entry["type"] else entry
            for name, entry in config.items()
        }
        del config["monitoring_metrics"], config["served_model_reference"]
    return config


def write_feedback(folder: Path, records: dict[str, dict[str, Any]]) -> None:
    """The store's layout: ``<date>/<feedback_id>.json``."""
    for key, record in records.items():
        path = folder / f"{key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record), encoding="utf-8")


def test_monitoring_is_outside_the_default_run() -> None:
    assert "monitoring" in OUTSIDE_DEFAULT, "`make run` trains; `make monitor` watches the service"


def test_the_pipeline_writes_the_report_and_logs_it_to_mlflow(tmp_path: Path, tracking: MlflowClient) -> None:
    version = _version_with(tracking, reference_table(), tmp_path)
    tracking.set_registered_model_alias(MODEL, "champion", version)
    other = str(int(version) + 1)  # a newer version, not the champion: summarised apart
    lines = prediction_lines(150, ai_share=0.95, version=version) + prediction_lines(
        20, seed=9, version=other
    )
    write_log(tmp_path / "logs" / "predictions", lines, per_file=60)  # predictions.jsonl, .1 and .2
    with (tmp_path / "logs" / "predictions" / "predictions.jsonl").open("a", encoding="utf-8") as log:
        log.write('{"time": "2026-12-01T1')  # the service stopped mid-line
    write_feedback(tmp_path / "feedback" / "records", feedback_records(version, other))
    catalog = DataCatalog.from_config(
        project_catalog(tmp_path / "feedback" / "records", mlflow_datasets=True)
    )
    catalog["params:monitoring"] = MemoryDataset(PARAMS)

    with mlflow.start_run() as run:
        SequentialRunner().run(PIPELINE, catalog)

    assert {path.name for path in (tmp_path / REPORT_DIR).iterdir()} == REPORT_FILES
    drift = json.loads((tmp_path / REPORT_DIR / "drift.json").read_text(encoding="utf-8"))
    assert (drift["model"]["model_version"], drift["model"]["reference_images"]) == (version, 400)
    assert drift["predictions"]["count"] == 150
    assert drift["predictions"]["all_versions"] == 170
    assert drift["other_versions"][0]["model"] == f"ai-image-detector v{other}"
    assert drift["drift"]["probability_ai"]["psi"] >= 0.25
    assert drift["drift"]["probability_ai"]["ks_pvalue"] < 1e-6
    assert set(drift["drift"]["inputs"]) == {"width", "height", "bytes", "mean_luma", "std_luma", "format"}
    feedback = drift["feedback"]
    assert (feedback["total"], feedback["with_consent"], feedback["claimed"]) == (
        12,
        4,
        {"ai": 7, "human": 5},
    )
    assert feedback["this_version"]["confirmed_errors"] == 3
    assert drift["flag"]["retrain"] is True
    assert len(drift["flag"]["reasons"]) == 2, "P(AI) shift and confirmed errors"
    page = (tmp_path / REPORT_DIR / "report.html").read_text(encoding="utf-8")
    assert "RETRAIN" in page
    assert page.count("data:image/png;base64,") == 2

    logged = {item.path for item in tracking.list_artifacts(run.info.run_id, "monitoring")}
    assert logged == {f"monitoring/{name}" for name in REPORT_FILES}
    metrics = tracking.get_run(run.info.run_id).data.metrics
    assert metrics["monitoring.predictions"] == 150
    assert metrics["monitoring.retrain"] == 1
    assert metrics["monitoring.feedback_total"] == 12
    assert metrics["monitoring.probability_ai_psi"] == pytest.approx(drift["drift"]["probability_ai"]["psi"])


def test_no_log_and_no_feedback_yet_give_a_clear_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    catalog = DataCatalog.from_config(
        project_catalog(tmp_path / "feedback" / "records", mlflow_datasets=False)
    )
    catalog["params:monitoring"] = MemoryDataset(PARAMS)
    catalog["served_model_reference"] = MemoryDataset(served_reference(reference_table()), copy_mode="assign")
    catalog["monitoring_metrics"] = MemoryDataset()

    outputs = SequentialRunner().run(PIPELINE, catalog)

    drift = json.loads((tmp_path / REPORT_DIR / "drift.json").read_text(encoding="utf-8"))
    assert drift["predictions"]["note"] == "no predictions logged yet by ai-image-detector v3"
    assert drift["feedback"]["total"] == 0
    assert drift["flag"]["status"] == "no data"
    assert "no predictions logged yet" in (tmp_path / REPORT_DIR / "report.html").read_text(encoding="utf-8")
    assert outputs["monitoring_metrics"].load()["predictions"] == {"value": 0.0, "step": 0}
