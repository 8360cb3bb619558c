"""Detects AI-generated images: Kedro pipelines, models and serving."""

__version__ = "0.1.0"
