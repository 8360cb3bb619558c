"""ONNX Runtime in one place: sessions from bytes or a file; the metadata as the ``onnx`` package reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from ai_image_detection.onnx_runtime import onnx_metadata, onnx_session

METADATA = {"input_height": "2", "input_width": "2", "threshold": "0.42", "families": '["human", "gan"]'}


def tiny_model() -> bytes:
    """``sigmoid(image)`` on ``[N, 2, 2, 3]``, with :data:`METADATA`."""
    graph = helper.make_graph(
        [helper.make_node("Sigmoid", ["image"], ["probability_ai"])],
        "tiny",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, 2, 2, 3])],
        [helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, [None, 2, 2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, METADATA)
    return bytes(model.SerializeToString())


def test_the_metadata_is_the_models_metadata_props(tmp_path: Path) -> None:
    model = tiny_model()
    from_proto = {prop.key: prop.value for prop in onnx.load_from_string(model).metadata_props}
    assert onnx_metadata(model) == from_proto == METADATA
    file = tmp_path / "model.onnx"
    file.write_bytes(model)
    assert onnx_metadata(onnx_session(file)) == METADATA, "as the service reads it"


def test_sessions_run_on_the_cpu_with_the_options_asked_for() -> None:
    model = tiny_model()
    default, service = onnx_session(model), onnx_session(model, spinning=False)
    reading = onnx_session(model, optimize=False)
    assert default.get_providers() == ["CPUExecutionProvider"]
    levels = [session.get_session_options().graph_optimization_level for session in (default, reading)]
    assert levels == [ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL]
    spinning = "session.intra_op.allow_spinning"
    assert service.get_session_options().get_session_config_entry(spinning) == "0"
    with pytest.raises(RuntimeError, match=spinning):  # ONNX Runtime's default: threads spin
        default.get_session_options().get_session_config_entry(spinning)
    (probabilities,) = service.run(None, {"image": np.zeros((1, 2, 2, 3), dtype=np.float32)})
    np.testing.assert_allclose(probabilities, 0.5)
