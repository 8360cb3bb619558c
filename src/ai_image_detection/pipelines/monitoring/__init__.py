"""Monitors the deployed service: its prediction log and feedback against the model's reference."""

from ai_image_detection.pipelines.monitoring.pipeline import create_pipeline

__all__ = ["create_pipeline"]
