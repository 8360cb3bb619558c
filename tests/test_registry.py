"""The champion alias moves on an improvement and never on a regression."""

from __future__ import annotations

from collections.abc import Callable

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper

from ai_image_detection.registry import register_and_promote

NAME = "ai-image-detector"


def brightness_detector(sign: float, threshold: float = 0.5, size: int = 8) -> bytes:
    """An ONNX detector of the contract's shape: P(AI) = sigmoid(sign * (mean pixel - 128) / 8)."""
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Sub", ["mean", "centre"], ["centred"]),
        helper.make_node("Mul", ["centred", "scale"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["p"]),
        helper.make_node("Unsqueeze", ["p", "axis"], ["probability_ai"]),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, size, size, 3])],
        [helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, [None, 1])],
        [
            helper.make_tensor("centre", TensorProto.FLOAT, [], [128.0]),
            helper.make_tensor("scale", TensorProto.FLOAT, [], [sign / 8.0]),
            helper.make_tensor("axis", TensorProto.INT64, [1], [1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(
        model, {"threshold": str(threshold), "input_height": str(size), "input_width": str(size)}
    )
    return bytes(model.SerializeToString())


def validation_set() -> tuple[Callable[[int], np.ndarray], np.ndarray]:
    """Dark human and bright AI images, at any requested size (as the export crops them per model)."""
    labels = np.array([0, 1] * 10)

    def images(size: int) -> np.ndarray:
        rng = np.random.default_rng(0)
        return np.stack(
            [
                np.full((size, size, 3), 60.0 + 140 * label) + rng.normal(0, 5, (size, size, 3))
                for label in labels
            ]
        ).astype(np.float32)

    return images, labels


def test_champion_moves_on_improvement_and_not_on_regression(tracking: MlflowClient) -> None:
    images, labels = validation_set()
    with mlflow.start_run():
        first = register_and_promote(
            brightness_detector(-1.0), images, labels, NAME, "champion"
        )  # wrong way round
    assert first.alias_moved and first.champion_version is None

    with mlflow.start_run():
        better = register_and_promote(brightness_detector(1.0), images, labels, NAME, "champion")
    assert better.alias_moved
    assert better.challenger_f1 == 1.0 and better.champion_f1 == 0.0
    assert str(tracking.get_model_version_by_alias(NAME, "champion").version) == better.version

    with mlflow.start_run():
        worse = register_and_promote(brightness_detector(-1.0), images, labels, NAME, "champion")
    assert not worse.alias_moved
    assert "no silent regression" in worse.reason
    assert str(tracking.get_model_version_by_alias(NAME, "champion").version) == better.version
    assert tracking.get_model_version(NAME, worse.version).tags["validation_f1"] == "0.000000"


def test_a_champion_of_another_input_size_is_scored_at_its_own_size(tracking: MlflowClient) -> None:
    images, labels = validation_set()
    with mlflow.start_run():
        register_and_promote(brightness_detector(-1.0, size=8), images, labels, NAME, "champion")
    with mlflow.start_run():
        larger = register_and_promote(brightness_detector(1.0, size=12), images, labels, NAME, "champion")
    assert larger.alias_moved and (larger.challenger_f1, larger.champion_f1) == (1.0, 0.0)
    assert tracking.get_model_version(NAME, larger.version).tags["input_height"] == "12"
