"""Sliced-pipeline test of ``ingestion``: a tiny Kaggle-layout raw dir through ``SequentialRunner``."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from kedro_datasets.json import JSONDataset
from kedro_datasets.pandas import ParquetDataset
from PIL import Image

from ai_image_detection.pipelines.ingestion import create_pipeline
from ai_image_detection.pipelines.ingestion.nodes import IngestionParams

PROJECT_ROOT = Path(__file__).resolve().parents[3]
MANIFEST_DTYPES = {
    "path": "object",
    "source_path": "object",
    "label": "Int8",
    "split": "object",
    "group": "object",
    "pair": "object",
    "generator": "object",
    "width": "int32",
    "height": "int32",
    "format": "object",
    "mode": "object",
    "sha256": "object",
}
GOOD_TRAIN = [f"train_data/img{i:02d}.jpg" for i in range(10)] + ["train_data/rgba.png"]
GOOD_TEST = ["test_data_v2/t0.jpg", "test_data_v2/t1.jpg", "test_data_v2/t2.png"]
EXPECTED_PROBLEMS = {
    "train_data/broken.jpg": "corrupt",
    "train_data/empty.jpg": "empty",
    "train_data/copy.jpg": "duplicate",
    "train_data/gone.jpg": "missing",
    "train_data/odd.jpg": "bad_label",
    "train_data/stray.jpg": "unlisted",
    "test_data_v2/notes.jpg": "not_an_image",
}


@dataclass(frozen=True)
class Ingested:
    """The outputs of one pipeline run and where its inputs were."""

    raw: Path
    params: IngestionParams
    manifest: pd.DataFrame
    report: dict[str, Any]
    report_file: Path


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None, **save_args: Any) -> bytes:
    """The bytes of ``pixels`` saved as ``fmt`` (optionally converted to ``mode`` first)."""
    image = Image.fromarray(pixels)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def _make_raw_dir(raw: Path) -> None:
    """A Kaggle-layout raw dir with good images, awkward ones and every kind of problem."""
    rng = np.random.default_rng(20)

    def noise(channels: int = 3) -> np.ndarray:
        return rng.integers(0, 256, size=(40, 48, channels), dtype=np.uint8)

    jpeg = _encode(noise(), "JPEG", quality=90)
    files = {name: _encode(noise(), "JPEG", quality=90) for name in GOOD_TRAIN[1:-1]}
    files |= {
        GOOD_TRAIN[0]: jpeg,
        "train_data/rgba.png": _encode(noise(4), "PNG"),
        "train_data/broken.jpg": jpeg[: len(jpeg) // 2],
        "train_data/empty.jpg": b"",
        "train_data/copy.jpg": jpeg,
        "train_data/odd.jpg": _encode(noise(), "JPEG"),
        "train_data/stray.jpg": _encode(noise(), "JPEG"),
        "test_data_v2/t0.jpg": _encode(noise(), "JPEG"),
        "test_data_v2/t1.jpg": _encode(noise(), "JPEG", mode="CMYK"),
        "test_data_v2/t2.png": _encode(noise(), "PNG"),
        "test_data_v2/notes.jpg": b"no pixels here\n",
    }
    for name, data in files.items():
        (raw / name).parent.mkdir(parents=True, exist_ok=True)
        (raw / name).write_bytes(data)
    # copy.jpg is row 12: label 0 like img00.jpg, the file it copies (a plain duplicate).
    listed = [*GOOD_TRAIN, "train_data/broken.jpg", "train_data/copy.jpg", "train_data/empty.jpg"]
    rows = [{"file_name": name, "label": str(i % 2)} for i, name in enumerate(listed)]
    rows += [
        {"file_name": "train_data/gone.jpg", "label": "1"},
        {"file_name": "train_data/odd.jpg", "label": "x"},
    ]
    pd.DataFrame(rows).to_csv(raw / "train.csv", index=False)
    pd.DataFrame({"id": [*GOOD_TEST, "test_data_v2/notes.jpg"]}).to_csv(raw / "test.csv", index=False)


def _params_from_conf(root: Path) -> IngestionParams:
    """The project's ``parameters_ingestion.yml``, pointed at ``root`` and made small."""
    conf = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_ingestion.yml").read_text(encoding="utf-8"))
    overrides = {
        "raw_dir": str(root / "raw"),
        "normalised_dir": str(root / "normalised"),
        "workers": 1,
        "validation_fraction": 0.25,
        "unseen_families": [],  # this data names no generator families
    }
    return IngestionParams.model_validate({**conf["ingestion"], **overrides})


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Ingested:
    """Run the whole ``ingestion`` pipeline once over a tiny raw dir."""
    root = tmp_path_factory.mktemp("ingestion")
    _make_raw_dir(root / "raw")
    params = _params_from_conf(root)
    catalog = DataCatalog(
        {
            "params:ingestion": MemoryDataset(params),
            "image_manifest@pandas": ParquetDataset(filepath=str(root / "image_manifest.parquet")),
            "ingestion_report": JSONDataset(filepath=str(root / "ingestion_report.json")),
        }
    )

    SequentialRunner().run(create_pipeline(feedback=False), catalog)  # not as conf/local may say

    return Ingested(
        raw=root / "raw",
        params=params,
        manifest=catalog.load("image_manifest@pandas"),
        report=catalog.load("ingestion_report"),
        report_file=root / "ingestion_report.json",
    )


def test_manifest_has_the_documented_columns_and_dtypes(ingested: Ingested) -> None:
    manifest = ingested.manifest

    assert manifest.dtypes.astype(str).to_dict() == MANIFEST_DTYPES
    assert list(manifest.columns) == list(MANIFEST_DTYPES)
    for column in ("path", "source_path", "split", "group", "format", "mode", "sha256"):
        assert manifest[column].map(type).eq(str).all(), column


def test_manifest_holds_exactly_the_good_files(ingested: Ingested) -> None:
    manifest, raw = ingested.manifest, ingested.raw

    assert sorted(manifest["source_path"]) == sorted(str(raw / n) for n in [*GOOD_TRAIN, *GOOD_TEST])
    assert manifest["sha256"].is_unique
    assert (manifest["width"] == 48).all()
    assert (manifest["height"] == 40).all()
    copies = manifest[manifest["path"] != manifest["source_path"]]
    assert sorted(copies["source_path"]) == sorted(
        str(raw / n) for n in ["train_data/rgba.png", "test_data_v2/t1.jpg"]
    )
    normalised_dir = Path(ingested.params.normalised_dir)
    assert sorted(copies["path"]) == sorted(str(normalised_dir / f"{sha}.png") for sha in copies["sha256"])
    assert all(Path(path).is_file() for path in manifest["path"])


def test_manifest_splits_by_group_and_keeps_the_test_part(ingested: Ingested) -> None:
    manifest, raw = ingested.manifest, ingested.raw

    test = manifest[manifest["split"] == "test"]
    assert sorted(test["source_path"]) == sorted(str(raw / n) for n in GOOD_TEST)
    assert test["label"].isna().all()
    labelled = manifest[manifest["split"] != "test"]
    assert set(labelled["split"]) == {"train", "validation"}
    assert labelled["label"].notna().all()
    assert (labelled.groupby("group")["split"].nunique() == 1).all()


def test_report_lists_every_file_not_ingested_with_its_reason(ingested: Ingested) -> None:
    report, raw = ingested.report, ingested.raw

    problems = {problem["path"]: problem["reason"] for problem in report["problems"]}
    assert problems == {str(raw / name): reason for name, reason in EXPECTED_PROBLEMS.items()}
    assert all(set(p) == {"path", "reason", "message"} and p["message"] for p in report["problems"])
    assert report["summary"] == {
        "ingested": len(ingested.manifest),
        "not_ingested": len(EXPECTED_PROBLEMS),
        "normalised_copies": 2,
        "groups": ingested.manifest["group"].nunique(),
    }
    assert report["reasons"] == pd.Series(EXPECTED_PROBLEMS).value_counts().to_dict()
    assert report["splits"]["test"] == {"<NA>": len(GOOD_TEST)}
    assert json.loads(ingested.report_file.read_text(encoding="utf-8")) == report
