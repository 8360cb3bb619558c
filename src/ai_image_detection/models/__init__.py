"""Framework code for the detector: backbones, heads and the loss (no I/O).

Importing this package registers the custom loss with Keras, so saved models load by name.
"""

from ai_image_detection.models.calibration import PlattCalibration, calibrated_detector
from ai_image_detection.models.loss import BCEWithPriorPenalty
from ai_image_detection.models.zoo import DetectorSpec, WeightsUnavailableError, build_detector

__all__ = [
    "BCEWithPriorPenalty",
    "DetectorSpec",
    "PlattCalibration",
    "WeightsUnavailableError",
    "build_detector",
    "calibrated_detector",
]
