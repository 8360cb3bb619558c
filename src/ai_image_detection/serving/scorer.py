"""The scorer service, where the served model runs (``bentoml serve`` starts it for the Detector).

The model is the registry's champion, imported into the BentoML store by
``kedro run --pipelines package`` under ``AIID_MODEL_TAG``; its input size, tiling, thresholds,
calibration and attribution come from its ONNX metadata
(:mod:`ai_image_detection.serving.model_contract`).
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

SETTINGS = ServingSettings()
"""The settings of both services, read from the ``AIID_*`` environment once, at import."""


@bentoml.service(name="ai_image_scorer", traffic={"timeout": 60}, workers=1)
class Scorer:
    """The champion ONNX model behind one batchable API: the only place the model runs.

    Served as its own process (a dependency of
    :class:`~ai_image_detection.serving.service.Detector`), so ONNX Runtime's threads never compete
    with the decoding of uploads, and crops from concurrent requests are merged into one
    ``session.run`` by BentoML's adaptive batching (the arrays travel pickled, not as JSON).
    """

    bento_model = bentoml.models.BentoModel(SETTINGS.model_tag)

    def __init__(self) -> None:
        """Load the ONNX model, read its contract from the metadata, warm it up.

        Raises:
            ValueError: If the model's metadata is incomplete or malformed (the message says which key).
        """
        self.session = onnx_session(self.bento_model.path_of("model.onnx"), spinning=False)
        metadata = self.bento_model.info.metadata
        self.model = describe_model(
            onnx_metadata(self.session),
            {output.name: output.shape for output in self.session.get_outputs()},
            model_name=str(metadata.get("registered_model", self.bento_model.tag.name)),
            model_version=str(metadata.get("registered_version", self.bento_model.tag.version)),
            settings=SETTINGS,
        )
        self.outputs = [OUTPUT_NAME] if self.model.families is None else [OUTPUT_NAME, FAMILY_OUTPUT_NAME]
        # the first run allocates and plans; BentoML serves only once __init__ has returned
        self._infer(np.zeros((1, self.model.input_size, self.model.input_size, 3), dtype=np.uint8))
        logger.info(
            "scoring with %s v%s (%d px, up to %d tiles; human below %.4f, ai from %.4f, forced-choice "
            "threshold %.4f; calibration %s; attribution %s), batching %s",
            self.model.model_name,
            self.model.model_version,
            self.model.input_size,
            self.model.max_tiles,
            self.model.thresholds.human,
            self.model.thresholds.ai,
            self.model.threshold,
            json.dumps(self.model.calibration),
            "off" if self.model.families is None else f"to {json.dumps(self.model.families)}",
            f"up to {SETTINGS.max_batch_size} crops" if SETTINGS.batching else "off",
        )

    def _infer(self, crops: np.ndarray) -> np.ndarray:
        """Each crop's row (:meth:`score`) for crops ``[N, S, S, 3]``, straight from ONNX Runtime."""
        outputs = self.session.run(self.outputs, {INPUT_NAME: crops.astype(np.float32)})
        return np.concatenate(
            [np.asarray(output, dtype=np.float32).reshape(len(crops), -1) for output in outputs], axis=1
        )

    @bentoml.api(
        batchable=SETTINGS.batching,
        batch_dim=0,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def score(self, crops: np.ndarray) -> np.ndarray:
        """A row per crop of a uint8 ``[N, S, S, 3]`` array: the API every endpoint scores through.

        Each row is the crop's P(AI), then, for a model that attributes, its probability of each of
        ``families`` (``[N, 1 + K]``); ``[N, 1]`` for a model without attribution.
        """
        size = self.model.input_size
        if crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be [N, {size}, {size}, 3], got {list(crops.shape)}")
        return self._infer(crops)

    @bentoml.api
    def describe(self) -> ModelDescription:
        """The served model: registry name and version, input size, thresholds, tiling, calibration."""
        return self.model
