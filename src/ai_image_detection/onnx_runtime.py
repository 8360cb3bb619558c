"""ONNX Runtime in one place: the sessions that run a model, and the metadata a model carries.

Every part of the project (export, parity check, quantisation, latency, registry, package,
benchmarks, the service) builds its sessions and reads a model's contract
(:mod:`ai_image_detection.contract`) here. It imports ONNX Runtime only, not the ``onnx``
package, so the service's image, which has only ONNX Runtime, can use it too.
"""

from __future__ import annotations

import os

import onnxruntime as ort

ModelSource = bytes | str | os.PathLike[str]
"""A serialised ONNX model, or the path of its file."""


def onnx_session(model: ModelSource, *, optimize: bool = True, spinning: bool = True) -> ort.InferenceSession:
    """A CPU inference session; ONNX Runtime logs only errors.

    Args:
        model: The serialised model, or its file.
        optimize: Apply every graph optimisation (off when only the metadata is read).
        spinning: Let idle intra-op threads spin while they wait for work. The service turns it
            off: its API process decodes uploads on the same cores, and spinning threads would
            take their time.

    Returns:
        The session.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    # Exact int8 products on x86 CPUs without VNNI (AVX2 only, e.g. AMD EPYC, EC2 t3a): there, ONNX
    # Runtime's default u8s8 kernels saturate 16-bit sums, and an int8 model's outputs drift far
    # from its float model (measured: CLIP embeddings at cosine 0.29-0.52 instead of 0.98).
    options.add_session_config_entry("session.x64quantprecision", "1")
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_metadata(model: bytes | ort.InferenceSession) -> dict[str, str]:
    """The metadata properties of an ONNX model (its ``metadata_props``), as ONNX Runtime reads them.

    Args:
        model: The serialised model, or a session that already holds it (the service's).

    Returns:
        Each metadata key and its value.
    """
    session = model if isinstance(model, ort.InferenceSession) else onnx_session(model, optimize=False)
    return dict(session.get_modelmeta().custom_metadata_map)
