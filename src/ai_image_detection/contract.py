"""The model contract shared by export and serving (README: "Export: the model contract").

Free of heavy imports: the serving image (no TensorFlow, no ``onnx``) imports it.

Input ``image`` float32 NHWC ``[N, H, W, 3]`` with raw 0–255 RGB (normalisation inside the
graph); output ``probability_ai`` ``[N, 1]``, calibrated on held-out data. H, W, the thresholds,
the tiling and the class names travel in the ONNX metadata (``input_height``, ``input_width``,
``threshold``, ``threshold_human``, ``threshold_ai``, ``max_tiles``, ``class_names``).

Attribution: a model may have a second output ``family_probabilities`` ``[N, K]``, a softmax over
the generator families it was trained on plus ``human``, whose names (in column order, ``human``
first) are the JSON list in the metadata key ``families``. An image's attribution is the mean of
its tiles' rows; its ``closest_family`` is the name of the largest entry. A model without that
output (older exports) answers without attribution.

An image's score is the mean P(AI) of its tiles (:mod:`ai_image_detection.tiling`); below
``threshold_human`` the answer is ``human``, at or above ``threshold_ai`` it is ``ai``, and in
between it is ``inconclusive``. ``threshold`` is the single best cut, for a forced choice
(``submission.csv``, F1). The upper edge may be :data:`NEVER_CUT`, just above 1: no score reaches
it, so the answer is never ``ai``; a lower edge of 0 means it is never ``human`` (the band found no
cut meeting its targets on that side).
"""

from typing import Final, Literal, get_args

INPUT_NAME: Final = "image"
OUTPUT_NAME: Final = "probability_ai"
FAMILY_OUTPUT_NAME: Final = "family_probabilities"
HUMAN_FAMILY: Final = "human"
CLASS_NAMES: Final = ("human", "ai")

THRESHOLD_KEY: Final = "threshold"
THRESHOLD_HUMAN_KEY: Final = "threshold_human"
THRESHOLD_AI_KEY: Final = "threshold_ai"
MAX_TILES_KEY: Final = "max_tiles"
NEVER_CUT: Final = 1.0 + 1e-9
"""A threshold above every P(AI), even a saturated 1.0: the answer at or above it is never given."""
CALIBRATION_KEY: Final = "calibration"
FAMILIES_KEY: Final = "families"

Verdict = Literal["human", "inconclusive", "ai"]
VERDICTS: Final[tuple[Verdict, ...]] = get_args(Verdict)
"""The answers, from the human side of the band to the AI side."""

UNKNOWN_GENERATOR: Final = "unknown"
"""The ``generator`` of an image whose origin the data does not say."""
FEEDBACK_FAMILY: Final = "feedback"
"""The generator family of images users sent as feedback: they say which class, not which generator."""


def verdict(probability_ai: float, threshold_human: float, threshold_ai: float) -> Verdict:
    """The answer for a calibrated score: ``human`` below the band, ``ai`` at or above it.

    Args:
        probability_ai: The image's calibrated P(AI).
        threshold_human: Lower edge of the inconclusive band.
        threshold_ai: Upper edge (equal to the lower one when there is no band).

    Returns:
        ``"human"``, ``"inconclusive"`` or ``"ai"``.
    """
    if probability_ai >= threshold_ai:
        return "ai"
    if probability_ai < threshold_human:
        return "human"
    return "inconclusive"


def generator_family(generator: str) -> str:
    """The family of a ``generator`` value (``family/model``, e.g. ``realcugan/up2x-conservative``)."""
    return generator.split("/", 1)[0] if generator else UNKNOWN_GENERATOR
