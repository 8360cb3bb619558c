"""Trains every candidate detector listed in ``parameters_training.yml``."""

from ai_image_detection.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
