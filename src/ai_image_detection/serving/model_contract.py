"""What the served model declares about itself: its ONNX metadata, read and checked in one place.

The metadata (:mod:`ai_image_detection.contract`) says how to score an image exactly as evaluation
did: the input size, the tiling (``max_tiles``), the inconclusive band (``threshold_human``,
``threshold_ai``) chosen on validation scores, the single forced-choice ``threshold`` and how the
output was calibrated. Models exported before the band existed carry only ``threshold`` and the
input size; they still serve, with the band collapsed onto ``threshold`` and the tiling from the
``AIID_MAX_TILES`` setting, and the fallbacks are logged and listed in the description.

A model that attributes has a second output, ``family_probabilities``, whose columns the metadata
names (``families``, ``human`` first); a model without that output or without the names (every
export before attribution) is described with ``families`` null and answers without attribution.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from ai_image_detection.contract import (
    CALIBRATION_KEY,
    FAMILIES_KEY,
    FAMILY_OUTPUT_NAME,
    HUMAN_FAMILY,
    MAX_TILES_KEY,
    NEVER_CUT,
    THRESHOLD_AI_KEY,
    THRESHOLD_HUMAN_KEY,
    THRESHOLD_KEY,
)
from ai_image_detection.serving.settings import ENV_PREFIX, ServingSettings

logger = logging.getLogger(__name__)

MAX_TILES_VARIABLE = f"{ENV_PREFIX}MAX_TILES"

OutputShapes = Mapping[str, Sequence[int | str | None]]
"""The model's outputs by name, with their shapes as ONNX Runtime reports them (a named or unknown
dimension is a string or None)."""


class Thresholds(BaseModel):
    """The edges of the inconclusive band, as calibrated P(AI)."""

    human: float = Field(description="Below this P(AI) the answer is `human`.")
    ai: float = Field(
        description="At or above this P(AI) the answer is `ai`; from `human` up to it, `inconclusive`."
    )


class ModelDescription(BaseModel):
    """The served model: registry name and version, input size, thresholds, tiling and calibration."""

    model_name: str = Field(description="Registered model name.")
    model_version: str = Field(description="Registered model version.")
    input_size: int = Field(description="Side of the square crops the model scores, in pixels.")
    threshold: float = Field(description="The single best cut on validation, for a forced choice.")
    thresholds: Thresholds = Field(description="The inconclusive band (equal edges: no band).")
    max_tiles: int = Field(description="Most crops averaged per image, as in evaluation.")
    calibration: dict[str, Any] | None = Field(
        description="How the output was calibrated (method, parameters, ECE before and after), "
        "or null when the model's metadata does not say.",
        json_schema_extra={"nullable": True},  # BentoML's OpenAPI keeps only the first `anyOf` branch
    )
    families: list[str] | None = Field(
        description="The families the model attributes images to, in the column order of its "
        "`family_probabilities` output: `human` first, then the generator families it was trained "
        "on; null for a model without attribution.",
        json_schema_extra={"nullable": True},
    )
    metadata_fallbacks: list[str] = Field(
        default_factory=list,
        description="What the model's metadata lacked and what the service uses instead (empty "
        "for a model exported with the inconclusive band).",
    )


def square_input_size(contract: Mapping[str, str]) -> int:
    """The model's input side from its ONNX metadata; crops are square, so height and width must agree.

    Raises:
        ValueError: If the size is missing, or the input is not square (the service would mis-crop it).
    """
    if "input_height" not in contract:
        raise ValueError(f"the model's metadata has no 'input_height'; it has {sorted(contract)}")
    height = _number(contract, "input_height", int)
    width = _number(contract, "input_width", int) if "input_width" in contract else height
    if height != width:
        raise ValueError(f"the model's input is {height}x{width}; the service crops square tiles only")
    return height


def _number(contract: Mapping[str, str], key: str, kind: type[int] | type[float]) -> Any:
    """``contract[key]`` as an int or a float.

    Raises:
        ValueError: Naming the key and its value when it is not such a number.
    """
    try:
        return kind(contract[key])
    except ValueError:
        wanted = "an integer" if kind is int else "a number"
        raise ValueError(f"the model's metadata {key!r} is {contract[key]!r}, not {wanted}") from None


def _probability(contract: Mapping[str, str], key: str) -> float:
    """``contract[key]`` as a cut on P(AI): in [0, 1], or ``NEVER_CUT`` (that answer never given).

    Raises:
        ValueError: If it is not a number in [0, NEVER_CUT].
    """
    value = float(_number(contract, key, float))
    if not 0.0 <= value <= NEVER_CUT:
        raise ValueError(
            f"the model's metadata {key!r} is {value}; a threshold is a P(AI) in [0, 1] "
            f"(or {NEVER_CUT!r}: never reached)"
        )
    return value


def _thresholds(contract: Mapping[str, str], threshold: float, fallbacks: list[str]) -> Thresholds:
    """The band from the metadata, or both edges at ``threshold`` for a model without it.

    Raises:
        ValueError: If only one edge is given, or the edges are reversed.
    """
    present = [key for key in (THRESHOLD_HUMAN_KEY, THRESHOLD_AI_KEY) if key in contract]
    if not present:
        fallbacks.append(
            f"no {THRESHOLD_HUMAN_KEY!r}/{THRESHOLD_AI_KEY!r} (no inconclusive band): human below "
            f"and ai at or above {THRESHOLD_KEY!r} {threshold:.4f}"
        )
        return Thresholds(human=threshold, ai=threshold)
    if len(present) == 1:
        raise ValueError(
            f"the model's metadata has {present[0]!r} but not its other edge; the inconclusive band "
            f"needs both {THRESHOLD_HUMAN_KEY!r} and {THRESHOLD_AI_KEY!r}, or neither"
        )
    human, ai = _probability(contract, THRESHOLD_HUMAN_KEY), _probability(contract, THRESHOLD_AI_KEY)
    if human > ai:
        raise ValueError(
            f"the model's metadata has {THRESHOLD_HUMAN_KEY!r} {human} above {THRESHOLD_AI_KEY!r} {ai}; "
            "the band's lower edge must not exceed its upper edge"
        )
    return Thresholds(human=human, ai=ai)


def _max_tiles(
    contract: Mapping[str, str], settings: ServingSettings, model: str, fallbacks: list[str]
) -> int:
    """The tiling evaluation used, from the metadata; ``AIID_MAX_TILES`` only for a model without it.

    Raises:
        ValueError: If the metadata's value is not a positive integer.
    """
    if MAX_TILES_KEY not in contract:
        fallbacks.append(
            f"no {MAX_TILES_KEY!r}: images are tiled with {MAX_TILES_VARIABLE}={settings.max_tiles}, "
            "which may differ from the tiling its threshold was chosen on"
        )
        return settings.max_tiles
    tiles = int(_number(contract, MAX_TILES_KEY, int))
    if tiles < 1:
        raise ValueError(f"the model's metadata {MAX_TILES_KEY!r} is {tiles}; it must be at least 1")
    if "max_tiles" in settings.model_fields_set and settings.max_tiles != tiles:
        logger.warning(
            "%s=%d is ignored for %s: its thresholds were chosen on scores averaged over up to %d "
            "tiles per image, and the service tiles exactly as evaluation did so that its scores are "
            "evaluation's (%s applies only to models whose metadata has no %r)%s",
            MAX_TILES_VARIABLE,
            settings.max_tiles,
            model,
            tiles,
            MAX_TILES_VARIABLE,
            MAX_TILES_KEY,
            "; to score fewer tiles, export a model evaluated that way" if settings.max_tiles < tiles else "",
        )
    return tiles


def _calibration(contract: Mapping[str, str], fallbacks: list[str]) -> dict[str, Any] | None:
    """The calibration record (a JSON object in the metadata), or None for a model without one.

    Raises:
        ValueError: If the value is not a JSON object.
    """
    if CALIBRATION_KEY not in contract:
        fallbacks.append(
            f"no {CALIBRATION_KEY!r}: P(AI) is the model's raw output, not known to be calibrated"
        )
        return None
    try:
        record = json.loads(contract[CALIBRATION_KEY])
    except json.JSONDecodeError as error:
        raise ValueError(
            f"the model's metadata {CALIBRATION_KEY!r} is not JSON ({error}): {contract[CALIBRATION_KEY]!r}"
        ) from None
    if not isinstance(record, dict):
        raise ValueError(
            f"the model's metadata {CALIBRATION_KEY!r} must be a JSON object such as "
            f'{{"method": "temperature", "temperature": 1.7}}; got {contract[CALIBRATION_KEY]!r}'
        )
    return record


def _families(contract: Mapping[str, str], outputs: OutputShapes, model: str) -> list[str] | None:
    """The names of the attribution output's columns, or None for a model that does not attribute.

    A model attributes when it has the output ``family_probabilities`` and its metadata names its
    columns (``families``); a model with only one of the two answers without attribution (logged).

    Raises:
        ValueError: If ``families`` is not a JSON list of distinct names with ``human`` first, one
            for each column of the output, or the output's number of columns is not fixed.
    """
    shape = outputs.get(FAMILY_OUTPUT_NAME)
    if shape is None or FAMILIES_KEY not in contract:
        if shape is not None or FAMILIES_KEY in contract:
            has, lacks = (
                (f"the output {FAMILY_OUTPUT_NAME!r}", f"the metadata {FAMILIES_KEY!r}")
                if shape is not None
                else (f"the metadata {FAMILIES_KEY!r}", f"the output {FAMILY_OUTPUT_NAME!r}")
            )
            logger.warning("%s has %s but not %s: it answers without attribution", model, has, lacks)
        return None
    raw = contract[FAMILIES_KEY]
    try:
        families = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"the model's metadata {FAMILIES_KEY!r} is not JSON ({error}): {raw!r}") from None
    if not isinstance(families, list) or not all(isinstance(name, str) for name in families):
        raise ValueError(
            f"the model's metadata {FAMILIES_KEY!r} must be a JSON list of family names such as "
            f'["{HUMAN_FAMILY}", "diffusion", "gan"]; got {raw!r}'
        )
    match list(shape):
        case [_, int() as columns]:
            pass
        case _:
            raise ValueError(
                f"the model's output {FAMILY_OUTPUT_NAME!r} has shape {list(shape)}; it must be [N, K] "
                "with K, the number of families, fixed"
            )
    if len(families) != columns:
        raise ValueError(
            f"the model's metadata {FAMILIES_KEY!r} names {len(families)} families {families}, but its "
            f"output {FAMILY_OUTPUT_NAME!r} has {columns} columns; it must name one for each column"
        )
    if families[:1] != [HUMAN_FAMILY] or len(set(families)) != len(families):
        raise ValueError(
            f"the model's metadata {FAMILIES_KEY!r} is {families}; the names must be distinct, "
            f"with {HUMAN_FAMILY!r} (the column of human-made images) first"
        )
    return families


def describe_model(
    contract: Mapping[str, str],
    outputs: OutputShapes,
    model_name: str,
    model_version: str,
    settings: ServingSettings,
) -> ModelDescription:
    """Read the served model's ONNX metadata into its description, with fallbacks for older models.

    Args:
        contract: The ONNX model's metadata (``custom_metadata_map``).
        outputs: The model's outputs and their shapes (whether it attributes, and to how many families).
        model_name: Registered model name.
        model_version: Registered model version.
        settings: The serving settings (``max_tiles`` is the fallback tiling).

    Returns:
        The description every endpoint scores and words its answers by.

    Raises:
        ValueError: If the metadata lacks the input size or ``threshold``, or a value is malformed
            (the message names the key, its value and what is accepted), or ``families`` does not
            fit the attribution output.
    """
    if THRESHOLD_KEY not in contract:
        raise ValueError(
            f"the model's metadata has no {THRESHOLD_KEY!r} (it has {sorted(contract)}); "
            "serve a model exported by the export pipeline"
        )
    fallbacks: list[str] = []
    threshold = _probability(contract, THRESHOLD_KEY)
    label = f"{model_name} v{model_version}"
    description = ModelDescription(
        model_name=model_name,
        model_version=model_version,
        input_size=square_input_size(contract),
        threshold=threshold,
        thresholds=_thresholds(contract, threshold, fallbacks),
        max_tiles=_max_tiles(contract, settings, label, fallbacks),
        calibration=_calibration(contract, fallbacks),
        families=_families(contract, outputs, label),
        metadata_fallbacks=fallbacks,
    )
    for fallback in fallbacks:
        logger.warning("%s predates the calibrated, abstaining contract: %s", label, fallback)
    return description
