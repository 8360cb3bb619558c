"""A probe's second detector head: a logistic regression fitted to convergence, joined by max logit.

The probe's main head learns from every view of the training tiles, re-shared ones (blurred,
shrunk, re-compressed) included, so that it survives re-sharing; what survives blur and
down-scaling in the up-scaler families transfers poorly to diffusion images. The *expert* sees
images as generators publish them: the clean tiles and the re-compressed views of both classes,
and the blurred or shrunk views of human images only, so that it learns to leave those to the
main head. It is fitted as CLIP's linear probes are (Radford et al., 2021): the whole objective
minimised by L-BFGS, here the product's loss, binary cross-entropy plus
``alpha * (mean(p) - beta) ** 2``, with an L2 penalty on the weights. The detector's logit is the
larger of the two heads' (an image is as AI as the more confident head finds it);
:func:`with_expert` builds that head.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from numpy.typing import NDArray
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from ai_image_detection.contract import FAMILY_OUTPUT_NAME, OUTPUT_NAME

MAIN_LAYER = "main_logit"
EXPERT_LAYER = "expert_logit"
MAX_ITERATIONS = 2000
FEATURE_RANK = 2


@dataclass(frozen=True)
class ExpertFit:
    """A fitted expert on raw features, its standardisation folded in: ``features @ kernel + bias``."""

    kernel: NDArray[np.float32]
    bias: float
    iterations: int
    converged: bool
    loss: float


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
        The expert on raw features, and how the fit ended.

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
        dlogits = (probabilities - y) / len(y) + 2 * alpha * gap * probabilities * (1 - probabilities) / len(
            y
        )
        gradient = np.append(x.T @ dlogits + l2 * weights, dlogits.sum())
        return float(loss), gradient

    found = minimize(
        objective,
        np.zeros(x.shape[1] + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": MAX_ITERATIONS},
    )
    weights, bias = found.x[:-1], found.x[-1]
    kernel = weights / scale
    return ExpertFit(
        kernel=kernel.astype(np.float32),
        bias=float(bias - kernel @ mean),
        iterations=int(found.nit),
        converged=bool(found.success),
        loss=float(found.fun),
    )


def with_expert(head: keras.Model, expert: ExpertFit) -> keras.Model:
    """The probe head whose ``probability_ai`` is ``sigmoid(max(main logit, expert logit))``.

    The main head's ``probability_ai`` weights are copied into a linear layer (its logit); the expert reads
    the raw features; ``family_probabilities``, when the head has them, are the main head's.

    Args:
        head: A trained :func:`~ai_image_detection.models.zoo.probe_head`.
        expert: The fitted expert.

    Returns:
        A model with the head's input and outputs.
    """
    features = head.input
    standardised = head.get_layer("standardise")(features)
    main_layer = keras.layers.Dense(1, dtype="float32", name=MAIN_LAYER, trainable=False)
    main_logit = main_layer(standardised)
    main_layer.set_weights(head.get_layer(OUTPUT_NAME).get_weights())
    expert_layer = keras.layers.Dense(1, dtype="float32", name=EXPERT_LAYER, trainable=False)
    expert_logit = expert_layer(features)
    expert_layer.set_weights([expert.kernel[:, None], np.array([expert.bias], np.float32)])
    probability = keras.layers.Activation("sigmoid", dtype="float32", name=OUTPUT_NAME)(
        keras.layers.Maximum(name="either_head")([main_logit, expert_logit])
    )
    if isinstance(head.output, list):
        families = head.get_layer(FAMILY_OUTPUT_NAME)(standardised)
        return keras.Model(features, [probability, families], name="probe_head")
    return keras.Model(features, probability, name="probe_head")
