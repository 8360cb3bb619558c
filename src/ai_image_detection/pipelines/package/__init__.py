"""The ``package`` pipeline: the registry's champion into the BentoML model store."""

from ai_image_detection.pipelines.package.pipeline import create_pipeline

__all__ = ["create_pipeline"]
