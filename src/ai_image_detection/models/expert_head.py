"""A probe's expert heads: logistic regressions fitted to convergence, joined by max logit.

The probe's main head learns from every view of the training tiles, re-shared ones (blurred,
shrunk, re-compressed) included; one head for all of them compromises: what survives blur and
down-scaling in the up-scaler families transfers poorly to diffusion images, and what transfers
to them does not survive blur. An *expert* learns some views in both classes and sees every other
tile as human only, so that it learns to leave those to the other heads: images as generators
publish them (clean and re-compressed), or as they are re-shared (blurred, shrunk). Each is fitted
as CLIP's linear probes are (Radford et al., 2021): the whole objective minimised by L-BFGS, here
the product's loss, binary cross-entropy plus ``alpha * (mean(p) - beta) ** 2``, with an L2
penalty on the weights. The detector's logit is the largest of the heads' (an image is as AI as
the most confident head finds it); :func:`with_experts` builds that head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import keras
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, OUTPUT_NAME

MAIN_LAYER = "main_logit"
EXPERT_PREFIX = "expert_"
MAX_ITERATIONS = 2000
FEATURE_RANK = 2


@dataclass(frozen=True)
class ExpertFit:
    """A fitted expert: ``logit = ((features - mean) / scale) @ weights + bias``."""

    mean: NDArray[np.float32]
    scale: NDArray[np.float32]
    weights: NDArray[np.float32]
    bias: float
    iterations: int
    converged: bool
    loss: float

    def widened(self, columns: NDArray[np.int64], width: int) -> ExpertFit:
        """The same expert on a longer feature vector, of which it reads ``columns`` (the rest weigh 0)."""
        mean, scale = np.zeros(width, np.float32), np.ones(width, np.float32)
        weights = np.zeros(width, np.float32)
        mean[columns], scale[columns], weights[columns] = self.mean, self.scale, self.weights
        return replace(self, mean=mean, scale=scale, weights=weights)


def fit_expert(
    features: NDArray[np.float32], labels: NDArray[np.float32], l2: float, alpha: float, beta: float
) -> ExpertFit:
    """Minimise ``mean BCE + alpha * (mean(p) - beta) ** 2 + l2 / 2 * |w| ** 2`` on standardised features.

    Args:
        features: ``[N, D]`` feature rows.
        labels: ``[N]`` 1 for AI, 0 for human.
        l2: Weight of the L2 penalty (the bias is not penalised).
        alpha: Weight of the mean-prediction term.
        beta: Its target mean prediction.

    Returns:
        The expert (its standardisation, weights and bias), and how the fit ended.

    Raises:
        ValueError: If the rows do not hold both classes or the shapes disagree.
    """
    if features.ndim != FEATURE_RANK or len(features) != len(labels):
        raise ValueError(f"features {features.shape} and labels {labels.shape} do not match")
    if not 0 < float(np.mean(labels)) < 1:
        raise ValueError("the expert needs AI and human rows")
    x = features.astype(np.float64)
    mean, scale = x.mean(axis=0), np.maximum(x.std(axis=0), 1e-6)
    x = (x - mean) / scale
    y = labels.astype(np.float64)

    def objective(params: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        weights, bias = params[:-1], params[-1]
        logits = x @ weights + bias
        probabilities = expit(logits)
        gap = float(probabilities.mean()) - beta
        loss = -np.mean(y * log_expit(logits) + (1 - y) * log_expit(-logits))
        loss += alpha * gap**2 + 0.5 * l2 * float(weights @ weights)
        dlogits = (probabilities - y + 2 * alpha * gap * probabilities * (1 - probabilities)) / len(y)
        gradient = np.append(x.T @ dlogits + l2 * weights, dlogits.sum())
        return float(loss), gradient

    found = minimize(
        objective,
        np.zeros(x.shape[1] + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": MAX_ITERATIONS},
    )
    return ExpertFit(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weights=found.x[:-1].astype(np.float32),
        bias=float(found.x[-1]),
        iterations=int(found.nit),
        converged=bool(found.success),
        loss=float(found.fun),
    )


def with_experts(head: keras.Model, experts: Mapping[str, ExpertFit]) -> keras.Model:
    """The probe head whose ``probability_ai`` is ``sigmoid(max(main logit, every expert's logit))``.

    The main head's ``probability_ai`` weights are copied into a linear layer (its logit); each
    expert is its own standardisation and a linear layer ``expert_<name>``; ``family_probabilities``, when
    the head has them, are the main head's.

    Args:
        head: A trained :func:`~ai_image_detection.models.zoo.probe_head`.
        experts: The fitted experts by name (at least one).

    Returns:
        A model with the head's input and outputs.

    Raises:
        ValueError: If there is no expert.
    """
    if not experts:
        raise ValueError("with_experts needs at least one expert")
    features = head.input
    standardised = head.get_layer("standardise")(features)
    main_layer = keras.layers.Dense(1, dtype="float32", name=MAIN_LAYER, trainable=False)
    logits = [main_layer(standardised)]
    main_layer.set_weights(head.get_layer(OUTPUT_NAME).get_weights())
    for name, expert in experts.items():
        standardise = keras.layers.Normalization(
            mean=expert.mean.tolist(),
            variance=(expert.scale**2).tolist(),
            name=f"{EXPERT_PREFIX}{name}_standardise",
        )
        layer = keras.layers.Dense(1, dtype="float32", name=f"{EXPERT_PREFIX}{name}", trainable=False)
        logits.append(layer(standardise(features)))
        layer.set_weights([expert.weights[:, None], np.array([expert.bias], np.float32)])
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)(
        keras.layers.Maximum(name="most_confident_head")(logits)
    )
    if isinstance(head.output, list):
        families = head.get_layer(FAMILY_OUTPUT_NAME)(standardised)
        return keras.Model(features, [probability, families], name="probe_head")
    return keras.Model(features, probability, name="probe_head")
