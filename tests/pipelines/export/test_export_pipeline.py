"""The export pipeline's gate, int8 and registry nodes run together, as ``kedro run`` wires them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from mlflow.tracking import MlflowClient
from PIL import Image

from ai_image_detection.datasets import BytesDataset
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.onnx_export import ParityError
from ai_image_detection.pipelines.export.nodes import ExportParams, export_candidates, register_detector
from ai_image_detection.pipelines.export.pipeline import create_pipeline
from ai_image_detection.session_config import candidate_names
from tests.pipelines.evaluation.conftest import published_generated
from tests.pipelines.export.test_export_nodes import PARAMS

GATED = create_pipeline().only_nodes("verify_parity_node", "quantize_detector_node", "register_detector_node")
NAMES = candidate_names()
SELECTED = NAMES[0]
CALIBRATION = {"method": "platt", "slope": 1.5, "intercept": -0.2, "ece_before": 0.2, "ece_after": 0.05}
ROBUSTNESS = {"blur_sigma_1": {"kind": "blur", "sigma": 1.0}, "jpeg_q50": {"kind": "jpeg", "quality": 50}}
PREVIOUS = {"detector.onnx": b"the previous float32 detector", "detector.int8.onnx": b"the previous int8 one"}


def params(*, ship_int8: bool, max_f1_drop: float = 1.0) -> ExportParams:
    """The node tests' export parameters, with a budget for this project's candidates and the int8 choice."""
    quantization = {"calibration_images": 6, "max_f1_drop": max_f1_drop, "ship_int8": ship_int8}
    return PARAMS.model_copy(
        update={
            "latency_budget_ms": dict.fromkeys(NAMES, 100.0),
            "quantization": PARAMS.quantization.model_copy(update=quantization),
            "selection": PARAMS.selection.model_copy(update={"reshared": ["blur_sigma_1"]}),
        }
    )


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> tuple[keras.Model, dict[str, bytes], pd.DataFrame]:
    """A tiny calibrated candidate, its export, and a manifest of real image files."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rows = []
    for index, (split, generator) in enumerate(
        [("train", "alpha/1"), ("train", "camera/original")] * 3
        + [("validation", "alpha/1"), ("validation", "camera/original")] * 3
        + [("unseen", "gamma/1"), ("unseen", "camera/original")] * 2
    ):
        path = folder / f"{index}.png"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        rows.append({"path": str(path), "split": split, "generator": generator, "label": int(index % 2 == 0)})
    manifest = pd.DataFrame(rows)
    table = pd.DataFrame(
        {
            "candidate": [SELECTED],
            "threshold": [0.5],
            "threshold_human": [0.4],
            "threshold_ai": [0.6],
            "max_tiles": [1],
        }
    )
    keras.utils.set_random_seed(0)
    model = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4]))
    onnx = export_candidates(
        params(ship_int8=False), table, "md5abc", manifest, model, CALIBRATION, names=[SELECTED]
    )
    return model, onnx, manifest


def run_gated(
    folder: Path,
    export: ExportParams,
    candidate: tuple[keras.Model, dict[str, bytes], pd.DataFrame],
    calibration: dict[str, Any],
) -> dict[str, Any]:
    """The export report of the real gate, int8 and registry nodes, with the ONNX files in ``folder``."""
    model, onnx, manifest = candidate
    for name, content in PREVIOUS.items():
        (folder / name).write_bytes(content)
    catalog = DataCatalog(
        datasets={
            "params:export": MemoryDataset(export),
            "candidate_onnx": MemoryDataset(onnx),
            "model_selection": MemoryDataset(
                {"candidate": SELECTED, "threshold": 0.5, "reason": "the only one"}
            ),
            "image_manifest@pandas": MemoryDataset(manifest),
            **{f"{name}.trained_model": MemoryDataset(model, copy_mode="assign") for name in NAMES},
            **{f"{name}.calibration": MemoryDataset(calibration) for name in NAMES},
            "detector_onnx": BytesDataset(str(folder / "detector.onnx")),
            "detector_int8_onnx": BytesDataset(str(folder / "detector.int8.onnx")),
            "wild_generated_images": MemoryDataset([]),
            "params:evaluation.wild_generated_human_resave": MemoryDataset({"kind": "webp", "quality": 80}),
            "params:evaluation.robustness": MemoryDataset(ROBUSTNESS),
        }
    )
    outputs = SequentialRunner().run(GATED, catalog)
    return dict(outputs["export_report"].load())


def test_a_failed_parity_gate_stops_the_run_and_keeps_the_previous_models(
    tmp_path: Path, candidate: tuple[keras.Model, dict[str, bytes], pd.DataFrame], tracking: MlflowClient
) -> None:
    not_what_was_exported = {**CALIBRATION, "slope": 5.0}
    with pytest.raises(ParityError, match="ONNX and Keras disagree on probability_ai"):
        run_gated(tmp_path, params(ship_int8=True), candidate, not_what_was_exported)
    for name, content in PREVIOUS.items():
        assert (tmp_path / name).read_bytes() == content, f"{name} is untouched"
    assert tracking.search_registered_models() == [], "nothing is registered"


def test_ship_int8_registers_the_int8_model_after_the_gate(
    tmp_path: Path, candidate: tuple[keras.Model, dict[str, bytes], pd.DataFrame], tracking: MlflowClient
) -> None:
    report = run_gated(tmp_path, params(ship_int8=True), candidate, CALIBRATION)
    assert report["shipped_precision"] == "int8", "any F1 drop is accepted here"
    assert (tmp_path / "detector.onnx").read_bytes() == candidate[1][SELECTED], "the gated export is written"
    champion = mlflow.onnx.load_model("models:/ai-image-detector@champion")
    metadata = {prop.key: prop.value for prop in champion.metadata_props}
    assert metadata["quantization"].startswith("int8"), "the champion is the int8 variant"
    assert metadata["candidate"] == SELECTED


def test_ship_int8_beyond_the_accepted_f1_drop_registers_float32(
    candidate: tuple[keras.Model, dict[str, bytes], pd.DataFrame], tracking: MlflowClient
) -> None:
    _, onnx, manifest = candidate
    lost_two_points = {"within_f1_tolerance": False, "f1_change_points": -2.0}
    report = register_detector(
        params(ship_int8=True, max_f1_drop=0.01),
        onnx[SELECTED],
        b"an int8 model that must not ship",
        lost_two_points,
        manifest,
        {"candidate": SELECTED},
        published_generated(),
        {"kind": "webp", "quality": 80},
        ROBUSTNESS,
    )
    assert report["shipped_precision"] == "fp32"
    assert report["registry"]["challenger"]["published_roc_auc"] is not None, "judged on them too"
    assert report["registry"]["challenger"]["reshared_roc_auc"] is not None, "and on the re-shared images"
    champion = mlflow.onnx.load_model("models:/ai-image-detector@champion")
    assert "quantization" not in {prop.key for prop in champion.metadata_props}


def test_a_champion_rule_naming_an_unknown_degradation_is_a_clear_error(
    candidate: tuple[keras.Model, dict[str, bytes], pd.DataFrame], tracking: MlflowClient
) -> None:
    _, onnx, manifest = candidate
    export = params(ship_int8=False)
    export = export.model_copy(
        update={"selection": export.selection.model_copy(update={"reshared": ["blur_sigma_1", "sepia"]})}
    )
    with pytest.raises(ValueError, match=r"names \['sepia'\], not among evaluation.robustness"):
        register_detector(
            export,
            onnx[SELECTED],
            b"int8",
            {"within_f1_tolerance": True},
            manifest,
            {"candidate": SELECTED},
            [],
            {"kind": "webp", "quality": 80},
            ROBUSTNESS,
        )
    assert tracking.search_registered_models() == [], "nothing is registered"
