"""Calibration: make P(AI) mean what it says, and the band where the model abstains.

Platt scaling of each tile's logit, ``P = sigmoid(a · logit(p) + b)`` with ``a > 0`` (so the
order of scores, and with it AUROC, is kept), fitted on held-out images by minimising the
log-loss of the image scores the service computes (the mean of the calibrated tile scores)
against Platt's smoothed targets, which keep a small validation set from buying certainty.
It lives inside the exported graph, so every consumer of ``detector.onnx`` gets calibrated
scores. Pure NumPy/SciPy, no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from scipy.special import expit, logit

EPSILON = 2.0**-23
"""Tile probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before taking their logit (both bounds
exact in float32, so the exported graph and this module clip a saturated tile to the same value)."""


@dataclass(frozen=True)
class PlattScaling:
    """``P = sigmoid(slope · logit(p) + intercept)``; the identity is ``slope=1, intercept=0``."""

    slope: float = 1.0
    intercept: float = 0.0

    def __call__(self, probabilities: ArrayLike) -> np.ndarray:
        """Calibrated probabilities of tile scores ``probabilities``."""
        clipped = np.clip(np.asarray(probabilities, dtype=np.float64), EPSILON, 1 - EPSILON)
        return np.asarray(expit(self.slope * logit(clipped) + self.intercept))

    def image_scores(self, tile_scores: Sequence[np.ndarray]) -> np.ndarray:
        """Each image's calibrated score: the mean of its calibrated tiles (what the service computes)."""
        return np.array([float(np.mean(self(tiles))) for tiles in tile_scores])


def fit_platt(tile_scores: Sequence[np.ndarray], labels: ArrayLike) -> PlattScaling:
    """Fit Platt scaling on labelled held-out images.

    Args:
        tile_scores: Each image's raw tile probabilities.
        labels: Each image's label (1 = AI); both classes must be present.

    Returns:
        The fitted scaling (slope kept positive, so the ranking is unchanged).

    Raises:
        ValueError: If the images are not of both classes, or the counts differ.
    """
    y = np.asarray(labels, dtype=np.float64).ravel()
    if len(y) != len(tile_scores):
        raise ValueError(f"{len(tile_scores)} images but {len(y)} labels")
    if set(np.unique(y)) != {0.0, 1.0}:
        raise ValueError(f"calibration needs images of both classes, got labels {sorted(set(np.unique(y)))}")
    # Platt's (1999) smoothed targets: a small validation set cannot justify certainty, so the fit
    # aims at (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0 (no runaway slopes).
    positives, negatives = float(y.sum()), float(len(y) - y.sum())
    y = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    counts = np.array([len(tiles) for tiles in tile_scores])
    owner = np.repeat(np.arange(len(counts)), counts)
    logits = logit(np.clip(np.concatenate(tile_scores).astype(np.float64), EPSILON, 1 - EPSILON))

    def log_loss(theta: np.ndarray) -> float:
        tiles = expit(np.exp(theta[0]) * logits + theta[1])
        image = np.clip(np.bincount(owner, weights=tiles) / counts, EPSILON, 1 - EPSILON)
        return float(-np.mean(y * np.log(image) + (1 - y) * np.log(1 - image)))

    fitted = minimize(log_loss, x0=np.zeros(2), method="Nelder-Mead", options={"xatol": 1e-6, "fatol": 1e-9})
    return PlattScaling(slope=float(np.exp(fitted.x[0])), intercept=float(fitted.x[1]))
