"""The ONNX side of the model contract: names, dtypes, shapes, metadata, parity."""

from __future__ import annotations

import keras
import numpy as np
import onnx
import pytest

from ai_image_detection.contract import INPUT_NAME, OUTPUT_NAME
from ai_image_detection.models import DetectorSpec, build_detector
from ai_image_detection.onnx_export import (
    ParityError,
    check_parity,
    export_onnx,
    onnx_metadata,
    onnx_predict,
)


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
        out = onnx_predict(exported, np.random.default_rng(batch).uniform(0, 255, (batch, 32, 32, 3)))
        assert out.shape == (batch, 1)
        assert np.all((out >= 0) & (out <= 1))


def test_parity_holds_for_a_faithful_export(model: keras.Model, exported: bytes) -> None:
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    assert check_parity(model, exported, images, tolerance=1e-4) <= 1e-4


def test_parity_catches_a_broken_export(model: keras.Model) -> None:
    broken = keras.models.clone_model(model)
    broken.set_weights([w + 0.05 for w in model.get_weights()])
    images = np.random.default_rng(1).uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    with pytest.raises(ParityError, match=r"disagree by .* worst image #\d+: Keras .*, ONNX"):
        check_parity(model, export_onnx(broken, opset=17, metadata={}), images, tolerance=1e-4)
