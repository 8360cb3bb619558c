"""How a score becomes an answer: the band's edges, the confidence that is (or is not) claimed, the words.

A model that attributes also answers the closest training family: the largest of its tiles' mean.
"""

from __future__ import annotations

import numpy as np
import pytest

from ai_image_detection.contract import NEVER_CUT
from ai_image_detection.serving.answers import ImageFacts, judge, summary
from ai_image_detection.serving.model_contract import ModelDescription, Thresholds
from ai_image_detection.serving.provenance import Evidence, decide

CALIBRATION = {"method": "temperature", "temperature": 1.7}
MODEL = ModelDescription(
    model_name="ai-image-detector",
    model_version="3",
    input_size=64,
    threshold=0.5,
    thresholds=Thresholds(human=0.4, ai=0.6),
    max_tiles=9,
    calibration=CALIBRATION,
    families=None,
)
ATTRIBUTING = MODEL.model_copy(update={"families": ["human", "diffusion", "gan"]})
NOTHING = decide([], [])
PREDICTION_ID = "p-0123456789abcdef"
FACTS = ImageFacts(width=200, height=100, format="JPEG", frames=1, exif_rotated=False)


@pytest.mark.parametrize(
    ("probability", "label", "confidence"),
    [
        (0.1, "human", 0.9),
        (0.3999, "human", 0.6001),
        (0.4, "inconclusive", None),
        (0.5, "inconclusive", None),
        (0.5999, "inconclusive", None),
        (0.6, "ai", 0.6),
        (0.95, "ai", 0.95),
    ],
)
def test_human_below_the_band_ai_from_its_top_edge_inconclusive_between(
    probability: float, label: str, confidence: float | None
) -> None:
    answer = judge(probability, 9, FACTS, MODEL, NOTHING, PREDICTION_ID)
    assert answer.label == label
    assert answer.confidence == (None if confidence is None else pytest.approx(confidence))
    assert answer.probability_ai == probability
    assert (answer.thresholds, answer.threshold, answer.tiles, answer.calibrated) == (
        MODEL.thresholds,
        0.5,
        9,
        True,
    )


def test_a_band_that_never_answers_ai_leaves_even_a_saturated_score_inconclusive() -> None:
    never_ai = MODEL.model_copy(update={"thresholds": Thresholds(human=0.4, ai=NEVER_CUT)})
    saturated = judge(1.0, 9, FACTS, never_ai, NOTHING, PREDICTION_ID)
    assert saturated.label == "inconclusive"
    assert "band [40.0%, 100.0%] (the model never answers AI)" in saturated.summary
    assert judge(0.1, 9, FACTS, never_ai, NOTHING, PREDICTION_ID).label == "human"


def test_an_inconclusive_answer_claims_no_class_and_says_why() -> None:
    answer = judge(0.53, 9, FACTS, MODEL, NOTHING, PREDICTION_ID)
    assert answer.summary == (
        "Inconclusive: P(AI) 53.0% lies in the inconclusive band [40.0%, 60.0%), "
        "where the model is unreliable; no verdict."
    )
    (note,) = answer.notes  # above the forced-choice cut 0.5: no word on missing traces
    assert "inconclusive band" in note and "unreliable" in note and "no confidence" in note


def test_an_inconclusive_answer_on_the_human_side_says_a_missing_trace_is_no_evidence() -> None:
    answer = judge(0.42, 9, FACTS, MODEL, NOTHING, PREDICTION_ID)  # in the band, below the cut 0.5
    assert answer.label == "inconclusive"
    band_note, erased = answer.notes
    assert "inconclusive band" in band_note
    assert erased.startswith("no AI trace was found, but that is not evidence of a human")
    assert "re-compressing" in erased and "generators, which the model never saw" in erased


def test_a_decided_answer_states_its_confidence() -> None:
    assert judge(0.1, 1, FACTS, MODEL, NOTHING, PREDICTION_ID).summary == (
        "Likely human-made: P(AI) 10.0%, below the human threshold 40.0%; confidence 90.0%."
    )
    assert judge(0.8, 1, FACTS, MODEL, NOTHING, PREDICTION_ID).summary == (
        "Likely AI-generated: P(AI) 80.0%, at or above the AI threshold 60.0%; confidence 80.0%."
    )
    assert judge(0.8, 1, FACTS, MODEL, NOTHING, PREDICTION_ID).notes == []


def test_an_uncalibrated_model_without_a_band_says_so() -> None:
    legacy = MODEL.model_copy(update={"thresholds": Thresholds(human=0.5, ai=0.5), "calibration": None})
    answer = judge(0.5, 1, FACTS, legacy, NOTHING, PREDICTION_ID)
    assert (answer.label, answer.confidence, answer.calibrated) == ("ai", 0.5, False)
    assert any("no calibration" in note for note in answer.notes)
    assert "threshold 50.0%" in summary("inconclusive", 0.5, None, legacy.thresholds)


def test_a_model_without_attribution_answers_none() -> None:
    answer = judge(0.8, 1, FACTS, MODEL, NOTHING, PREDICTION_ID)
    assert (answer.closest_family, answer.closest_family_probability, answer.family_probabilities) == (
        None,
        None,
        None,
    )


def test_the_closest_family_is_the_largest_of_the_tiles_mean() -> None:
    tiles = np.array([[0.1, 0.5, 0.4], [0.1, 0.5, 0.4], [0.0, 0.1, 0.9]])  # diffusion wins 2 tiles of 3
    answer = judge(0.8, len(tiles), FACTS, ATTRIBUTING, NOTHING, PREDICTION_ID, tiles.mean(axis=0).tolist())
    expected = {"human": 0.2 / 3, "diffusion": 1.1 / 3, "gan": 1.7 / 3}
    assert answer.family_probabilities == pytest.approx(expected)
    assert list(answer.family_probabilities or {}) == ["human", "diffusion", "gan"], "the model's order"
    assert answer.closest_family == "gan", "the largest mean, not the most tiles won"
    assert answer.closest_family_probability == pytest.approx(1.7 / 3)


@pytest.mark.parametrize(
    ("model", "family_probabilities"),
    [(MODEL, [0.2, 0.8]), (ATTRIBUTING, None), (ATTRIBUTING, [0.2, 0.8])],
)
def test_family_probabilities_must_match_the_models_families(
    model: ModelDescription, family_probabilities: list[float] | None
) -> None:
    with pytest.raises(ValueError, match="do not match the model's families"):
        judge(0.8, 1, FACTS, model, NOTHING, PREDICTION_ID, family_probabilities)


def test_the_image_notes_are_kept() -> None:
    facts = ImageFacts(width=40, height=30, format="GIF", frames=3, exif_rotated=True)
    notes = judge(0.9, 1, facts, MODEL, NOTHING, PREDICTION_ID).notes
    assert [("first frame" in n, "zero-padded" in n, "EXIF" in n) for n in notes] == [
        (True, False, False),
        (False, True, False),
        (False, False, True),
    ]


def _evidence(source: str, claim: str, valid: bool | None, detail: str) -> Evidence:
    return Evidence.model_validate(
        {"source": source, "claim": claim, "valid": valid, "signed_by": None, "detail": detail, "fields": {}}
    )


def test_a_valid_declaration_of_ai_decides_and_the_pixels_score_is_still_told() -> None:
    declared = decide(
        [_evidence("c2pa", "ai", True, "A C2PA manifest signed by Test CA declares it AI-generated.")], []
    )
    answer = judge(0.1, 1, FACTS, MODEL, declared, PREDICTION_ID)
    assert (answer.label, answer.decided_by, answer.confidence, answer.probability_ai) == (
        "ai",
        "provenance",
        None,
        0.1,
    )
    assert answer.summary == (
        "AI-generated (declared): A C2PA manifest signed by Test CA declares it AI-generated; "
        "the pixels alone give P(AI) 10.0%."
    )
    assert (
        answer.notes[0]
        == "decided by the image's provenance (c2pa), not by the pixels, whose answer alone would be human"
    )
    assert (answer.prediction_id, answer.provenance) == (PREDICTION_ID, declared)


def test_an_invalid_declaration_or_a_camera_claim_never_decides() -> None:
    forged = decide([_evidence("c2pa", "ai", False, "A C2PA manifest whose signature does not verify.")], [])
    camera = decide([_evidence("exif", "capture", None, "EXIF names the camera Canon EOS R5.")], [])
    assert judge(0.1, 1, FACTS, MODEL, forged, PREDICTION_ID).model_dump(include={"label", "decided_by"}) == {
        "label": "human",
        "decided_by": "pixels",
    }
    answer = judge(0.9, 1, FACTS, MODEL, camera, PREDICTION_ID)
    assert (answer.label, answer.decided_by, answer.confidence) == ("ai", "pixels", 0.9)
    assert answer.notes[0].startswith("the metadata claims a camera capture; metadata is easy to forge")
