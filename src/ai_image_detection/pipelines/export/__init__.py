"""Selects the candidate and exports it to ONNX (the model contract), parity-checked."""

from ai_image_detection.pipelines.export.pipeline import create_pipeline

__all__ = ["create_pipeline"]
