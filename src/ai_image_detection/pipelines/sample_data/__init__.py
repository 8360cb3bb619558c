"""Generates the embedded real/AI sample data set in the Kaggle competition layout."""

from ai_image_detection.pipelines.sample_data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
