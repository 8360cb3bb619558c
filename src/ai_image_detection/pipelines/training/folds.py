"""The leave-one-family-out rotation: which families to hold out, what a fold scores, its table.

Shared by the folds of a whole detector and of a probe
(:func:`~ai_image_detection.pipelines.training.nodes.leave_one_family_out` and
:func:`~ai_image_detection.pipelines.training.nodes.leave_one_family_out_probe`).
"""

from __future__ import annotations

import logging

import pandas as pd

from ai_image_detection.families import held_out_pairs, trained_ai_families
from ai_image_detection.pipelines.training.params import CandidateParams, LeaveOneFamilyOutParams

logger = logging.getLogger(__name__)

HELD_OUT_SCORE_COLUMNS = ["fold", "path", "view", "label", "split", "generator", "probability_ai"]


def fold_recipe(candidate: CandidateParams, rotation: LeaveOneFamilyOutParams) -> CandidateParams:
    """The candidate's recipe with the rotation's epochs per fold, when it sets them."""
    return candidate if rotation.epochs is None else candidate.model_copy(update={"epochs": rotation.epochs})


def held_out_table(folds: list[pd.DataFrame]) -> pd.DataFrame:
    """The scored rows of every fold, in :data:`HELD_OUT_SCORE_COLUMNS` (empty without folds)."""
    if not folds:
        return pd.DataFrame(columns=HELD_OUT_SCORE_COLUMNS)
    return pd.concat(folds, ignore_index=True)[HELD_OUT_SCORE_COLUMNS]


def rotated_families(image_manifest: pd.DataFrame, rotation: LeaveOneFamilyOutParams) -> list[str]:
    """The families to hold out in turn; an error naming the trained ones for a family that is not."""
    available = trained_ai_families(image_manifest)
    families = available if rotation.families is None else rotation.families
    unknown = sorted(set(families) - set(available))
    if unknown:
        raise ValueError(
            f"cannot hold out {unknown}: the AI families in train and validation are {available}"
        )
    if not families:
        logger.warning("no generator families in train and validation: no leave-one-family-out folds")
    return families


def fold_scored_rows(image_manifest: pd.DataFrame, fold: pd.DataFrame, family: str) -> pd.DataFrame:
    """What a fold is scored on: its own validation images and the held-out family's pairs."""
    held_out = image_manifest[
        held_out_pairs(image_manifest, [family]) & image_manifest["split"].isin(["train", "validation"])
    ]
    return pd.concat(
        [fold[fold["split"] == "validation"].assign(split="validation"), held_out.assign(split="held_out")]
    )
