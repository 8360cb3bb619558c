"""The API's answers: the verdict on an image, worded so that it never claims more than the model knows.

A calibrated score below the model's ``threshold_human`` is ``human``, at or above ``threshold_ai``
it is ``ai`` (:func:`ai_image_detection.contract.verdict`), and in between, where validation showed
the model is unreliable, the answer is ``inconclusive``: no class, and no confidence.

An image whose provenance declares it AI-generated (a C2PA manifest whose signature verifies, or
a generator's own metadata; :mod:`ai_image_detection.serving.provenance`) is answered ``ai`` with
``decided_by: "provenance"``: the declaration decides, the pixels' score is still reported, and
there is no confidence (a declaration is not a calibrated probability). A claim of camera capture is
shown but never overrides the pixels: metadata is easy to forge and to strip.

A model that attributes also says which of its training families (``human`` and the generator
families) the image most resembles: its ``closest_family``, a resemblance rather than a finding of
which generator made the image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from ai_image_detection.contract import Verdict, verdict
from ai_image_detection.serving.model_contract import ModelDescription, Thresholds
from ai_image_detection.serving.provenance import Evidence, Provenance

VERDICT_WORDS: dict[Verdict, str] = {
    "ai": "Likely AI-generated",
    "human": "Likely human-made",
    "inconclusive": "Inconclusive",
}
DecidedBy = Literal["pixels", "provenance"]


@dataclass(frozen=True)
class ImageFacts:
    """What a verdict reports about the image itself, as decoded."""

    width: int
    height: int
    format: str
    frames: int
    exif_rotated: bool


class ImageVerdict(BaseModel):
    """The answer for one image."""

    prediction_id: str = Field(description="This answer's id, to quote in `/feedback`.")
    label: Verdict = Field(
        description="`human` below `thresholds.human`, `ai` at or above `thresholds.ai`, "
        "`inconclusive` in between (where evaluation showed the model is unreliable); `ai` whatever "
        "the score when the image's provenance declares it AI-generated (`decided_by: provenance`)."
    )
    decided_by: DecidedBy = Field(
        description="`pixels` (the model's score against its thresholds) or `provenance` (a valid "
        "declaration of AI generation in the image's metadata; `provenance.decisive` names it)."
    )
    summary: str = Field(description="The answer in one human-readable sentence.")
    probability_ai: float = Field(
        description="Calibrated probability that the image is AI-generated: the mean over its tiles."
    )
    confidence: float | None = Field(
        description="Calibrated probability of the stated class (`probability_ai` for `ai`, "
        "1 - `probability_ai` for `human`); null for `inconclusive` and when provenance decided.",
        # BentoML's OpenAPI keeps only the first branch of `anyOf`: say "or null" the OpenAPI 3.0 way
        json_schema_extra={"nullable": True},
    )
    closest_family: str | None = Field(
        description="Which of the families the model was trained on (`human` and the generator "
        "families) the image most resembles: the largest entry of `family_probabilities`. It says "
        "what the image looks like to the model, not which generator made it (an image from a "
        "generator outside training resembles some family too); null for a model without attribution.",
        json_schema_extra={"nullable": True},
    )
    closest_family_probability: float | None = Field(
        description="The probability of `closest_family` in `family_probabilities`; null for a model "
        "without attribution.",
        json_schema_extra={"nullable": True},
    )
    family_probabilities: dict[str, float] | None = Field(
        description="The model's attribution: each family it was trained on (`human` first) with its "
        "probability, the mean over the image's tiles (as `probability_ai` is); they sum to 1. Null "
        "for a model without attribution.",
        json_schema_extra={"nullable": True},
    )
    thresholds: Thresholds = Field(description="The model's inconclusive band.")
    threshold: float = Field(
        description="The model's single best cut, for a forced choice (ai at or above it)."
    )
    calibrated: bool = Field(
        description="Whether the model's metadata records a calibration of its output "
        "(false for models exported before calibration: the score is then the raw output)."
    )
    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version.")
    input_size: int = Field(description="Side of the model's square input, in pixels.")
    tiles: int = Field(description="Native-resolution crops averaged for the score.")
    width: int = Field(description="Width in pixels, EXIF-upright.")
    height: int = Field(description="Height in pixels, EXIF-upright.")
    format: str = Field(description="The format found in the file (its name and content type are ignored).")
    frames: int = Field(description="Frames in the file; only the first is scored.")
    provenance: Provenance = Field(
        description="What the file's metadata says about its origin (C2PA, XMP, generator text, EXIF), "
        "read before scoring."
    )
    notes: list[str] = Field(
        description="What the answer should be read with (inconclusive band, padding, frames, ...)."
    )


class Explanation(ImageVerdict):
    """The verdict and which regions drive it."""

    method: str = Field(
        description="`patches` (each cell scored on its own crop) or `occlusion` (the score's drop "
        "when the cell is hidden)."
    )
    rows: int = Field(description="Grid rows.")
    cols: int = Field(description="Grid columns.")
    grid: list[list[float]] = Field(
        description="Row-major, per cell: P(AI) (`patches`) or the drop in P(AI) (`occlusion`)."
    )
    heatmap_png: str = Field(
        description="Data URL of an RGBA PNG with the image's aspect ratio: red towards AI, "
        "blue towards human."
    )


class ServiceInfo(ModelDescription):
    """The served model and the service's limits."""

    max_bytes: int = Field(description="Largest accepted request body, in bytes.")
    max_files: int = Field(description="Most images in one `/predict_batch` request.")
    max_pixels: int = Field(description="Largest accepted width x height.")
    batching: bool = Field(description="Whether crops of concurrent requests share model calls.")
    max_batch_size: int = Field(
        description="Most crops in one model call: set, or measured at start-up as the fastest per crop."
    )
    formats: list[str] = Field(description="Accepted image formats.")


def _percent(probability: float) -> str:
    return f"{probability:.1%}"


def _band(thresholds: Thresholds) -> str:
    """The band in words: ``[40.0 %, 60.0 %)`` (closed at 100 % when no score reaches "ai"), or the cut."""
    if thresholds.human == thresholds.ai:
        return f"threshold {_percent(thresholds.ai)}"
    if thresholds.ai > 1.0:
        return f"inconclusive band [{_percent(thresholds.human)}, 100.0%] (the model never answers AI)"
    return f"inconclusive band [{_percent(thresholds.human)}, {_percent(thresholds.ai)})"


def summary(label: Verdict, probability_ai: float, confidence: float | None, thresholds: Thresholds) -> str:
    """One sentence for people: the answer, P(AI) against the thresholds, and the confidence if any.

    Args:
        label: The answer.
        probability_ai: The calibrated score.
        confidence: Probability of the stated class, None when inconclusive.
        thresholds: The model's band.

    Returns:
        E.g. ``"Inconclusive: P(AI) 47.0% lies in the inconclusive band [40.0%, 60.0%), where the
        model is unreliable; no verdict."``
    """
    score = f"P(AI) {_percent(probability_ai)}"
    if label == "inconclusive" or confidence is None:
        band = _band(thresholds)
        return f"Inconclusive: {score} lies in the {band}, where the model is unreliable; no verdict."
    if label == "ai":
        where = f"at or above the AI threshold {_percent(thresholds.ai)}"
    else:
        where = f"below the human threshold {_percent(thresholds.human)}"
    return f"{VERDICT_WORDS[label]}: {score}, {where}; confidence {_percent(confidence)}."


def declared_summary(evidence: Evidence, probability_ai: float) -> str:
    """One sentence for an answer that provenance decided: the declaration, then the pixels' score."""
    return (
        f"AI-generated (declared): {evidence.detail.rstrip('.')}; "
        f"the pixels alone give P(AI) {_percent(probability_ai)}."
    )


def _provenance_notes(pixels_label: Verdict, provenance: Provenance) -> list[str]:
    """How the provenance weighed in the answer."""
    if provenance.declares_ai:
        return [
            f"decided by the image's provenance ({provenance.decisive}), not by the pixels, whose "
            f"answer alone would be {pixels_label}"
        ]
    if provenance.claims_capture and pixels_label != "human":
        return [
            "the metadata claims a camera capture; metadata is easy to forge and to strip, so the "
            "pixels decide"
        ]
    return []


def _notes(label: Verdict, probability_ai: float, facts: ImageFacts, model: ModelDescription) -> list[str]:
    """What the pixels' answer should be read with."""
    notes = []
    if label == "inconclusive":
        notes.append(
            f"P(AI) {_percent(probability_ai)} lies in the {_band(model.thresholds)}: in evaluation "
            "(validation images, generator families held out of training as generated and re-shared, and "
            "published images of today's generators) "
            "the model was unreliable for scores in this band, so it names no class and no confidence"
        )
        if probability_ai < model.threshold:
            notes.append(
                "no AI trace was found, but that is not evidence of a human: images of today's diffusion "
                "and autoregressive generators, which the model never saw, score this low too, and so do "
                "images whose traces resizing, re-compressing or blurring erased"
            )
    if model.calibration is None:
        notes.append(
            "this model's metadata records no calibration: P(AI) and the confidence are its raw output, "
            "which may overstate or understate its certainty"
        )
    if facts.frames > 1:
        notes.append(f"animated image with {facts.frames} frames: the first frame was scored")
    if min(facts.width, facts.height) < model.input_size:
        notes.append(
            f"smaller than the model input ({model.input_size} px): zero-padded, not up-scaled, "
            "so there is less evidence"
        )
    if facts.exif_rotated:
        notes.append("rotated upright from its EXIF orientation")
    return notes


def _attribution(
    family_probabilities: Sequence[float] | None, model: ModelDescription
) -> dict[str, float] | None:
    """Each of the model's families with its probability, or None for a model without attribution.

    Raises:
        ValueError: If the probabilities are not one for each of the model's families.
    """
    names, probabilities = model.families, family_probabilities
    if names is None and probabilities is None:
        return None
    if names is None or probabilities is None or len(probabilities) != len(names):
        raise ValueError(f"family probabilities {probabilities} do not match the model's families {names}")
    return dict(zip(names, map(float, probabilities), strict=True))


def judge(
    probability_ai: float,
    tiles: int,
    facts: ImageFacts,
    model: ModelDescription,
    provenance: Provenance,
    prediction_id: str,
    family_probabilities: Sequence[float] | None = None,
) -> ImageVerdict:
    """The answer for an image whose tiles scored ``probability_ai`` on average.

    Args:
        probability_ai: Mean calibrated P(AI) of the image's tiles.
        tiles: How many tiles were averaged.
        facts: Size, format and frames of the decoded image.
        model: The served model (band, threshold, calibration, families).
        provenance: What the file's metadata says about its origin.
        prediction_id: The answer's id.
        family_probabilities: Mean of the tiles' family probabilities, in the order of
            ``model.families``; None for a model without attribution.

    Returns:
        The verdict: ``confidence`` is the calibrated probability of the stated class, or None
        when the score lies in the inconclusive band or provenance decided; ``closest_family`` is
        the most probable family.

    Raises:
        ValueError: If ``family_probabilities`` is not one probability for each of ``model.families``.
    """
    pixels_label = verdict(probability_ai, model.thresholds.human, model.thresholds.ai)
    attribution = _attribution(family_probabilities, model)
    closest, closest_probability = (
        (None, None) if attribution is None else max(attribution.items(), key=lambda item: item[1])
    )
    decisive = next(
        (
            evidence
            for evidence in provenance.evidence
            if evidence.source == provenance.decisive
            and evidence.claim == "ai"
            and evidence.valid is not False
        ),
        None,
    )
    if provenance.declares_ai and decisive is not None:
        label: Verdict = "ai"
        decided_by: DecidedBy = "provenance"
        confidence = None
        said = declared_summary(decisive, probability_ai)
    else:
        label, decided_by = pixels_label, "pixels"
        confidence = {"ai": probability_ai, "human": 1.0 - probability_ai}.get(label)
        said = summary(label, probability_ai, confidence, model.thresholds)
    described: dict[str, Any] = model.model_dump(
        include={"model_name", "model_version", "input_size", "threshold", "thresholds"}
    )
    return ImageVerdict(
        **described,
        prediction_id=prediction_id,
        label=label,
        decided_by=decided_by,
        summary=said,
        probability_ai=probability_ai,
        confidence=confidence,
        closest_family=closest,
        closest_family_probability=closest_probability,
        family_probabilities=attribution,
        calibrated=model.calibration is not None,
        tiles=tiles,
        width=facts.width,
        height=facts.height,
        format=facts.format,
        frames=facts.frames,
        provenance=provenance,
        notes=_provenance_notes(pixels_label, provenance)
        + _notes(pixels_label, probability_ai, facts, model),
    )
