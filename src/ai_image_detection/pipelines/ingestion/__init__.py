"""Validates raw images and writes the manifest every later pipeline reads."""

from ai_image_detection.pipelines.ingestion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
