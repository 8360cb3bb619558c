"""Binary cross-entropy plus a prior penalty on the batch's mean prediction.

``Total = BCE(y, p) + α · (mean(p) − β)²``: the penalty pulls the batch's mean predicted
probability of "AI-generated" towards the target ratio β, which keeps the detector from
drifting to one class when the training mix and the deployment mix differ. With α = 0 it is
Keras' binary cross-entropy exactly.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ai_image_detection")
class BCEWithPriorPenalty(keras.losses.Loss):
    """``BCE(y, p) + alpha * (mean(p) - beta) ** 2``, serialisable by name.

    Registered with Keras, so a saved ``.keras`` model that uses it loads once this module
    is imported (``import ai_image_detection.models``), without ``custom_objects``.

    The penalty is a batch statistic: each sample's loss carries the same penalty term, so
    the default mean reduction gives exactly ``mean(BCE) + penalty``.
    """

    def __init__(
        self,
        alpha: float = 0.0,
        beta: float = 0.5,
        name: str = "bce_prior_penalty",
        reduction: str = "sum_over_batch_size",
        dtype: Any = None,
    ) -> None:
        """Create the loss.

        Args:
            alpha: Weight of the prior penalty (0 = plain binary cross-entropy).
            beta: Target mean probability of "AI-generated", in [0, 1].
            name: Loss name.
            reduction: Keras reduction over the batch.
            dtype: Dtype of the loss computation.

        Raises:
            ValueError: If ``alpha`` is negative or ``beta`` is outside [0, 1].
        """
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample loss: binary cross-entropy plus the (shared) batch penalty."""
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.reshape(
            ops.cast(y_true, y_pred.dtype), ops.shape(y_pred)
        )  # [N] labels vs [N, 1] outputs
        bce = keras.losses.binary_crossentropy(y_true, y_pred)
        if self.alpha == 0.0:
            return bce
        penalty = self.alpha * ops.square(ops.mean(y_pred) - self.beta)
        return bce + penalty

    def get_config(self) -> dict[str, Any]:
        """The constructor arguments, for serialisation."""
        return {**super().get_config(), "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="ai_image_detection")
class MaskedSparseCategoricalCrossentropy(keras.losses.Loss):
    """Sparse categorical cross-entropy that ignores targets below 0 (an AI image of unknown family).

    The mean is over the targets that count, so a batch with few attributable images weighs
    them as much as a batch full of them; a batch with none adds 0.
    """

    def __init__(self, name: str = "masked_sparse_cce", **kwargs: Any) -> None:
        """Create the loss (Keras loss arguments pass through)."""
        super().__init__(name=name, **kwargs)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        """Per-sample cross-entropy, 0 for ignored targets, scaled so the batch mean counts only the rest."""
        y_pred = ops.convert_to_tensor(y_pred)
        targets = ops.reshape(ops.cast(y_true, "int32"), (-1,))
        counted = ops.cast(targets >= 0, y_pred.dtype)
        cross_entropy = keras.losses.sparse_categorical_crossentropy(ops.maximum(targets, 0), y_pred)
        share = ops.sum(counted) / ops.cast(ops.shape(targets)[0], y_pred.dtype)
        return cross_entropy * counted / ops.maximum(share, 1e-6)
