"""The detector's two heads on a feature vector: P(AI) and generator attribution.

``probability_ai`` (``Dense(1, sigmoid)``) is the contract's first output. ``family_probabilities``
(:class:`FamilyAttribution`) is a softmax over the generator families the model was trained on
plus ``human``; the layer carries the family names, so export writes them into the ONNX metadata
from the model itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, HUMAN_FAMILY, OUTPUT_NAME


@keras.saving.register_keras_serializable(package="ai_image_detection")
class FamilyAttribution(keras.layers.Layer):
    """``softmax(Dense(len(families)))``: which training family (or ``human``) an image most resembles."""

    def __init__(self, families: Sequence[str], **kwargs: Any) -> None:
        """Create the layer.

        Args:
            families: Column names, ``human`` first, then the AI families.
            **kwargs: Keras layer arguments (``name``, ``dtype``).

        Raises:
            ValueError: If ``human`` is not first, a name repeats, or there is no AI family.
        """
        super().__init__(**kwargs)
        families = list(families)
        if families[:1] != [HUMAN_FAMILY] or len(families) == 1 or len(set(families)) != len(families):
            raise ValueError(
                f"attribution needs {HUMAN_FAMILY!r} first, then at least one AI family, "
                f"no repeats: {families}"
            )
        self.families = families
        self.logits = keras.layers.Dense(len(families), dtype=self.dtype_policy, name="logits")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Build the dense layer."""
        self.logits.build(input_shape)

    def call(self, features: Any) -> Any:
        """Family probabilities ``[N, len(families)]`` of ``features`` ``[N, D]``."""
        return keras.ops.softmax(self.logits(features), axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``[N, len(families)]``."""
        return (input_shape[0], len(self.families))

    def get_config(self) -> dict[str, Any]:
        """The layer's configuration, for saving."""
        return {**super().get_config(), "families": self.families}


def detector_outputs(
    features: keras.KerasTensor, dropout: float, families: Sequence[str]
) -> list[keras.KerasTensor]:
    """Dropout, then ``probability_ai`` and (when there are families) ``family_probabilities``.

    Args:
        features: ``[N, D]`` pooled features.
        dropout: Dropout rate before both heads.
        families: Attribution columns (``human`` first); empty for a detector without attribution
            (data whose AI images have no known generator).

    Returns:
        ``[probability_ai]`` or ``[probability_ai, family_probabilities]``.
    """
    dropped = keras.layers.Dropout(dropout, name="dropout")(features)
    outputs = [keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=OUTPUT_NAME)(dropped)]
    if families:
        outputs.append(FamilyAttribution(families, dtype="float32", name=FAMILY_OUTPUT_NAME)(dropped))
    return outputs


def model_families(model: keras.Model) -> list[str]:
    """The attribution columns of a detector (``[]`` without an attribution head), nested heads included."""
    for layer in model.layers:
        if isinstance(layer, FamilyAttribution):
            return list(layer.families)
        if isinstance(layer, keras.Model) and (families := model_families(layer)):
            return families
    return []
