"""The monitoring reference the export logs with the version it registers, and how monitoring finds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml
from onnx import TensorProto, helper
from PIL import Image

from ai_image_detection.pipelines.export.monitoring_reference import (
    REFERENCE_COLUMNS,
    build_monitoring_reference,
)
from ai_image_detection.pipelines.export.pipeline import create_pipeline
from ai_image_detection.pipelines.monitoring.nodes import CATEGORICAL_INPUTS, NUMERIC_INPUTS
from ai_image_detection.scoring import file_tiles
from ai_image_detection.tiling import crop_luma

PROJECT_ROOT = Path(__file__).resolve().parents[3]
SIZE = 32


def detector(metadata: dict[str, str]) -> bytes:
    """A stand-in ONNX detector (identity graph) carrying the contract's metadata."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, SIZE, SIZE, 3])
    output = helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, [None, SIZE, SIZE, 3])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probability_ai"])], "g", [image], [output]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, metadata)
    return bytes(model.SerializeToString())


@pytest.fixture
def scored(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A manifest and the evaluation's predictions: two validation images (one re-encoded), one train."""
    rng = np.random.default_rng(0)
    rows = []
    for index, (split, shape) in enumerate(
        [("validation", (40, 40)), ("validation", (80, 100)), ("train", (40, 40))]
    ):
        path = tmp_path / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(path)
        source = tmp_path / f"{index}-original.jpg"
        if index == 1:  # the manifest points at a normalised copy; the upload would be the original file
            Image.open(path).save(source, quality=80)
        rows.append(
            {
                "path": str(path),
                "source_path": str(source if index == 1 else path),
                "label": index % 2,
                "split": split,
                "generator": "alpha/1" if index % 2 else "camera/original",
                "pair": index,
                "width": shape[1],
                "height": shape[0],
                "format": "JPEG" if index == 1 else "PNG",
                "probability_ai": 0.2 + 0.3 * index,
            }
        )
    table = pd.DataFrame(rows)
    manifest = table.drop(columns=["probability_ai"])
    predictions = table[["path", "source_path", "label", "split", "generator", "pair", "probability_ai"]]
    return manifest, predictions


EXPORT_REPORT: dict[str, Any] = {
    "candidate": "chosen",
    "shipped_precision": "fp32",
    "registry": {"registered_model": "ai-image-detector", "version": "7"},
}
METADATA = {
    "input_height": str(SIZE),
    "max_tiles": "9",
    "threshold": "0.5",
    "threshold_human": "0.3",
    "threshold_ai": "0.8",
}


def test_the_reference_holds_each_validation_image_as_the_service_logs_it(
    scored: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    manifest, predictions = scored
    other = predictions.assign(probability_ai=0.99)

    reference = build_monitoring_reference(
        EXPORT_REPORT, detector(METADATA), manifest, other, predictions, names=["other", "chosen"]
    )

    assert list(reference.columns) == REFERENCE_COLUMNS
    assert reference["probability_ai"].tolist() == pytest.approx([0.2, 0.5]), "the chosen candidate's scores"
    assert reference[["width", "height", "format"]].values.tolist() == [[40, 40, "PNG"], [100, 80, "JPEG"]]
    sources = manifest.loc[manifest["split"] == "validation", "source_path"]
    assert reference["bytes"].tolist() == [Path(path).stat().st_size for path in sources], "the original file"
    paths = manifest.loc[manifest["split"] == "validation", "path"]
    tiles = [file_tiles(path, SIZE, 9) for path in paths]
    assert reference["tiles"].tolist() == [len(t) for t in tiles] == [1, 3 * 3]
    expected = np.array([crop_luma(t) for t in tiles])
    np.testing.assert_allclose(reference[["mean_luma", "std_luma"]].to_numpy(dtype=float), expected)
    facts = reference[["model_name", "model_version", "candidate", "threshold_human", "threshold_ai"]]
    assert facts.drop_duplicates().values.tolist() == [["ai-image-detector", "7", "chosen", 0.3, 0.8]]


def test_luma_is_the_bt601_weighting_of_every_pixel() -> None:
    grey = np.full((2, 4, 4, 3), 100, dtype=np.uint8)
    assert crop_luma(grey) == pytest.approx((100.0, 0.0))
    red_and_black = np.zeros((1, 2, 1, 3), dtype=np.uint8)
    red_and_black[0, 0, 0, 0] = 255
    mean, std = crop_luma(red_and_black)
    assert mean == pytest.approx(0.299 * 255 / 2, rel=1e-5)
    assert std == pytest.approx(0.299 * 255 / 2, rel=1e-5)


def test_monitoring_reads_what_export_logs() -> None:
    assert set(NUMERIC_INPUTS) | set(CATEGORICAL_INPUTS) | {"probability_ai"} <= set(REFERENCE_COLUMNS)
    node = next(node for node in create_pipeline().nodes if node.name == "build_monitoring_reference_node")
    assert node.outputs == ["monitoring_reference"]
    catalog = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text(encoding="utf-8"))
    written = catalog["monitoring_reference"]
    logged_as = f"{written['artifact_path']}/{Path(written['dataset']['filepath']).name}"
    assert catalog["served_model_reference"]["artifact_path"] == logged_as
    assert onnx.load_from_string(detector(METADATA)).metadata_props, "the stand-in carries metadata"
