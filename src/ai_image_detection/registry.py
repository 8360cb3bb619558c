"""The MLflow registry: register the ONNX detector, move ``champion`` only on no regression.

The challenger and the current champion are scored on the *same* images (validation, the
generator families held out of training, and the published images of today's generators), each
as the service scores it: its own input size, tiles and thresholds from its ONNX metadata. So the
comparison holds even when the champion was trained on another data version or at another
resolution. The alias moves only when the challenger is at least as good on generators never
trained on, then on human false positives, then on AI images answered "human" (false
reassurance), then on validation images re-shared (blurred, halved: the robustness rows), then
on F1.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

import mlflow
import mlflow.onnx
import numpy as np
import onnx
import onnxruntime as ort
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from ai_image_detection.contract import (
    MAX_TILES_KEY,
    THRESHOLD_AI_KEY,
    THRESHOLD_HUMAN_KEY,
    THRESHOLD_KEY,
)
from ai_image_detection.inference_cost import onnx_runner
from ai_image_detection.input_pipeline import Perturbation, perturbed_pixels
from ai_image_detection.metrics import binary_metrics
from ai_image_detection.onnx_runtime import onnx_metadata
from ai_image_detection.scoring import score_files

DEFAULT_MAX_TILES = 9
"""Tiles per image for a model exported before ``max_tiles`` was in the metadata (the service's default)."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgedImages:
    """The images challenger and champion are both judged on, with their labels (1 = AI).

    Attributes:
        validation_paths: Validation image files.
        validation_labels: Their labels.
        unseen_paths: The unseen-family split's image files.
        unseen_labels: Their labels.
        published: Published generated images (all AI), by name: bytes as uploaded.
        human_resave: What the human images of validation and the unseen split go through to be
            the published images' controls (stored alike); required with ``published``.
        reshared: Degradations of the validation images (as the robustness table applies them)
            whose mean AUROC the rule reads before F1; empty to skip.
    """

    validation_paths: list[str]
    validation_labels: np.ndarray
    unseen_paths: list[str]
    unseen_labels: np.ndarray
    published: Mapping[str, bytes] = field(default_factory=dict)
    human_resave: Perturbation | None = None
    reshared: tuple[Perturbation, ...] = ()

    def __post_init__(self) -> None:
        if self.published and self.human_resave is None:
            raise ValueError("published images need human_resave: their controls are stored alike")


@dataclass(frozen=True)
class Scorecard:
    """How a detector does, in the order the champion rule reads it.

    Attributes:
        unseen_roc_auc: AUROC on the unseen-family split (None when there is none).
        human_fpr: Share of human images (validation and unseen) answered ``ai`` at its ``threshold_ai``.
        ai_answered_human: Share of AI images answered ``human``, below its ``threshold_human``
            (the false reassurance the public gets), in the set where it is highest: validation
            with the unseen split, or the published images. As the band's miss rate
            (``evaluation.band.max_miss_rate``) bounds every set, so the pooled figure of
            hundreds of up-scaler images cannot hide today's generators answered "human".
        validation_f1: F1 on validation at its ``threshold``.
        published_roc_auc: AUROC of the published generated images against the human images of
            validation and the unseen split re-saved alike (None without published images);
            read first, with ``unseen_roc_auc`` (:func:`never_seen_roc_auc`).
        reshared_roc_auc: Validation AUROC after each of the re-shared degradations, their mean
            (None without them); read after the false reassurance, before F1.
    """

    unseen_roc_auc: float | None
    human_fpr: float
    ai_answered_human: float
    validation_f1: float
    published_roc_auc: float | None = None
    reshared_roc_auc: float | None = None


def never_seen_roc_auc(card: Scorecard) -> float | None:
    """AUROC on generators never trained on: the mean over the unseen split and the published images.

    Each set counts once, whatever its size: the unseen split is one held-out up-scaler family
    against its content twins, the published images are today's text-to-image generators.
    None when the card has neither.
    """
    measured = [auc for auc in (card.unseen_roc_auc, card.published_roc_auc) if auc is not None]
    return float(np.mean(measured)) if measured else None


@dataclass(frozen=True)
class ChampionRule:
    """Differences within these tolerances are ties, decided by the next figure."""

    roc_auc_tolerance: float = 0.01
    fpr_tolerance: float = 0.01
    ai_answered_human_tolerance: float = 0.01
    reshared_roc_auc_tolerance: float = 0.01


@dataclass(frozen=True)
class RegistryDecision:
    """What happened in the registry, for the export report."""

    registered_model: str
    version: str
    challenger: Scorecard
    champion_version: str | None
    champion: Scorecard | None
    alias_moved: bool
    reason: str


def scorecard(detector_onnx: bytes, images: JudgedImages) -> Scorecard:
    """Score an ONNX detector as the service would (its own input size, tiles and thresholds).

    Args:
        detector_onnx: The detector; its metadata gives ``input_height``, ``max_tiles``,
            ``threshold``, ``threshold_human`` and ``threshold_ai`` (older models without the
            band: ``threshold`` for both edges; without ``max_tiles``: the default tiling).
        images: The images to judge it on.

    Returns:
        Its scorecard.
    """
    metadata = onnx_metadata(detector_onnx)
    size, max_tiles = int(metadata["input_height"]), int(metadata.get(MAX_TILES_KEY, DEFAULT_MAX_TILES))
    threshold = float(metadata[THRESHOLD_KEY])
    threshold_ai = float(metadata.get(THRESHOLD_AI_KEY, threshold))
    threshold_human = float(metadata.get(THRESHOLD_HUMAN_KEY, threshold))
    run = onnx_runner(detector_onnx)

    def scores(paths: list[str], **how: Any) -> np.ndarray:
        tiles = score_files(lambda crops: run(crops)[:, 0], paths, size, max_tiles, 64, **how)
        return np.array([float(np.mean(t)) for t in tiles])

    validation = scores(images.validation_paths)
    unseen = scores(images.unseen_paths)
    unseen_auc = None
    if len(set(images.unseen_labels.tolist())) == 2:  # noqa: PLR2004 - both classes
        unseen_auc = binary_metrics(images.unseen_labels, unseen, threshold)["roc_auc"]
    humans = np.concatenate([validation[images.validation_labels == 0], unseen[images.unseen_labels == 0]])
    ai = np.concatenate([validation[images.validation_labels == 1], unseen[images.unseen_labels == 1]])
    published = _published_scores(images, scores)
    reshared = [
        binary_metrics(
            images.validation_labels,
            scores(images.validation_paths, transform=functools.partial(perturbed_pixels, perturbation=how)),
            threshold,
        )["roc_auc"]
        for how in images.reshared
    ]
    ai_sets = [ai] + ([published.generated] if published else [])
    return Scorecard(
        unseen_roc_auc=unseen_auc,
        human_fpr=float(np.mean(humans >= threshold_ai)) if humans.size else 0.0,
        ai_answered_human=max((float(np.mean(a < threshold_human)) for a in ai_sets if a.size), default=0.0),
        validation_f1=binary_metrics(images.validation_labels, validation, threshold)["f1"],
        published_roc_auc=published.roc_auc(threshold) if published else None,
        reshared_roc_auc=float(np.mean(reshared)) if reshared else None,
    )


@dataclass(frozen=True)
class _PublishedScores:
    """The published images' scores and their controls' (the human images re-saved alike)."""

    generated: np.ndarray
    controls: np.ndarray

    def roc_auc(self, threshold: float) -> float:
        """AUROC of the published images against their controls."""
        labels = np.r_[np.ones(len(self.generated)), np.zeros(len(self.controls))]
        return binary_metrics(labels, np.r_[self.generated, self.controls], threshold)["roc_auc"]


def _published_scores(images: JudgedImages, scores: Callable[..., np.ndarray]) -> _PublishedScores | None:
    """Scores of the published images and of the human images re-saved alike (None without either)."""
    human_paths = [
        path
        for paths, labels in (
            (images.validation_paths, images.validation_labels),
            (images.unseen_paths, images.unseen_labels),
        )
        for path, label in zip(paths, labels, strict=True)
        if label == 0
    ]
    if not images.published or images.human_resave is None or not human_paths:
        return None
    return _PublishedScores(
        generated=scores(list(images.published), read=images.published.__getitem__),
        controls=scores(
            human_paths, transform=functools.partial(perturbed_pixels, perturbation=images.human_resave)
        ),
    )


def judge(challenger: Scorecard, champion: Scorecard, rule: ChampionRule) -> tuple[bool, str]:
    """Whether the challenger replaces the champion, reading its figures in order until one is not a tie.

    Args:
        challenger: The new model's scorecard.
        champion: The current champion's, on the same images.
        rule: The tolerances within which a figure is a tie.

    Returns:
        Whether the alias moves, and which figure decided.
    """
    criteria: tuple[tuple[str, str, Callable[[Scorecard], float | None], float, bool], ...] = (
        # (what is compared, how a tie on it is named, the figure, its tolerance, lower is better)
        (
            "AUROC on generators never trained on",
            "generators never trained on",
            never_seen_roc_auc,
            rule.roc_auc_tolerance,
            False,
        ),
        ("human false-positive rate", "false positives", attrgetter("human_fpr"), rule.fpr_tolerance, True),
        (
            'AI images answered "human"',
            "AI images answered human",
            attrgetter("ai_answered_human"),
            rule.ai_answered_human_tolerance,
            True,
        ),
        (
            "validation AUROC re-shared",
            "re-shared images",
            attrgetter("reshared_roc_auc"),
            rule.reshared_roc_auc_tolerance,
            False,
        ),
    )
    ties: list[str] = []
    for compared, tie, figure, tolerance, lower_is_better in criteria:
        new, old = figure(challenger), figure(champion)
        if new is None or old is None:
            continue
        gap = old - new if lower_is_better else new - old
        if abs(gap) > tolerance:
            decided_by = f"{compared} {new:.4f} vs {old:.4f}"
            if figure is never_seen_roc_auc:
                decided_by += f" ({_auroc_parts(challenger)} vs {_auroc_parts(champion)})"
            return gap > 0, _after_ties(ties, decided_by)
        ties.append(tie)
    return (
        challenger.validation_f1 >= champion.validation_f1,
        _after_ties(ties, f"validation F1 {challenger.validation_f1:.4f} vs {champion.validation_f1:.4f}"),
    )


def _after_ties(ties: list[str], decided_by: str) -> str:
    """The reason of a decision: the figures that tied before it, then the one that decided."""
    return f"ties on {', '.join(ties)}; {decided_by}" if ties else decided_by


def _auroc_parts(card: Scorecard) -> str:
    """The unseen-family and published AUROC of a card, as the reason quotes them."""
    parts = {"unseen family": card.unseen_roc_auc, "published": card.published_roc_auc}
    return ", ".join(f"{name} {auc:.4f}" for name, auc in parts.items() if auc is not None)


def register_and_promote(
    detector_onnx: bytes, images: JudgedImages, model_name: str, alias: str, rule: ChampionRule
) -> RegistryDecision:
    """Score the detector and the current champion, register the detector, move ``alias`` unless it regresses.

    Both are scored before anything is registered, on the same images, each at its own input
    size, tiling and thresholds, so a champion of another architecture or resolution compares
    fairly and a failure leaves the registry untouched. The rule reads the AUROC on generators
    never trained on first (:func:`never_seen_roc_auc`), then the human false-positive rate, then
    the share of AI images answered "human", then validation AUROC on re-shared images, then
    validation F1 (:func:`judge`).

    Args:
        detector_onnx: The exported detector.
        images: The validation, unseen-family and published images, the same for both models.
        model_name: Registered model name (e.g. ``ai-image-detector``).
        alias: The alias serving follows (``champion``).
        rule: The tolerances of the comparison.

    Returns:
        The decision, with both scorecards and the reason.

    Raises:
        MlflowException: When the champion cannot be looked up for any reason other than not
            existing yet (an auth or server error never promotes without comparison).
    """
    client = MlflowClient()
    challenger = scorecard(detector_onnx, images)
    champion = _scored_champion(client, model_name, alias, images)
    info = mlflow.onnx.log_model(
        onnx.load_from_string(detector_onnx),
        name="detector",
        registered_model_name=model_name,
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort.__version__}"],
    )
    version = str(info.registered_model_version)
    tags = {
        "validation_f1": f"{challenger.validation_f1:.6f}",
        "human_fpr": f"{challenger.human_fpr:.6f}",
        "ai_answered_human": f"{challenger.ai_answered_human:.6f}",
    }
    if challenger.unseen_roc_auc is not None:
        tags["unseen_roc_auc"] = f"{challenger.unseen_roc_auc:.6f}"
    if challenger.published_roc_auc is not None:
        tags["published_roc_auc"] = f"{challenger.published_roc_auc:.6f}"
    if challenger.reshared_roc_auc is not None:
        tags["reshared_roc_auc"] = f"{challenger.reshared_roc_auc:.6f}"
    for key, value in {**tags, **onnx_metadata(detector_onnx)}.items():
        client.set_model_version_tag(model_name, version, key, value)
    if champion is None:
        client.set_registered_model_alias(model_name, alias, version)
        reason = f"no {alias} yet: version {version} becomes {alias}"
        return RegistryDecision(model_name, version, challenger, None, None, True, reason)
    champion_version, champion_card = champion
    moved, decided_by = judge(challenger, champion_card, rule)
    if moved:
        client.set_registered_model_alias(model_name, alias, version)
    verdict = "moves to" if moved else "stays on"
    reason = (
        f"{alias} {verdict} version {version if moved else champion_version}: challenger v{version} vs "
        f"{alias} v{champion_version} on the same {len(images.validation_paths)} validation, "
        f"{len(images.unseen_paths)} unseen-family and {len(images.published)} published images, "
        f"{decided_by}" + ("" if moved else " (no silent regression)")
    )
    logger.info(reason)
    return RegistryDecision(model_name, version, challenger, champion_version, champion_card, moved, reason)


def _scored_champion(
    client: MlflowClient, model_name: str, alias: str, images: JudgedImages
) -> tuple[str, Scorecard] | None:
    """The current ``alias`` version and its scorecard, or None when there is no such alias yet."""
    try:
        registered = client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if alias not in registered.aliases:
        return None
    current = client.get_model_version_by_alias(model_name, alias)
    champion_onnx = mlflow.onnx.load_model(f"models:/{model_name}/{current.version}")
    return str(current.version), scorecard(champion_onnx.SerializeToString(), images)


def describe_version(model_name: str, version: str, description: str) -> None:
    """Set a registered version's description (the model card, shown in the MLflow UI)."""
    MlflowClient().update_model_version(model_name, version, description=description)
