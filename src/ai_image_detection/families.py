"""Generator families in the manifest: which pairs to hold out, which families a model saw.

A pair is an AI image and its content twin (``pair`` column); holding a family out means holding
out its pairs whole, so that neither the family nor the twins' crops of it reach training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ai_image_detection.contract import FEEDBACK_FAMILY, HUMAN_FAMILY, UNKNOWN_GENERATOR, generator_family

CLEAN_VIEW = "clean"
"""The ``view`` of an image as stored; a probe also caches (and its folds score) re-shared views."""


def families_of(manifest: pd.DataFrame) -> pd.Series:
    """The generator family of every row (``family`` of ``family/model``)."""
    return manifest["generator"].map(generator_family)


def held_out_pairs(manifest: pd.DataFrame, families: list[str]) -> pd.Series:
    """Which rows belong to a pair holding an image of one of ``families`` (the AI image and its twin).

    Args:
        manifest: Rows with ``pair`` and ``generator``.
        families: Generator families to hold out.

    Returns:
        A boolean mask aligned with ``manifest``.

    Raises:
        ValueError: If a family is not in the data (a typo would otherwise hold out nothing).
    """
    family = families_of(manifest)
    missing = sorted(set(families) - set(family))
    if missing:
        raise ValueError(
            f"unseen families {missing} are not in the data; families present: {sorted(set(family))} "
            "(for data without a generator column, set ingestion.unseen_families: [])"
        )
    pairs = set(manifest.loc[family.isin(families), "pair"])
    return manifest["pair"].isin(pairs)


def trained_ai_families(manifest: pd.DataFrame) -> list[str]:
    """The known generator families of the AI images in the train and validation splits, sorted.

    ``feedback`` is no generator family (users say an image is AI, not what made it): like
    ``unknown`` it is neither attributed nor held out in turn.
    """
    return _ai_families(manifest, ["train", "validation"])


def unseen_ai_families(manifest: pd.DataFrame) -> list[str]:
    """The known generator families of the AI images in the unseen split (held out of training), sorted."""
    return _ai_families(manifest, ["unseen"])


def _ai_families(manifest: pd.DataFrame, splits: list[str]) -> list[str]:
    rows = manifest[manifest["split"].isin(splits) & (manifest["label"] == 1)]
    return sorted(set(families_of(rows)) - {UNKNOWN_GENERATOR, FEEDBACK_FAMILY})


def without_family(manifest: pd.DataFrame, family: str) -> pd.DataFrame:
    """The manifest of a leave-one-family-out fold: ``family``'s train and validation pairs become ``unseen``.

    Pairs already unseen stay unseen; test rows are dropped (the fold is judged on the held-out
    family only).
    """
    fold = manifest[manifest["split"] != "test"].copy()
    fold.loc[held_out_pairs(fold, [family]) & fold["split"].isin(["train", "validation"]), "split"] = "unseen"
    return fold


def attribution_families(manifest: pd.DataFrame) -> list[str]:
    """The attribution columns a model trained on ``manifest`` gets: ``human``, then its AI families.

    Empty when no AI image of train and validation has a known generator (nothing to attribute to).
    """
    families = trained_ai_families(manifest)
    return [HUMAN_FAMILY, *families] if families else []


def family_targets(rows: pd.DataFrame, families: Sequence[str]) -> np.ndarray:
    """The attribution target of each row: its column in ``families``, or -1 when it has none.

    A human image is ``human``; an AI image is its generator family, or -1 (ignored by the
    loss, left out of attribution accuracy) when that family is unknown or not a column.

    Args:
        rows: Rows with ``label`` and ``generator``.
        families: Output of :func:`attribution_families`.

    Returns:
        ``int32`` targets aligned with ``rows``.
    """
    column = {name: index for index, name in enumerate(families)}
    names = families_of(rows).where(rows["label"] == 1, HUMAN_FAMILY)
    return names.map(lambda name: column.get(name, -1)).to_numpy(dtype=np.int32)
