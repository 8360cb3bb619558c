"""Images of today's generators, as published: what the detector makes of them (never trained on).

The generator families the model trains on are up-scalers and decoders that run on a CPU; the
public uploads the output of diffusion and autoregressive text-to-image models. No such data set
can be downloaded here, but the preview images of ComfyUI's workflow templates (PyPI
``comfyui-workflow-templates-media-image``, MIT) are the outputs of those models (FLUX, SDXL,
SD 3.5, HiDream, Qwen-Image, GPT Image, Seedream, ...; an earlier release's SD 1.x and 2.1), one per
template, published as lossy WebP thumbnails: generated images as they travel the web; so are the
style-preset previews of InvokeAI (PyPI ``invokeai``, Apache-2.0), as 256 px PNG thumbnails. They
are only scored, never trained on.

They have no content twins, so they are compared with the human images no model trained on (the
validation and unseen-split humans), re-saved as the generated images were published
(``human_resave``: a ranking must not reward the file format), and with the same humans as stored.

With ``evaluation.band.on_wild_generated`` the band must also hold on them pooled with those
controls (:meth:`PublishedScores.band_set`), so that a model unable to tell them from photographs
does not answer "human" to them. What the band then answers to them is no longer an independent
figure, so :func:`cross_fitted_answers` also reports each half answered at the band chosen with
the other half. The halves split the generators, not the images (several templates preview the
same model: FLUX.2 five times, SDXL four), so that each half is answered at a band that never saw
its generators (``generators``: each generator's pattern over template names).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import keras
import numpy as np
import pandas as pd

from ai_image_detection.calibration import PlattScaling
from ai_image_detection.contract import VERDICTS, verdict
from ai_image_detection.input_pipeline import Perturbation, perturbed_pixels
from ai_image_detection.metrics import answers_by_class, binary_metrics
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from ai_image_detection.scoring import keras_scorer, score_files

HUMAN_SPLITS = ("validation", "unseen")
"""The splits whose human images no candidate trained on: the controls."""
FOLDS = (0, 1)
"""The two halves of the published images for the cross-fitted answers."""


def template_name(member: str) -> str:
    """The workflow template an image previews: its file name without the ``-<n>`` index and extension.

    >>> template_name("comfyui_workflow_templates_media_image/templates/flux_schnell-1.webp")
    'flux_schnell'
    """
    stem = PurePosixPath(member).stem
    base, _, index = stem.rpartition("-")
    return base if base and index.isdigit() else stem


def generator_of(template: str, generators: Mapping[str, str]) -> str:
    """The generator a template previews: the first whose pattern the template name contains, else itself.

    >>> generator_of("image_flux2_fp8", {"flux1": "^flux", "flux2": "flux2"})
    'flux2'
    >>> generator_of("image_qwen_image", {"flux2": "flux2"})
    'image_qwen_image'
    """
    return next((name for name, pattern in generators.items() if re.search(pattern, template)), template)


def generator_folds(generators: Sequence[str]) -> np.ndarray:
    """A fold (0 or 1) per image such that each generator's images share one and the folds are near equal.

    The generators, largest first (then by name), each go to the fold with fewer images so far.

    >>> generator_folds(["a", "b", "b", "c"]).tolist()
    [1, 0, 0, 1]
    """
    sizes = pd.Series(list(generators), dtype=object).value_counts()
    order = sorted(sizes.index, key=lambda name: (-sizes[name], name))
    filled = [0] * len(FOLDS)
    fold_of = {}
    for name in order:
        fold_of[name] = min(FOLDS, key=lambda fold: filled[fold])
        filled[fold_of[name]] += int(sizes[name])
    return np.array([fold_of[name] for name in generators], dtype=int)


@dataclass(frozen=True)
class PublishedScores:
    """The published generated images and their human controls, scored as served and calibrated.

    Attributes:
        generated: ``source`` (``package==version``), ``template``, ``generator``, ``member``,
            calibrated ``probability_ai`` and ``fold`` (0 or 1, :func:`generator_folds`) of each
            generated image.
        controls: Calibrated P(AI) of each human control after ``resave``.
        controls_as_stored: The same humans' calibrated P(AI) as stored.
        sources: ``package==version: licence`` of the generated images.
        resave: What the controls went through.
    """

    generated: pd.DataFrame
    controls: np.ndarray
    controls_as_stored: np.ndarray
    sources: list[str]
    resave: Perturbation

    def band_set(self, fold: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Labels (generated 1, controls 0) and scores for :func:`.choose_band`: one fold's, or all.

        The controls are split into the same two folds (alternating), so that a fold keeps the
        ratio of generated images to humans, on which the precision of "human" answers depends.
        """
        generated = self.generated["probability_ai"].to_numpy(dtype=np.float64)
        controls = self.controls
        if fold is not None:
            generated = generated[self.generated["fold"].to_numpy() == fold]
            controls = controls[np.arange(len(controls)) % len(FOLDS) == fold]
        labels = np.r_[np.ones(len(generated)), np.zeros(len(controls))].astype(int)
        return labels, np.r_[generated, controls]


def score_published(
    model: keras.Model,
    generated: list[SourcePhoto],
    predictions: pd.DataFrame,
    scaling: PlattScaling,
    human_resave: Perturbation,
    generators: Mapping[str, str],
    max_tiles: int,
    batch_size: int,
) -> PublishedScores | None:
    """Score the published generated images as uploaded, and the human controls re-saved alike.

    Args:
        model: The trained detector.
        generated: The generated images (bytes and where each came from).
        predictions: The candidate's calibrated predictions (the human controls are its
            validation and unseen-split human rows, already scored as stored).
        scaling: The calibration fitted on validation.
        human_resave: What the human controls go through to be stored as the generated images are.
        generators: Generator name -> pattern over template names (:func:`generator_of`).
        max_tiles: Tiles averaged per image.
        batch_size: Crops per model call.

    Returns:
        The scores, or None without generated images.
    """
    if not generated:
        return None
    size = int(model.input_shape[1])
    by_key = {f"{photo.package}/{photo.member}": photo for photo in sorted(generated, key=lambda p: p.member)}
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
    controls = scaling.image_scores(
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
    templates = [template_name(photo.member) for photo in by_key.values()]
    generator_names = [generator_of(template, generators) for template in templates]
    return PublishedScores(
        generated=pd.DataFrame(
            {
                "source": [f"{photo.package}=={photo.version}" for photo in by_key.values()],
                "template": templates,
                "generator": generator_names,
                "member": [photo.member for photo in by_key.values()],
                "probability_ai": generated_scores,
                "fold": generator_folds(generator_names),
            }
        ),
        controls=controls,
        controls_as_stored=humans["probability_ai"].to_numpy(dtype=np.float64),
        sources=sorted({f"{photo.package}=={photo.version}: {photo.licence}" for photo in generated}),
        resave=human_resave,
    )


BandChooser = Callable[[list[tuple[np.ndarray, np.ndarray]]], tuple[float, float]]
"""The candidate's band, chosen on its other sets and on these further ``(labels, scores)`` sets."""


def cross_fitted_answers(published: PublishedScores, band_with: BandChooser) -> pd.Series:
    """The answer to each generated image when the band never saw it.

    Each half of the published images (and of the controls) is answered at the band chosen with
    the other half in place of the whole: the halves share no generator, so this estimates what a
    band that holds on these images answers to the next generator's. A half holds about half the
    AI images, so the band's miss-rate target allows it fewer misses than the whole.

    Args:
        published: The scores.
        band_with: Chooses the band with the given published sets.

    Returns:
        ``human``, ``inconclusive`` or ``ai`` for each row of ``published.generated`` (same index).
    """
    generated = published.generated
    bands = {fold: band_with([published.band_set(1 - fold)]) for fold in FOLDS}
    return pd.Series(
        [
            verdict(score, *bands[fold])
            for score, fold in zip(generated["probability_ai"], generated["fold"], strict=True)
        ],
        index=generated.index,
        dtype=object,
    )


def _shares(answers: pd.Series) -> dict[str, float]:
    """Share of each answer, in :data:`VERDICTS` order."""
    shares = answers.value_counts(normalize=True)
    return {name: float(shares.get(name, 0.0)) for name in VERDICTS}


def wild_generated_report(
    published: PublishedScores | None,
    threshold: float,
    band: tuple[float, float],
    cross_fitted: pd.Series | None,
) -> dict[str, Any]:
    """Answers, ranking and each image, on the published generated images and their controls.

    Args:
        published: The scores (None: none were given).
        threshold: The forced-choice cut.
        band: ``(threshold_human, threshold_ai)``.
        cross_fitted: :func:`cross_fitted_answers` when the band was chosen on these images too,
            else None: their shares are ``answers_cross_fitted`` and each image's is
            ``answer_cross_fitted``.

    Returns:
        ``{}`` without published images; otherwise ``images``, ``templates``, ``generators``
        (how many, and the two halves of the cross-fitted answers), ``sources``,
        ``human_controls`` (how many, from which splits, and the re-save), ``band_chosen_on_them``,
        ``answers`` (on the generated images and on the re-saved controls, each as shares of
        human / inconclusive / ai), ``answers_cross_fitted`` (the generated images' answers at
        bands that never saw them, or None), ``at_threshold`` (metrics against the re-saved
        controls), ``roc_auc_humans_as_stored``, ``by_source`` (each package's images: how
        many, their AUROC against the re-saved controls and against the humans as stored, and
        their answers) and ``per_image`` (source, template, generator, member, calibrated P(AI),
        the answer and the cross-fitted answer, lowest P(AI) first: the ones answered "human" lead).
    """
    if published is None:
        return {}
    labels, scores = published.band_set()
    generated = published.generated["probability_ai"].to_numpy(dtype=np.float64)
    as_stored = binary_metrics(labels, np.r_[generated, published.controls_as_stored], threshold)
    per_image = published.generated.drop(columns="fold").assign(
        answer=[verdict(score, *band) for score in generated]
    )
    if cross_fitted is not None:
        per_image["answer_cross_fitted"] = cross_fitted
    halves = published.generated.groupby("fold")["generator"].unique()
    return {
        "images": len(generated),
        "templates": int(per_image["template"].nunique()),
        "generators": {
            "count": int(per_image["generator"].nunique()),
            "halves": [sorted(halves.get(fold, [])) for fold in FOLDS],
        },
        "sources": published.sources,
        "human_controls": {
            "images": len(published.controls),
            "splits": list(HUMAN_SPLITS),
            "resave": published.resave.settings(),
        },
        "band_chosen_on_them": cross_fitted is not None,
        "answers": answers_by_class(labels, scores, band),
        "answers_cross_fitted": None if cross_fitted is None else _shares(cross_fitted),
        "at_threshold": binary_metrics(labels, scores, threshold),
        "roc_auc_humans_as_stored": as_stored["roc_auc"],
        "by_source": _by_source(published, per_image["answer"]),
        "per_image": per_image.sort_values("probability_ai", kind="stable").to_dict("records"),
    }


def _by_source(published: PublishedScores, answers: pd.Series) -> list[dict[str, Any]]:
    """Each package's images against the same controls: the sets differ in generators and in format."""
    rows = []
    for source, images in published.generated.groupby("source", sort=True):
        generated = images["probability_ai"].to_numpy(dtype=np.float64)
        labels = np.r_[np.ones(len(generated)), np.zeros(len(published.controls))].astype(int)
        rows.append(
            {
                "source": source,
                "images": len(generated),
                "roc_auc": binary_metrics(labels, np.r_[generated, published.controls])["roc_auc"],
                "roc_auc_humans_as_stored": binary_metrics(
                    labels, np.r_[generated, published.controls_as_stored]
                )["roc_auc"],
                "answers": _shares(answers.loc[images.index]),
            }
        )
    return rows
