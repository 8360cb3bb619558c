"""Images of today's generators, as published: what the detector makes of them (never trained on).

The generator families the model trains on are up-scalers and decoders that run on a CPU; the
public uploads the output of diffusion and autoregressive text-to-image models. No such data set
can be downloaded here, but the preview images of ComfyUI's workflow templates (PyPI
``comfyui-workflow-templates-media-image``, MIT) are the outputs of those models (FLUX, SDXL,
SD 3.5, HiDream, Qwen-Image, GPT Image, Seedream, ...), one per template, published as lossy WebP
thumbnails: generated images as they travel the web. They are only scored, never trained on.

They have no content twins, so they are compared with the human images no model trained on (the
validation and unseen-split humans), re-saved as the generated images were published
(``human_resave``: a ranking must not reward the file format), and with the same humans as stored.
"""

from __future__ import annotations

import functools
from pathlib import PurePosixPath
from typing import Any

import keras
import numpy as np
import pandas as pd

from ai_image_detection.calibration import PlattScaling
from ai_image_detection.input_pipeline import Perturbation, perturbed_pixels
from ai_image_detection.metrics import answer_shares, answers_by_class, binary_metrics
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from ai_image_detection.scoring import keras_scorer, score_files

HUMAN_SPLITS = ("validation", "unseen")
"""The splits whose human images no candidate trained on: the controls."""
_ANSWER_NAMES = ("human", "inconclusive", "ai")


def template_name(member: str) -> str:
    """The workflow template an image previews: its file name without the ``-<n>`` index and extension.

    >>> template_name("comfyui_workflow_templates_media_image/templates/flux_schnell-1.webp")
    'flux_schnell'
    """
    stem = PurePosixPath(member).stem
    base, _, index = stem.rpartition("-")
    return base if base and index.isdigit() else stem


def answer(probability: float, band: tuple[float, float]) -> str:
    """The service's answer for a calibrated P(AI): ``human`` below the band, ``ai`` from its top."""
    shares = answer_shares([probability], *band)
    return next(name for name in _ANSWER_NAMES if shares[name] == 1.0)


def wild_generated_report(
    model: keras.Model,
    generated: list[SourcePhoto],
    predictions: pd.DataFrame,
    scaling: PlattScaling,
    threshold: float,
    band: tuple[float, float],
    human_resave: Perturbation,
    max_tiles: int,
    batch_size: int,
) -> dict[str, Any]:
    """Score the published generated images and the human controls; answers, ranking and each image.

    Args:
        model: The trained detector.
        generated: The generated images (bytes and where each came from).
        predictions: The candidate's calibrated predictions (the human controls are its
            validation and unseen-split human rows, already scored as stored).
        scaling: The calibration fitted on validation.
        threshold: The forced-choice cut.
        band: ``(threshold_human, threshold_ai)``.
        human_resave: What the human controls go through to be stored as the generated images are.
        max_tiles: Tiles averaged per image.
        batch_size: Crops per model call.

    Returns:
        ``{}`` without generated images; otherwise ``images``, ``templates``, ``sources``
        (``package==version: licence``), ``human_controls`` (how many, and ``human_resave``),
        ``answers`` (on the generated images and on the re-saved human controls, each as shares of
        human / inconclusive / ai), ``at_threshold`` (metrics against the re-saved controls),
        ``roc_auc_humans_as_stored`` and ``per_image`` (template, member, calibrated P(AI) and the
        answer, lowest P(AI) first: the ones answered "human" lead).
    """
    if not generated:
        return {}
    size = int(model.input_shape[1])
    by_key = {f"{photo.package}/{photo.member}": photo for photo in generated}
    generated_scores = scaling.image_scores(
        score_files(
            keras_scorer(model),
            list(by_key),
            size,
            max_tiles,
            batch_size,
            description="published generated images",
            read=lambda key: by_key[key].data,
        )
    )
    humans = predictions[predictions["split"].isin(HUMAN_SPLITS) & (predictions["label"] == 0)]
    resaved_scores = scaling.image_scores(
        score_files(
            keras_scorer(model),
            humans["path"].tolist(),
            size,
            max_tiles,
            batch_size,
            transform=functools.partial(perturbed_pixels, perturbation=human_resave),
            description=f"human controls, {human_resave.kind} q{human_resave.quality}",
        )
    )
    labels = np.r_[np.ones(len(generated_scores)), np.zeros(len(resaved_scores))].astype(int)
    as_stored = binary_metrics(
        labels, np.r_[generated_scores, humans["probability_ai"].to_numpy(dtype=np.float64)], threshold
    )
    per_image = pd.DataFrame(
        {
            "template": [template_name(photo.member) for photo in by_key.values()],
            "member": [photo.member for photo in by_key.values()],
            "probability_ai": generated_scores,
            "answer": [answer(score, band) for score in generated_scores],
        }
    ).sort_values("probability_ai", kind="stable")
    return {
        "images": len(generated_scores),
        "templates": int(per_image["template"].nunique()),
        "sources": sorted({f"{photo.package}=={photo.version}: {photo.licence}" for photo in generated}),
        "human_controls": {
            "images": len(resaved_scores),
            "splits": list(HUMAN_SPLITS),
            "resave": human_resave.model_dump(exclude_defaults=True),
        },
        "answers": answers_by_class(labels, np.r_[generated_scores, resaved_scores], band),
        "at_threshold": binary_metrics(labels, np.r_[generated_scores, resaved_scores], threshold),
        "roc_auc_humans_as_stored": as_stored["roc_auc"],
        "per_image": per_image.to_dict("records"),
    }
