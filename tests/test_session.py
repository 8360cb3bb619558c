"""One KedroSession smoke test: the registered pipelines run end to end on the small sample set."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import mlflow
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from mlflow.tracking import MlflowClient
from nbclient import NotebookClient
from PIL import Image

from ai_image_detection.onnx_export import onnx_predict
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.pipeline_registry import register_pipelines
from tests.conftest import PROJECT_ROOT, LocalS3, scratch_project
from tests.serving.conftest import serving
from tests.serving.provenance_fixtures import png_with_parameters
from tests.test_data_safety import USER_FILES, write_files

CANDIDATES = ("small_cnn", "efficientnet_lite0")
"""The default run's candidates but CLIP: the NPR network from scratch and a probe of a pretrained
backbone. CLIP is the default's other probe: the same probe nodes with a backbone 18 times larger,
whose loading, feature caching and tf2onnx export alone took about 6 of this run's 12 minutes on 2
cores; its encoder, weights and export are tested in tests/models/test_clip.py."""


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project's configuration in a scratch folder, so the run writes only there."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        project = scratch_project(tmp_path_factory.mktemp("project"), monkeypatch)
        # The copy's own base config lists the candidates. (Not conf/local: Kedro 1.7 merges runtime
        # parameters into each environment before the environments replace each other's top-level
        # keys, so any parameters file in conf/local would reduce `sample_data` to the runtime `size`.)
        training_file = project / "conf" / "base" / "parameters_training.yml"
        training = yaml.safe_load(training_file.read_text())
        training["training"]["candidates"] = {
            name: training["training"]["candidates"][name] for name in CANDIDATES
        }
        # two epochs: this run tests the wiring end to end; learning is tested in tests/pipelines/training
        training["training"]["candidates"]["small_cnn"]["epochs"] = 2
        training_file.write_text(yaml.safe_dump(training, sort_keys=False))
        bootstrap_project(project)
        yield project


@pytest.fixture(scope="module")
def finished_run(project_copy: Path) -> Path:
    """``sample_data`` (small) then ``kedro run`` of the default pipeline, once for this module.

    A user's own raw files sit in ``data/01_raw`` (both layouts) all along.
    """
    write_files(project_copy, USER_FILES)
    with KedroSession.create(
        project_path=project_copy, runtime_params={"sample_data": {"size": "small"}}
    ) as session:
        session.run(pipeline_names=["sample_data"])
    # one family held out for the unseen split, the others rotated with one epoch per fold
    quick = {
        "ingestion": {"unseen_families": ["waifu2x"]},
        "training": {"leave_one_family_out": {"families": ["realcugan", "simulator"], "epochs": 1}},
    }
    with KedroSession.create(project_path=project_copy, runtime_params=quick) as session:
        session.run()
    # kedro-mlflow leaves the `kedro run`'s MLflow run active in this process once the session is
    # over; end it, so that no later test inherits it as a parent.
    while mlflow.active_run() is not None:
        mlflow.end_run()
    return project_copy


def test_pipelines_are_registered() -> None:
    configure_project("ai_image_detection")
    pipelines = register_pipelines()
    assert {"sample_data", "ingestion", "augmentation", "training", "__default__"} <= set(pipelines)
    default_nodes = {node.name for node in pipelines["__default__"].nodes}
    assert "generate_pairs_node" not in default_nodes, "kedro run must never regenerate raw data"
    assert {node.name for node in pipelines["ingestion"].nodes} <= default_nodes
    assert "small_cnn.train_candidate_node" in default_nodes, "one namespace per candidate"


def test_every_pipeline_input_is_a_parameter_or_a_catalog_entry() -> None:
    configure_project("ai_image_detection")
    config = OmegaConfigLoader(
        conf_source=str(PROJECT_ROOT / "conf"), base_env="base", default_run_env="local"
    )
    catalog = DataCatalog.from_config(config["catalog"])
    missing = {}
    for name, pipeline in register_pipelines().items():
        for dataset in sorted(pipeline.inputs()):
            if dataset.startswith("params:"):
                found = _has_parameter(config["parameters"], dataset.removeprefix("params:"))
            else:
                found = dataset in catalog
            if not found:
                missing.setdefault(name, []).append(dataset)
    assert not missing, f"pipeline inputs nobody provides: {missing}"


def _has_parameter(parameters: Mapping[str, Any], dotted_key: str) -> bool:
    value: Any = parameters
    for key in dotted_key.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return False
        value = value[key]
    return True


@pytest.mark.slow
def test_the_users_raw_files_survive_the_runs_byte_identical(finished_run: Path) -> None:
    assert {name: (finished_run / name).read_bytes() for name in USER_FILES} == USER_FILES


@pytest.mark.slow
def test_sample_data_then_default_run(finished_run: Path) -> None:
    project_copy = finished_run
    raw = project_copy / "data" / "01_raw" / "sample"
    train = pd.read_csv(raw / "train.csv")
    assert len(train) + len(pd.read_csv(raw / "test.csv")) == 2 * 60
    assert (project_copy / "data" / "08_reporting" / "sample_contact_sheet.png").stat().st_size > 0

    manifest = pd.read_parquet(project_copy / "data" / "03_primary" / "image_manifest.parquet")
    assert set(manifest["split"]) == {"train", "validation", "test", "unseen"}
    assert manifest.loc[manifest["split"] != "test", "label"].notna().all()
    report = json.loads((project_copy / "data" / "08_reporting" / "ingestion_report.json").read_text())
    assert report["summary"]["ingested"] == len(manifest) == 2 * 60
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
    assert {
        "threshold",
        "validation",
        "test",
        "unseen",
        "robustness",
        "robustness_unseen",
        "families",
        "calibration",
    } <= set(evaluation)
    detector = (project_copy / "data" / "06_models" / "detector.onnx").read_bytes()
    export = json.loads((project_copy / "data" / "08_reporting" / "export_report.json").read_text())
    assert onnx_metadata(detector)["candidate"] == export["candidate"] in CANDIDATES
    assert export["parity_max_abs_difference"] <= export["parity_tolerance"]
    assert export["registry"]["alias_moved"], "the first registered model becomes champion"
    assert export["shipped_precision"] == "fp32"
    assert "ONNX Runtime, batch 1" in export["reason"]
    int8 = (project_copy / "data" / "06_models" / "detector.int8.onnx").read_bytes()
    assert onnx_metadata(int8)["threshold"] == onnx_metadata(detector)["threshold"]
    quantization = json.loads(
        (project_copy / "data" / "08_reporting" / "quantization_report.json").read_text()
    )
    assert {"f1_fp32", "f1_int8", "f1_change_points", "speedup_batch1", "speedup_batch32"} <= set(
        quantization
    )
    card = (project_copy / "data" / "08_reporting" / "model_card.md").read_text()
    assert card.startswith("# Model card: ai-image-detector v1")
    submission = pd.read_csv(project_copy / "data" / "07_model_output" / "submission.csv")
    assert list(submission.columns) == ["id", "label"]
    assert sorted(submission["id"]) == sorted(pd.read_csv(raw / "test.csv")["id"])

    tracking = MlflowClient(tracking_uri=f"sqlite:///{project_copy / 'mlflow.db'}")
    runs = tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1, (
        "one run per `kedro run`; the data-only sample_data run opened none: "
        f"{[(run.info.run_name, run.data.tags.get('mlflow.parentRunId')) for run in runs]}"
    )
    assert sorted(child.info.run_name for child in children) == sorted(
        f"{candidate}{fold}"
        for candidate in CANDIDATES
        for fold in ("", "/without-realcugan", "/without-simulator")
    )
    assert {child.data.tags["mlflow.parentRunId"] for child in children} == {parents[0].info.run_id}
    assert "augmentation/augmentation_grid.png" in [
        a.path for a in tracking.list_artifacts(parents[0].info.run_id, "augmentation")
    ]
    assert {"export/model_card.md", "export/detector.int8.onnx"} <= {
        a.path for a in tracking.list_artifacts(parents[0].info.run_id, "export")
    }
    assert tracking.get_model_version("ai-image-detector", "1").description == card


@pytest.mark.slow
def test_the_run_holds_a_family_out_and_judges_on_it(finished_run: Path) -> None:
    data = finished_run / "data"
    manifest = pd.read_parquet(data / "03_primary" / "image_manifest.parquet")
    family = manifest["generator"].str.split("/").str[0]
    unseen = set(family[manifest["split"] == "unseen"])
    assert "waifu2x" in unseen <= {"waifu2x", "camera", "classical"}
    assert not (family[manifest["split"].isin(["train", "validation"])] == "waifu2x").any()
    evaluation = json.loads((data / "08_reporting" / "evaluation" / "small_cnn.json").read_text())
    assert evaluation["threshold_human"] <= evaluation["threshold"] <= evaluation["threshold_ai"]
    assert "waifu2x" in {row["family"] for row in evaluation["families"] if row["split"] == "unseen"}
    headline = pd.read_csv(data / "08_reporting" / "unseen_families.csv")
    assert sorted(headline["family"].unique()) == ["realcugan", "simulator"]
    assert headline["roc_auc"].between(0, 1).all()
    metadata = onnx_metadata((data / "06_models" / "detector.onnx").read_bytes())
    assert float(metadata["threshold_human"]) <= float(metadata["threshold_ai"])
    assert json.loads(metadata["unseen_families"]) == ["waifu2x"]
    assert json.loads(metadata["calibration"])["method"] == "platt"
    export = json.loads((data / "08_reporting" / "export_report.json").read_text())
    assert export["registry"]["challenger"]["unseen_roc_auc"] is not None
    assert "Generator families it never saw" in (data / "08_reporting" / "model_card.md").read_text()
    assert sorted(headline["candidate"].unique()) == sorted(CANDIDATES), (
        "every candidate's folds side by side"
    )


@pytest.mark.slow
def test_the_shipped_model_attributes_to_the_families_it_was_trained_on(finished_run: Path) -> None:
    data = finished_run / "data"
    detector = (data / "06_models" / "detector.onnx").read_bytes()
    families = json.loads(onnx_metadata(detector)["families"])
    assert families[0] == "human" and "waifu2x" not in families, "the unseen family is no column"
    [probability, attribution] = onnx_predict(
        detector,
        np.zeros((2, *[int(onnx_metadata(detector)[k]) for k in ("input_height", "input_width")], 3)),
    )
    assert probability.shape == (2, 1) and attribution.shape == (2, len(families))
    for candidate in CANDIDATES:
        report = json.loads((data / "08_reporting" / "evaluation" / f"{candidate}.json").read_text())
        assert report["attribution"]["families"] == families
        assert 0 <= report["attribution"]["validation"]["accuracy"] <= 1
    for probe in ("efficientnet_lite0",):
        cached = pd.read_parquet(data / "04_feature" / "tile_features" / f"{probe}.parquet")
        manifest = pd.read_parquet(data / "03_primary" / "image_manifest.parquet")
        assert set(cached["path"]) == set(
            manifest.loc[manifest["split"].isin(["train", "validation"]), "path"]
        )


@pytest.mark.slow
def test_notebook_reads_the_results_through_the_catalog(finished_run: Path) -> None:
    notebook = nbformat.read(PROJECT_ROOT / "notebooks" / "explore_results.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(finished_run)}}
    ).execute()  # raises CellExecutionError with the failing cell and its traceback
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    printed = "".join(output.get("text", "") for output in outputs if output.output_type == "stream")
    selection = json.loads((finished_run / "data" / "08_reporting" / "model_selection.json").read_text())
    assert selection["candidate"] in CANDIDATES
    assert f"{selection['candidate']}: leave-one-family-out AUROC" in printed, "the selection's reason"
    assert "int8: F1" in printed


@pytest.mark.slow
def test_the_served_champion_takes_feedback_that_monitoring_reports_and_ingestion_trains_on(
    finished_run: Path, s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Package and serve the champion, answer images (one declared AI), take feedback, monitor, ingest it."""
    project = finished_run
    prefix = "feedback-e2e"
    for name, value in {**s3_server.credentials, "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    store = {"client_kwargs": {"endpoint_url": s3_server.endpoint_url}}
    (project / "conf" / "local" / "catalog.yml").write_text(
        yaml.safe_dump(
            {
                "feedback_records": {
                    "type": "ai_image_detection.datasets.PossiblyEmptyPartitionedDataset",
                    "path": f"s3://{s3_server.bucket}/{prefix}/records",
                    "dataset": "json.JSONDataset",
                    "filename_suffix": ".json",
                    "fs_args": store,
                },
                "feedback_images": {
                    "type": "ai_image_detection.datasets.PossiblyEmptyPartitionedDataset",
                    "path": f"s3://{s3_server.bucket}/{prefix}/images",
                    "dataset": "ai_image_detection.datasets.BytesDataset",
                    "fs_args": store,
                },
            }
        )
    )
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["package"])
    while mlflow.active_run() is not None:
        mlflow.end_run()

    manifest = pd.read_parquet(project / "data" / "03_primary" / "image_manifest.parquet")
    photos = [project / path for path in manifest.loc[manifest["split"] == "validation", "path"].head(6)]
    new_image = io.BytesIO()  # an image the data set does not hold yet (ingestion drops duplicates)
    Image.open(photos[0]).convert("RGB").save(new_image, format="JPEG", quality=90)
    environment = {
        "AIID_FEEDBACK_BUCKET": s3_server.bucket,
        "AIID_FEEDBACK_PREFIX": prefix,
        "AIID_FEEDBACK_ENDPOINT_URL": s3_server.endpoint_url,
        "AIID_PREDICTION_LOG_DIR": str(project / "logs" / "predictions"),
    }
    with serving("ai_image_detection.serving.service:Detector", project / "serve.log", environment) as url:
        answers = [
            httpx.post(f"{url}/predict", files={"image": (path.name, path.read_bytes())}, timeout=120).json()
            for path in photos
        ]
        declared = httpx.post(
            f"{url}/predict", files={"image": ("a1111.png", png_with_parameters())}, timeout=120
        ).json()
        upload = {"image": ("new.jpg", new_image.getvalue())}
        unseen = httpx.post(f"{url}/predict", files=upload, timeout=120).json()
        consented = httpx.post(
            f"{url}/feedback",
            data={"prediction_id": unseen["prediction_id"], "label": "ai", "consent": "true"},
            files=upload,
            timeout=60,
        )
        fields = {"prediction_id": answers[1]["prediction_id"], "label": "human", "note": "my photo"}
        numbers_only = httpx.post(  # multipart, as /feedback takes even without a file
            f"{url}/feedback", files={name: (None, value) for name, value in fields.items()}, timeout=60
        )
    assert consented.status_code == numbers_only.status_code == 200, (consented.text, numbers_only.text)
    assert all(answer["model_version"] == "1" for answer in answers)
    assert (declared["label"], declared["decided_by"]) == ("ai", "provenance")
    assert consented.json()["stored_image"] is True and numbers_only.json()["stored_image"] is False

    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["monitoring"])
    while mlflow.active_run() is not None:
        mlflow.end_run()
    reporting = project / "data" / "08_reporting" / "monitoring"
    drift = json.loads((reporting / "drift.json").read_text())
    assert drift["predictions"]["count"] == len(photos) + 2
    assert (
        0 <= drift["drift"]["probability_ai"]["psi"]
        and 0 <= drift["drift"]["probability_ai"]["ks_pvalue"] <= 1
    )
    assert (drift["feedback"]["total"], drift["feedback"]["with_consent"]) == (2, 1)
    assert drift["flag"]["status"] in {"ok", "watch", "retrain"}
    assert "drift" in (reporting / "report.html").read_text().lower()

    quick = {"ingestion": {"unseen_families": ["waifu2x"], "feedback": {"enabled": True}}}
    with KedroSession.create(project_path=project, runtime_params=quick) as session:
        session.run(pipeline_names=["ingestion"])
    retrained_on = pd.read_parquet(project / "data" / "03_primary" / "image_manifest.parquet")
    added = retrained_on[retrained_on["generator"].str.startswith("feedback")]
    assert (len(added), set(added["split"]), list(added["label"])) == (1, {"train"}, [1])
    unchanged = retrained_on[~retrained_on["generator"].str.startswith("feedback")]
    key = ["path", "split"]
    assert (
        unchanged[key]
        .sort_values("path")
        .reset_index(drop=True)
        .equals(manifest[key].sort_values("path").reset_index(drop=True))
    ), "feedback goes to train only; no other image changes split"
