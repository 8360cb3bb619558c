"""The served model's metadata, read in one place: today's contract, older models' fallbacks, clear errors.

Whether a model attributes depends on its outputs too: their shapes are given as ONNX Runtime
reports them (``[N, K]`` with a named batch dimension).
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import settings_from

from ai_image_detection.contract import NEVER_CUT
from ai_image_detection.serving.model_contract import (
    ModelDescription,
    OutputShapes,
    describe_model,
    square_input_size,
)

CALIBRATION = {"method": "temperature", "temperature": 1.7, "ece_before": 0.12, "ece_after": 0.03}
FAMILIES = ["human", "diffusion", "gan"]
CURRENT = {
    "input_height": "96",
    "input_width": "96",
    "class_names": '["human", "ai"]',
    "threshold": "0.52",
    "threshold_human": "0.35",
    "threshold_ai": "0.7",
    "max_tiles": "5",
    "calibration": json.dumps(CALIBRATION),
    "families": json.dumps(FAMILIES),
}
LEGACY = {"input_height": "96", "input_width": "96", "threshold": "0.52"}
OUTPUTS: OutputShapes = {"probability_ai": ["unk__0", 1], "family_probabilities": ["unk__0", 3]}
"""A model that attributes: P(AI) and three families."""
PROBABILITY_ONLY: OutputShapes = {"probability_ai": ["unk__0", 1]}
"""A model exported before attribution."""


def describe(
    contract: dict[str, str], environ: dict[str, str] | None = None, outputs: OutputShapes = OUTPUTS
) -> ModelDescription:
    return describe_model(contract, outputs, "ai-image-detector", "3", settings_from(environ or {}))


def test_a_current_model_is_described_by_its_metadata_alone(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = describe(CURRENT)
    assert (model.input_size, model.threshold, model.max_tiles) == (96, 0.52, 5)
    assert (model.thresholds.human, model.thresholds.ai) == (0.35, 0.7)
    assert model.calibration == CALIBRATION
    assert model.families == FAMILIES
    assert model.metadata_fallbacks == [] and not caplog.records


def test_a_band_that_never_answers_ai_is_a_valid_contract() -> None:
    model = describe({**CURRENT, "threshold_ai": repr(NEVER_CUT)})
    assert model.thresholds.ai == NEVER_CUT > 1.0, "no P(AI), not even a saturated 1.0, reaches it"


def test_an_older_model_falls_back_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        model = describe(LEGACY, {"AIID_MAX_TILES": "7"}, PROBABILITY_ONLY)
    assert (model.thresholds.human, model.thresholds.ai) == (0.52, 0.52), "no band: both edges at threshold"
    assert (model.max_tiles, model.calibration) == (7, None), "tiling from AIID_MAX_TILES"
    assert model.families is None, "no attribution output: no attribution"
    assert len(model.metadata_fallbacks) == 3
    assert "AIID_MAX_TILES=7" in caplog.text and "threshold_human" in caplog.text
    assert "calibration" in caplog.text and "ai-image-detector v3" in caplog.text


@pytest.mark.parametrize("setting", ["3", "9"])
def test_the_models_tiling_wins_over_the_setting_and_the_log_says_how(
    setting: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        model = describe(CURRENT, {"AIID_MAX_TILES": setting})
    assert model.max_tiles == 5, "scored as evaluation scored: the model's max_tiles"
    assert f"AIID_MAX_TILES={setting} is ignored" in caplog.text and "up to 5 tiles" in caplog.text
    assert ("export a model evaluated that way" in caplog.text) == (setting == "3")


def test_the_default_setting_is_not_reported_as_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        describe(CURRENT)
    assert "ignored" not in caplog.text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"threshold": None}, "no 'threshold'"),
        ({"threshold": "high"}, "'threshold' is 'high', not a number"),
        ({"threshold": "1.5"}, r"'threshold' is 1.5; a threshold is a P\(AI\) in \[0, 1\]"),
        ({"threshold_ai": None}, "has 'threshold_human' but not its other edge"),
        ({"threshold_human": "0.8"}, "'threshold_human' 0.8 above 'threshold_ai' 0.7"),
        ({"max_tiles": "0"}, "'max_tiles' is 0; it must be at least 1"),
        ({"max_tiles": "nine"}, "'max_tiles' is 'nine', not an integer"),
        ({"calibration": "temperature 1.7"}, "'calibration' is not JSON"),
        ({"calibration": "[1.7]"}, "'calibration' must be a JSON object"),
        ({"input_height": None}, "no 'input_height'"),
        ({"input_width": "128"}, "96x128; the service crops square tiles only"),
        ({"families": "human, diffusion, gan"}, "'families' is not JSON"),
        ({"families": '{"human": 0}'}, "'families' must be a JSON list of family names"),
        ({"families": '["human", 2, "gan"]'}, "'families' must be a JSON list of family names"),
        ({"families": '["human", "gan"]'}, "names 2 families .* has 3 columns"),
        (
            {"families": '["gan", "human", "diffusion"]'},
            r"with 'human' \(the column of human-made images\) first",
        ),
        ({"families": '["human", "gan", "gan"]'}, "the names must be distinct"),
    ],
)
def test_malformed_metadata_is_refused_at_load_naming_the_key(
    change: dict[str, str | None], message: str
) -> None:
    contract = {**CURRENT, **{key: value for key, value in change.items() if value is not None}}
    for key in [key for key, value in change.items() if value is None]:
        del contract[key]
    with pytest.raises(ValueError, match=message):
        describe(contract)


def test_an_attribution_output_of_unfixed_width_is_refused() -> None:
    outputs = {**OUTPUTS, "family_probabilities": ["unk__0", "families"]}
    with pytest.raises(ValueError, match=r"'family_probabilities' has shape \['unk__0', 'families'\]"):
        describe(CURRENT, outputs=outputs)


@pytest.mark.parametrize(
    ("contract", "outputs", "has", "lacks"),
    [
        (CURRENT, PROBABILITY_ONLY, "the metadata 'families'", "the output 'family_probabilities'"),
        (
            {key: value for key, value in CURRENT.items() if key != "families"},
            OUTPUTS,
            "the output 'family_probabilities'",
            "the metadata 'families'",
        ),
    ],
)
def test_half_an_attribution_is_none_and_logged(
    contract: dict[str, str], outputs: OutputShapes, has: str, lacks: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        model = describe(contract, outputs=outputs)
    assert model.families is None and model.metadata_fallbacks == []
    assert f"has {has} but not {lacks}: it answers without attribution" in caplog.text


def test_the_input_side_defaults_to_square() -> None:
    assert square_input_size({"input_height": "64"}) == 64
