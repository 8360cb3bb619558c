"""The served model: the champion ONNX file, described by its own metadata.

The model is the registry's champion, imported into the BentoML store by
``kedro run --pipelines package`` under ``AIID_MODEL_TAG``; its input size, tiling, thresholds,
calibration and attribution come from its ONNX metadata
(:mod:`ai_image_detection.serving.model_contract`). The
:class:`~ai_image_detection.serving.service.Detector` holds one :class:`Scorer` and calls it through
its :class:`~ai_image_detection.serving.batching.CropBatcher`, in the same process.
"""

import json
import logging

import bentoml
import numpy as np

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, INPUT_NAME, OUTPUT_NAME
from ai_image_detection.serving.model_contract import ModelDescription, describe_model
from ai_image_detection.serving.settings import ServingSettings

with bentoml.importing():
    from ai_image_detection.onnx_runtime import onnx_metadata, onnx_session

logger = logging.getLogger(__name__)


class Scorer:
    """The champion ONNX model: the only place the model runs.

    Attributes:
        model: What the model is and how its scores are read (thresholds, tiling, calibration, families).
    """

    def __init__(self, bento_model: bentoml.Model, settings: ServingSettings) -> None:
        """Load the ONNX model, read its contract from the metadata, warm it up on a full image's crops.

        Args:
            bento_model: The model in the BentoML store (``model.onnx`` and the registry's name and version).
            settings: The serving settings (fallback tiling for models exported before it was stored).

        Raises:
            ValueError: If the model's metadata is incomplete or malformed (the message says which key).
        """
        self.session = onnx_session(bento_model.path_of("model.onnx"), spinning=False)
        metadata = bento_model.info.metadata
        self.model: ModelDescription = describe_model(
            onnx_metadata(self.session),
            {output.name: output.shape for output in self.session.get_outputs()},
            model_name=str(metadata.get("registered_model", bento_model.tag.name)),
            model_version=str(metadata.get("registered_version", bento_model.tag.version)),
            settings=settings,
        )
        self.outputs = [OUTPUT_NAME] if self.model.families is None else [OUTPUT_NAME, FAMILY_OUTPUT_NAME]
        # the first run allocates and plans: done before the service reports ready
        size = self.model.input_size
        self.score(np.zeros((self.model.max_tiles, size, size, 3), dtype=np.uint8))
        logger.info(
            "scoring with %s v%s (%d px, up to %d tiles; human below %.4f, ai from %.4f, forced-choice "
            "threshold %.4f; calibration %s; attribution %s)",
            self.model.model_name,
            self.model.model_version,
            size,
            self.model.max_tiles,
            self.model.thresholds.human,
            self.model.thresholds.ai,
            self.model.threshold,
            json.dumps(self.model.calibration),
            "off" if self.model.families is None else f"to {json.dumps(self.model.families)}",
        )

    def score(self, crops: np.ndarray) -> np.ndarray:
        """A row per crop of a uint8 ``[N, S, S, 3]`` array: the call every endpoint scores through.

        Each row is the crop's P(AI), then, for a model that attributes, its probability of each of
        ``families`` (``[N, 1 + K]``); ``[N, 1]`` for a model without attribution.

        Raises:
            ValueError: If the crops are not ``[N, S, S, 3]`` at the model's input size ``S``.
        """
        size = self.model.input_size
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be [N, {size}, {size}, 3], got {list(crops.shape)}")
        outputs = self.session.run(self.outputs, {INPUT_NAME: crops.astype(np.float32)})
        return np.concatenate(
            [np.asarray(output, dtype=np.float32).reshape(len(crops), -1) for output in outputs], axis=1
        )
