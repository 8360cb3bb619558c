"""The ``feedback`` source in the ``ingestion`` pipeline: off it never contacts S3, on it reads the store.

The store is the real local SeaweedFS of the ``s3_server`` fixture, filled with boto3 the way the
service fills it, and read through the project's own catalog entries (pointed at that server).
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.framework.project import configure_project
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog, DatasetError, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset
from PIL import Image
from pydantic import ValidationError

from ai_image_detection.pipelines.ingestion import create_pipeline
from ai_image_detection.pipelines.ingestion.pipeline import feedback_enabled
from ai_image_detection.session_config import SESSION_CONFIG
from tests.conftest import PROJECT_ROOT, LocalS3, scratch_project
from tests.pipelines.ingestion.test_ingestion_pipeline import _make_raw_dir, _params_from_conf

STORE_DATASETS = {"feedback_records", "feedback_images", "feedback_image_files"}


def _catalog_entries(endpoint_url: str, prefix: str, image_dir: Path) -> dict[str, Any]:
    """The project's feedback catalog entries, on ``endpoint_url`` under ``prefix`` (not ``feedback``)."""
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text(encoding="utf-8"))
    entries = {name: dict(catalog[name]) for name in STORE_DATASETS}
    for name in ("feedback_records", "feedback_images"):
        assert entries[name]["path"].startswith("s3://ai-image-detection/feedback/")
        entries[name]["path"] = entries[name]["path"].replace("/feedback/", f"/{prefix}/")
        entries[name]["fs_args"] = {"client_kwargs": {"endpoint_url": endpoint_url}}
    entries["feedback_image_files"]["path"] = str(image_dir)
    return entries


def _image(seed: int, fmt: str) -> bytes:
    """A small image of seeded noise."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def test_the_catalog_and_the_parameters_name_the_same_local_folder() -> None:
    catalog = yaml.safe_load((PROJECT_ROOT / "conf/base/catalog.yml").read_text(encoding="utf-8"))
    params = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingestion.yml").read_text(encoding="utf-8"))

    assert catalog["feedback_image_files"]["path"] == params["ingestion"]["feedback"]["image_dir"]
    assert params["ingestion"]["feedback"]["enabled"] is False, "make run needs no S3 server"
    for name in ("feedback_records", "feedback_images"):
        assert "credentials" not in catalog[name], "a missing conf/local entry would break every run"


def test_off_the_pipeline_has_no_node_that_reads_the_store() -> None:
    assert not create_pipeline(feedback=False).datasets() & STORE_DATASETS
    assert create_pipeline(feedback=True).datasets() >= STORE_DATASETS


def test_the_switch_comes_from_the_session_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    def configured(ingestion: dict[str, Any]) -> bool:
        monkeypatch.setattr(SESSION_CONFIG, "_loader", {"parameters": {"ingestion": ingestion}})
        return feedback_enabled()

    assert configured({"feedback": {"enabled": True}}) is True
    assert configured({"feedback": {"enabled": False}}) is False
    assert configured({"raw_dir": "mine"}) is False, "an environment's ingestion block without feedback"
    with pytest.raises(ValidationError, match="enable"):
        configured({"feedback": {"enable": True}})


# ---------- the real store ----------


@dataclass(frozen=True)
class Run:
    """The manifests and reports of one raw dir ingested with and without the feedback source."""

    manifest: pd.DataFrame
    report: dict[str, Any]
    without: pd.DataFrame
    image_dir: Path
    raw: Path


def _fill_store(server: LocalS3, prefix: str, raw: Path) -> None:
    """Feedback as the service stores it: records always, image objects only with consent."""
    jpeg, png, copy = _image(1, "JPEG"), _image(2, "PNG"), (raw / "train_data/img01.jpg").read_bytes()
    client = server.client()

    def put(feedback_id: str, label: str, consent: bool, data: bytes | None, stored: bytes | None) -> None:
        key = f"{prefix}/images/{feedback_id}.jpg" if data is not None else None
        body = {
            "feedback_id": feedback_id,
            "prediction_id": f"p-{feedback_id}",
            "received_at": "2026-12-01T09:30:00Z",
            "claimed_label": label,
            "note": None,
            "consent": consent,
            "image_key": key,
            "image_sha256": hashlib.sha256(data).hexdigest() if data is not None else None,
            "image_format": "JPEG" if data is not None else None,
            "prediction": {"probability_ai": 0.3, "label": "human", "decided_by": "pixels"},
        }
        client.put_object(
            Bucket=server.bucket, Key=f"{prefix}/records/2026-12-01/{feedback_id}.json", Body=json.dumps(body)
        )
        if key is not None and stored is not None:
            client.put_object(Bucket=server.bucket, Key=key, Body=stored)

    put("f-ai", "ai", True, jpeg, jpeg)
    put("f-human", "human", True, png, png)
    put("f-private", "ai", False, None, None)
    put("f-gone", "ai", True, b"never uploaded", None)
    put("f-swapped", "human", True, jpeg, png)
    put("f-copy", "human", True, copy, copy)  # img01.jpg is labelled AI in the raw set
    put("f-text", "ai", True, b"not an image\n", b"not an image\n")
    client.put_object(
        Bucket=server.bucket, Key=f"{prefix}/records/2026-12-01/f-torn.json", Body=b'{"feedback_id": '
    )


@pytest.fixture(scope="module")
def store_run(s3_server: LocalS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Ingest a tiny raw dir plus the feedback in the real store, and the raw dir alone."""
    root = tmp_path_factory.mktemp("feedback-store")
    _make_raw_dir(root / "raw")
    prefix = f"test-{uuid.uuid4().hex[:8]}/feedback"
    _fill_store(s3_server, prefix, root / "raw")
    image_dir = root / "feedback-images"
    (image_dir / "f-withdrawn.jpg").parent.mkdir(parents=True)
    (image_dir / "f-withdrawn.jpg").write_bytes(_image(3, "JPEG"))  # brought in by an earlier run
    params = _params_from_conf(root)
    params = params.model_copy(
        update={"feedback": params.feedback.model_copy(update={"image_dir": str(image_dir)})}
    )
    results = {}
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name, value in s3_server.credentials.items():
            monkeypatch.setenv(name, value)
        for feedback in (True, False):
            catalog = DataCatalog.from_config(_catalog_entries(s3_server.endpoint_url, prefix, image_dir))
            catalog["params:ingestion"] = MemoryDataset(params)
            catalog["params:ingestion.feedback"] = MemoryDataset(params.feedback)
            catalog["image_manifest@pandas"] = ParquetDataset(
                filepath=str(root / f"manifest-{feedback}.parquet")
            )
            catalog["ingestion_report"] = JSONDataset(filepath=str(root / f"report-{feedback}.json"))
            SequentialRunner().run(create_pipeline(feedback=feedback), catalog)
            results[feedback] = (catalog.load("image_manifest@pandas"), catalog.load("ingestion_report"))
    yield Run(results[True][0], results[True][1], results[False][0], image_dir, root / "raw")


@pytest.mark.slow
def test_consented_images_join_the_train_split_with_family_feedback(store_run: Run) -> None:
    manifest = store_run.manifest
    feedback = manifest[manifest["group"].str.startswith("feedback:")]

    assert sorted(feedback["group"]) == ["feedback:f-ai", "feedback:f-human"]
    assert set(feedback["split"]) == {"train"}
    assert set(feedback["generator"]) == {"feedback/unknown"}
    assert feedback.set_index("group")["label"].to_dict() == {"feedback:f-ai": 1, "feedback:f-human": 0}
    assert sorted(Path(p).name for p in feedback["source_path"]) == ["f-ai.jpg", "f-human.jpg"]
    fetched = ["f-ai.jpg", "f-copy.jpg", "f-human.jpg", "f-text.jpg"]  # validated and de-duplicated later
    assert sorted(p.name for p in store_run.image_dir.iterdir()) == fetched, (
        "an earlier, withdrawn one is gone"
    )
    assert (store_run.image_dir / "f-human.jpg").read_bytes() == _image(2, "PNG"), "the bytes unchanged"


@pytest.mark.slow
def test_the_other_splits_are_exactly_those_of_the_raw_data(store_run: Run) -> None:
    manifest = store_run.manifest
    raw_rows = manifest[~manifest["group"].str.startswith("feedback:")].reset_index(drop=True)

    pd.testing.assert_frame_equal(raw_rows, store_run.without)
    assert {"validation", "test"} <= set(raw_rows["split"])


@pytest.mark.slow
def test_the_report_accounts_for_every_record(store_run: Run) -> None:
    report = store_run.report

    assert report["feedback"] == {
        "enabled": True,
        "records": 8,
        "with_consent": 6,
        "with_image": 6,
        "ingested": 2,
        "labels": {"ai": 1, "human": 1},
        "splits": {"train": 2},
        "skipped": {
            "bad_record": 1,
            "duplicate_conflicting_label": 1,
            "missing_object": 1,
            "no_consent": 1,
            "not_an_image": 1,
            "sha256_mismatch": 1,
        },
    }
    problems = {p["path"]: p["reason"] for p in report["problems"]}
    assert problems[str(store_run.image_dir / "f-copy.jpg")] == "duplicate_conflicting_label"
    assert problems[str(store_run.image_dir / "f-text.jpg")] == "not_an_image"
    assert {reason for path, reason in problems.items() if path.startswith("feedback_")} == {
        "bad_record",
        "missing_object",
        "sha256_mismatch",
    }
    assert report["families"]["train"]["feedback"] == 2
    assert report["summary"]["ingested"] == len(store_run.manifest)


@pytest.mark.slow
def test_an_empty_store_brings_nothing_and_is_no_error(
    s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.credentials.items():
        monkeypatch.setenv(name, value)
    entries = _catalog_entries(
        s3_server.endpoint_url, f"empty-{uuid.uuid4().hex[:8]}/feedback", Path("unused")
    )
    catalog = DataCatalog.from_config(entries)

    assert catalog.load("feedback_records") == {}
    assert catalog.load("feedback_images") == {}
    entries["feedback_records"]["path"] = "s3://no-such-bucket/feedback/records"
    with pytest.raises(DatasetError, match="bucket does not exist"):
        DataCatalog.from_config(entries).load("feedback_records")  # empty, but not that empty


# ---------- a whole session: no S3 when off, a clear error when on and unreachable ----------


class ConnectionCounter:
    """A TCP listener on loopback that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.port = self._socket.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._count, daemon=True)
        self._thread.start()

    def _count(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()

    def close(self) -> None:
        """Stop listening."""
        self._stop.set()
        self._thread.join()
        self._socket.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The project's configuration in a scratch folder with a tiny raw dir, the working directory."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        root = scratch_project(tmp_path_factory.mktemp("project"), monkeypatch)
        _make_raw_dir(root / "raw")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
        yield root
    mlflow.set_tracking_uri(None)  # kedro-mlflow pointed MLflow at the scratch project's store
    mlflow.set_registry_uri(None)
    configure_project("ai_image_detection")  # forget the pipelines built from the scratch configuration


def _point_the_store_at(project: Path, endpoint_url: str) -> None:
    """conf/local/catalog.yml: the store's entries on another endpoint (as for AWS, without one)."""
    catalog = yaml.safe_load((project / "conf/base/catalog.yml").read_text(encoding="utf-8"))
    local = {
        name: catalog[name] | {"fs_args": {"client_kwargs": {"endpoint_url": endpoint_url}}}
        for name in ("feedback_records", "feedback_images")
    }
    (project / "conf/local/catalog.yml").write_text(yaml.safe_dump(local), encoding="utf-8")


def _run_ingestion(project: Path, **params: Any) -> None:
    """``kedro run --pipelines ingestion --params ...`` on the tiny raw dir."""
    runtime = {
        "ingestion": {"raw_dir": "raw", "workers": 1, "validation_fraction": 0.25, "unseen_families": []}
        | params
    }
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime) as session:
        session.run(pipeline_names=["ingestion"])


@pytest.mark.slow
def test_off_a_run_never_contacts_the_store(project: Path) -> None:
    counter = ConnectionCounter()
    _point_the_store_at(project, f"http://127.0.0.1:{counter.port}")
    try:
        _run_ingestion(project)
    finally:
        counter.close()

    assert counter.connections == 0
    report = json.loads((project / "data/08_reporting/ingestion_report.json").read_text(encoding="utf-8"))
    assert report["feedback"] == {"enabled": False}
    assert report["summary"]["ingested"] > 0


@pytest.mark.slow
def test_on_an_unreachable_store_stops_the_run_and_says_where(project: Path) -> None:
    counter = ConnectionCounter()
    counter.close()  # nothing listens on that port any more
    _point_the_store_at(project, f"http://127.0.0.1:{counter.port}")
    manifest = project / "data/03_primary/image_manifest.parquet"
    manifest.unlink(missing_ok=True)

    with pytest.raises(
        Exception,
        match=rf"feedback_records.*\n?.*Could not connect to the endpoint URL: \"http://127\.0\.0\.1:{counter.port}/",
    ):
        _run_ingestion(project, feedback={"enabled": True})

    assert not manifest.exists()
