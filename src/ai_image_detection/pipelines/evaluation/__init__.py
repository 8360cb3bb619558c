"""Evaluates every candidate: metrics, threshold, robustness, plots, comparison, submission."""

from ai_image_detection.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
