"""Shows what the train-only augmentation does to real and AI images."""

from ai_image_detection.pipelines.augmentation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
