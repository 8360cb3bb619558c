"""Packaging imports the registry's champion into the BentoML store, once per champion."""

from __future__ import annotations

import bentoml
import mlflow
import mlflow.onnx
import onnx
import pytest
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper

from ai_image_detection.onnx_runtime import onnx_metadata, onnx_session
from ai_image_detection.pipelines.package.nodes import MODEL_FILE, PackageParams, import_champion


def constant_detector(probability: float) -> onnx.ModelProto:
    """A contract-shaped ONNX model answering ``probability`` for every image."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
            helper.make_node("Add", ["nothing", "answer"], ["p"]),
            helper.make_node("Unsqueeze", ["p", "axis"], ["probability_ai"]),
        ],
        "constant",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 8, 8, 3])],
        [helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, [None, 1])],
        [
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("answer", TensorProto.FLOAT, [], [probability]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"input_height": "8", "input_width": "8", "threshold": "0.5"})
    return model


def register(client: MlflowClient, probability: float) -> str:
    with mlflow.start_run():
        info = mlflow.onnx.log_model(
            constant_detector(probability), name="detector", registered_model_name="det"
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias("det", "champion", version)
    return version


def test_the_champion_is_imported_once_and_a_new_champion_again(tracking: MlflowClient) -> None:
    params = PackageParams(
        registered_model_name="det", champion_alias="champion", bentoml_model_name="pkg-test"
    )
    register(tracking, 0.25)
    first = import_champion(params)
    assert first["imported"] and first["registered_version"] == "1"
    stored = bentoml.models.get("pkg-test:latest")
    assert str(stored.tag) == first["bentoml_tag"]
    assert stored.info.metadata["threshold"] == "0.5"
    assert stored.info.metadata["registered_version"] == "1"
    assert onnx_metadata(onnx_session(stored.path_of(MODEL_FILE)))["input_height"] == "8"

    again = import_champion(params)
    assert not again["imported"] and again["bentoml_tag"] == first["bentoml_tag"]

    register(tracking, 0.75)
    second = import_champion(params)
    assert second["imported"] and second["registered_version"] == "2"
    assert str(bentoml.models.get("pkg-test:latest").tag) == second["bentoml_tag"] != first["bentoml_tag"]


def test_no_champion_is_a_clear_error(tracking: MlflowClient) -> None:
    params = PackageParams(registered_model_name="absent", champion_alias="champion", bentoml_model_name="x")
    with pytest.raises(ValueError, match="no 'champion' in the MLflow registry for 'absent'"):
        import_champion(params)
