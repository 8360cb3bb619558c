"""Platt scaling as a Keras layer, so the exported detector outputs calibrated probabilities."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from ai_image_detection.calibration import EPSILON, PlattScaling


@keras.saving.register_keras_serializable(package="ai_image_detection")
class PlattCalibration(keras.layers.Layer):
    """``sigmoid(slope · logit(p) + intercept)`` of a probability ``p`` (clipped to avoid infinities)."""

    def __init__(self, slope: float = 1.0, intercept: float = 0.0, **kwargs: Any) -> None:
        """Store the two coefficients (see :class:`ai_image_detection.calibration.PlattScaling`)."""
        super().__init__(**kwargs)
        self.slope = float(slope)
        self.intercept = float(intercept)

    def call(self, probabilities: Any) -> Any:
        """Calibrate ``probabilities``."""
        clipped = ops.clip(probabilities, EPSILON, 1 - EPSILON)
        logits = ops.log(clipped) - ops.log(1 - clipped)  # no log1p: ONNX has no such operator
        return ops.sigmoid(self.slope * logits + self.intercept)

    def get_config(self) -> dict[str, Any]:
        """The layer's configuration, for saving."""
        return {**super().get_config(), "slope": self.slope, "intercept": self.intercept}


def calibrated_detector(model: keras.Model, scaling: PlattScaling) -> keras.Model:
    """The detector with P(AI) calibrated: same input, first output ``sigmoid(a · logit(p) + b)``.

    Args:
        model: A trained detector (raw 0–255 RGB in, P(AI) out, and attribution when it has it).
        scaling: The fitted calibration.

    Returns:
        A model sharing ``model``'s layers and weights; the attribution output passes unchanged.
    """
    first, *others = model.outputs
    calibrated = PlattCalibration(scaling.slope, scaling.intercept, dtype="float32", name="calibrated")(first)
    return keras.Model(
        model.inputs, [calibrated, *others] if others else calibrated, name=f"{model.name}_calibrated"
    )
