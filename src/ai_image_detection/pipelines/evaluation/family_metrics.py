"""Per generator family and per stored file format: the answers on each; attribution; held-out scores.

The held-out families' scores are calibrated here; the band's targets hold on them (as stored and,
for a probe, re-shared), and on each stored format of validation, too.

All end up in a candidate's evaluation report
(:func:`~ai_image_detection.pipelines.evaluation.nodes.evaluate_candidate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from ai_image_detection.calibration import fit_platt
from ai_image_detection.contract import generator_family
from ai_image_detection.families import CLEAN_VIEW, family_targets
from ai_image_detection.metrics import answer_shares, answers_by_class

FAMILY_COLUMNS = ["split", "family", "label", "images", "roc_auc", "ai_rate", "inconclusive_rate"]
HELD_OUT_COLUMNS = ["fold", "path", "view", "label", "generator", "probability_ai"]
FORMAT_COLUMNS = [
    "split",
    "format",
    "human_images",
    "ai_images",
    "roc_auc",
    "human_ai_rate",
    "human_inconclusive_rate",
    "ai_recall",
]


def calibrated_held_out_families(held_out_family_scores: pd.DataFrame) -> pd.DataFrame:
    """The images of every held-out family, each scored by the fold that never saw it, calibrated.

    A fold's scores go through a Platt scaling fitted on that fold's own validation images, as the
    shipped model's are on its validation images as stored, so that every fold speaks the
    calibrated scale the band is chosen on. A fold's score is already the mean of its raw tile
    scores, so each image counts as one tile of the fit.

    Args:
        held_out_family_scores: The training pipeline's leave-one-family-out scores (``fold``,
            ``path``, ``view``, ``label``, ``split`` of ``validation`` or ``held_out``,
            ``generator``, ``probability_ai``).

    Returns:
        The ``held_out`` rows of every view in :data:`HELD_OUT_COLUMNS`, ``probability_ai``
        calibrated (empty without folds).
    """
    folds = []
    for _, fold in held_out_family_scores.groupby("fold", sort=True):
        validation = fold[(fold["split"] == "validation") & (fold["view"] == CLEAN_VIEW)]
        scaling = fit_platt(
            [np.array([score]) for score in validation["probability_ai"]], validation["label"].astype(int)
        )
        held_out = fold[fold["split"] == "held_out"]
        folds.append(held_out.assign(probability_ai=scaling(held_out["probability_ai"].to_numpy())))
    if not folds:
        return pd.DataFrame(columns=HELD_OUT_COLUMNS)
    return pd.concat(folds, ignore_index=True)[HELD_OUT_COLUMNS]


def family_table(predictions: pd.DataFrame, band: tuple[float, float]) -> pd.DataFrame:
    """One row per split and generator family: how the calibrated answers fare on it.

    For an AI family: AUROC against the human images of the same split, recall at
    ``threshold_ai`` and the share left inconclusive. For a human family (camera photos,
    classical processing): the false-positive rate at ``threshold_ai`` and the inconclusive share.

    Args:
        predictions: Calibrated predictions with ``generator``.
        band: ``(threshold_human, threshold_ai)``.

    Returns:
        ``split, family, label, images, roc_auc, ai_rate, inconclusive_rate``; ``ai_rate`` is
        recall for an AI family and the false-positive rate for a human one.
    """
    labelled = predictions[predictions["label"].notna()].assign(
        family=lambda frame: frame["generator"].map(generator_family)
    )
    rows = []
    for keys, part in labelled.groupby(["split", "family", "label"]):
        split, family, label = str(keys[0]), str(keys[1]), int(str(keys[2]))
        humans = labelled[(labelled["split"] == split) & (labelled["label"] == 0)]
        answers = answer_shares(part["probability_ai"], *band)
        auroc = float("nan")
        if label == 1 and len(humans):
            scores = np.concatenate([part["probability_ai"], humans["probability_ai"]])
            auroc = float(roc_auc_score(np.r_[np.ones(len(part)), np.zeros(len(humans))], scores))
        rows.append(
            {
                "split": split,
                "family": family,
                "label": label,
                "images": len(part),
                "roc_auc": auroc,
                "ai_rate": answers["ai"],
                "inconclusive_rate": answers["inconclusive"],
            }
        )
    return pd.DataFrame(rows, columns=FAMILY_COLUMNS)


def stored_formats(predictions: pd.DataFrame, image_manifest: pd.DataFrame) -> pd.Series:
    """The file format each predicted image was stored in (``JPEG``, ``PNG``, ...), from the manifest.

    Args:
        predictions: Rows with ``path``.
        image_manifest: The manifest (``path``, ``format``).

    Returns:
        One format per prediction row, aligned with ``predictions``' index.
    """
    formats = image_manifest.drop_duplicates("path").set_index("path")["format"]
    return predictions["path"].map(formats).rename("format")


def format_table(predictions: pd.DataFrame, formats: pd.Series, band: tuple[float, float]) -> pd.DataFrame:
    """One row per split and stored format: how the calibrated answers fare on each.

    A model can learn how a data set stores its images (JPEG traces, say) as a class cue; then the
    same photo uploaded losslessly is answered differently. Both classes of a slice are stored alike.

    Args:
        predictions: Calibrated predictions (``split``, ``label``, ``probability_ai``).
        formats: :func:`stored_formats` of ``predictions``.
        band: ``(threshold_human, threshold_ai)``.

    Returns:
        :data:`FORMAT_COLUMNS`: images per class, AUROC (NaN without both classes), the human images
        answered ``ai`` (false accusations) and ``inconclusive``, and the AI images answered ``ai``.
    """
    labelled = predictions.assign(format=formats)[predictions["label"].notna()]
    rows = []
    for (split, stored), part in labelled.groupby(["split", "format"]):
        labels = part["label"].astype(int)
        answers = answers_by_class(labels, part["probability_ai"], band)
        both = set(labels) == {0, 1}
        rows.append(
            {
                "split": str(split),
                "format": str(stored),
                "human_images": int((labels == 0).sum()),
                "ai_images": int((labels == 1).sum()),
                "roc_auc": float(roc_auc_score(labels, part["probability_ai"])) if both else float("nan"),
                "human_ai_rate": answers["human_images"]["ai"],
                "human_inconclusive_rate": answers["human_images"]["inconclusive"],
                "ai_recall": answers["ai_images"]["ai"],
            }
        )
    return pd.DataFrame(rows, columns=FORMAT_COLUMNS)


def attribution_report(predictions: pd.DataFrame, families: list[str]) -> dict[str, Any]:
    """How often the closest family is the right one, on families the model was trained on.

    Counted on validation and test images whose family is one of the model's columns (human
    images count as ``human``); unseen families cannot be right and are left out.

    Args:
        predictions: With ``label``, ``generator``, ``split`` and ``family_probabilities``.
        families: The model's attribution columns (empty: no attribution).

    Returns:
        ``families`` and, per split, ``images``, ``accuracy`` and ``per_family`` accuracy;
        ``{"families": []}`` for a model without attribution.
    """
    report: dict[str, Any] = {"families": families}
    if not families:
        return report
    for split in ("validation", "test"):
        rows = predictions[(predictions["split"] == split) & predictions["label"].notna()]
        targets = family_targets(rows, families)
        counted = rows[targets >= 0]
        if counted.empty:
            continue
        rows_of_probabilities = np.stack(list(counted["family_probabilities"]))
        right = (np.argmax(rows_of_probabilities, axis=1) == targets[targets >= 0]).astype(np.float64)
        truth = np.asarray(families)[targets[targets >= 0]]
        report[split] = {
            "images": len(counted),
            "accuracy": float(right.mean()),
            "per_family": {str(name): float(right[truth == name].mean()) for name in np.unique(truth)},
        }
    return report
