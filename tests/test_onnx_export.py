"""The ONNX side of the model contract: names, dtypes, shapes, metadata, parity."""

from __future__ import annotations

import keras
import numpy as np
import onnx
import pytest

from ai_image_detection import onnx_export
from ai_image_detection.calibration import PlattScaling
from ai_image_detection.contract import FAMILIES_KEY, FAMILY_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME
from ai_image_detection.models import DetectorSpec, build_detector, calibrated_detector
from ai_image_detection.onnx_export import (
    ParityError,
    check_parity,
    export_onnx,
    onnx_predict,
)
from ai_image_detection.onnx_runtime import onnx_metadata


@pytest.fixture(scope="module")
def model() -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4, 8]))


@pytest.fixture(scope="module")
def exported(model: keras.Model) -> bytes:
    return export_onnx(
        model, opset=17, metadata={"threshold": "0.42", "mlflow_run_id": "r1", "data_version": "d1"}
    )


def test_export_obeys_the_contract(exported: bytes) -> None:
    proto = onnx.load_from_string(exported)
    [graph_input], [graph_output] = proto.graph.input, proto.graph.output
    assert (graph_input.name, graph_output.name) == (INPUT_NAME, OUTPUT_NAME)
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value"), "dynamic batch"
    assert [d.dim_value for d in dims[1:]] == [32, 32, 3]
    assert onnx_metadata(exported) == {
        "input_height": "32",
        "input_width": "32",
        "class_names": '["human", "ai"]',
        "threshold": "0.42",
        "mlflow_run_id": "r1",
        "data_version": "d1",
    }


def test_raw_pixels_give_probabilities_for_any_batch(exported: bytes) -> None:
    for batch in (1, 5):
        [out] = onnx_predict(exported, np.random.default_rng(batch).uniform(0, 255, (batch, 32, 32, 3)))
        assert out.shape == (batch, 1)
        assert np.all((out >= 0) & (out <= 1))


def test_parity_holds_for_a_faithful_export(model: keras.Model, exported: bytes) -> None:
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    assert check_parity(model, exported, images, tolerance=1e-4) <= 1e-4


def test_parity_catches_a_broken_export(model: keras.Model, exported: bytes) -> None:
    """An export whose weights differ from the model's: here the model moved, the file did not."""
    moved = keras.models.clone_model(model)
    moved.set_weights([w + 0.05 for w in model.get_weights()])
    images = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    with pytest.raises(
        ParityError, match=r"disagree on probability_ai by .* worst entry #\d+: Keras .*, ONNX"
    ):
        check_parity(moved, exported, images, tolerance=1e-4)


FAMILIES = ["human", "realcugan", "waifu2x"]


@pytest.fixture(scope="module")
def attributing_model() -> keras.Model:
    keras.utils.set_random_seed(1)
    detector = build_detector(DetectorSpec(architecture="small_cnn", image_size=32, widths=[4, 8]), FAMILIES)
    return calibrated_detector(detector, PlattScaling(slope=1.5, intercept=-0.2))


@pytest.fixture(scope="module")
def attributing_exported(attributing_model: keras.Model) -> bytes:
    return export_onnx(attributing_model, opset=17, metadata={})


def test_the_attribution_head_exports_second_with_its_family_names(
    attributing_model: keras.Model, attributing_exported: bytes
) -> None:
    exported = attributing_exported
    proto = onnx.load_from_string(exported)
    assert [output.name for output in proto.graph.output] == [OUTPUT_NAME, FAMILY_OUTPUT_NAME]
    assert onnx_metadata(exported)[FAMILIES_KEY] == '["human", "realcugan", "waifu2x"]'
    images = np.random.default_rng(2).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    probability, families = onnx_predict(exported, images)
    assert probability.shape == (6, 1) and families.shape == (6, 3)
    np.testing.assert_allclose(families.sum(axis=1), 1.0, rtol=1e-5)
    assert check_parity(attributing_model, exported, images, tolerance=1e-4) <= 1e-4


def test_parity_checks_the_attribution_too(
    attributing_model: keras.Model, attributing_exported: bytes
) -> None:
    """Only the attribution head differs between the model and the file: parity still fails."""
    images = np.random.default_rng(3).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    moved = keras.models.clone_model(attributing_model)
    moved.set_weights(attributing_model.get_weights())
    layer = next(layer for layer in moved.layers if layer.name == FAMILY_OUTPUT_NAME)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.array([2.0, 0.0, -2.0], dtype=bias.dtype)])
    with pytest.raises(ParityError, match="disagree on family_probabilities"):
        check_parity(moved, attributing_exported, images, tolerance=1e-4)


def test_a_model_over_the_threshold_converts_in_a_child_process_to_the_same_graph(
    model: keras.Model, exported: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CLIP-sized models convert in a spawned process (its memory goes back to the system); same result."""
    monkeypatch.setattr(onnx_export, "ISOLATED_CONVERSION_PARAMETERS", model.count_params() - 1)
    isolated = export_onnx(
        model, opset=17, metadata={"threshold": "0.42", "mlflow_run_id": "r1", "data_version": "d1"}
    )
    images = np.random.default_rng(4).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_array_equal(onnx_predict(isolated, images)[0], onnx_predict(exported, images)[0])
    assert onnx_metadata(isolated) == onnx_metadata(exported)
