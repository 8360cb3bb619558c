"""The champion alias: read figure by figure (never-seen generators first, F1 last); never on a regression."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from mlflow.tracking import MlflowClient
from onnx import TensorProto, helper
from PIL import Image

from ai_image_detection.input_pipeline import Perturbation
from ai_image_detection.registry import (
    ChampionRule,
    JudgedImages,
    RegistryDecision,
    Scorecard,
    judge,
    register_and_promote,
    scorecard,
)

NAME = "ai-image-detector"
ALIAS = "champion"
RULE = ChampionRule(
    roc_auc_tolerance=0.01,
    fpr_tolerance=0.01,
    ai_answered_human_tolerance=0.01,
    reshared_roc_auc_tolerance=0.01,
)

RED, GREEN, RIGHT, WRONG = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 1.0, 0.0), (-1.0, -1.0, 0.0)
"""Channel weights: P(AI) = sigmoid(sum_c w_c (mean_c - 128) / 8)."""


def channel_detector(
    weights: Sequence[float],
    size: int = 8,
    threshold: float = 0.5,
    threshold_ai: float | None = 0.5,
    max_tiles: int | None = 9,
    threshold_human: float | None = None,
) -> bytes:
    """An ONNX detector of the contract's shape that reads the mean colour of its input.

    Its band is ``[threshold_human, threshold_ai)`` (no band when ``threshold_human`` is None).
    """
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Sub", ["mean", "centre"], ["centred"]),
        helper.make_node("MatMul", ["centred", "weights"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["probability_ai"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colour",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [None, size, size, 3])],
        [helper.make_tensor_value_info("probability_ai", TensorProto.FLOAT, [None, 1])],
        [
            helper.make_tensor("centre", TensorProto.FLOAT, [], [128.0]),
            helper.make_tensor("weights", TensorProto.FLOAT, [3, 1], [w / 8.0 for w in weights]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    metadata = {"threshold": str(threshold), "input_height": str(size), "input_width": str(size)}
    if threshold_ai is not None:
        human = threshold_ai if threshold_human is None else threshold_human
        metadata |= {"threshold_human": str(human), "threshold_ai": str(threshold_ai)}
    if max_tiles is not None:
        metadata["max_tiles"] = str(max_tiles)
    helper.set_model_props(model, metadata)
    return bytes(model.SerializeToString())


def write(folder: Path, name: str, pixels: np.ndarray) -> str:
    path = folder / f"{name}.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return str(path)


def plain(red: int, green: int, side: int = 24) -> np.ndarray:
    """A uniform image of that red and green (blue 60)."""
    return np.full((side, side, 3), (red, green, 60))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> JudgedImages:
    """Validation: AI images are red (and most green too); unseen family: AI images green only.

    So the red detector is perfect on validation but blind to the unseen family (AUROC 0.5), and
    the green one misses one validation AI image (F1 18/19) but ranks the unseen family perfectly.
    """
    folder = tmp_path_factory.mktemp("judged")
    validation = [(plain(60, 60), 0)] * 10 + [(plain(200, 200), 1)] * 9 + [(plain(200, 60), 1)]
    unseen = [(plain(60, 60), 0)] * 10 + [(plain(60, 200), 1)] * 10
    return JudgedImages(
        validation_paths=[write(folder, f"v{i}", pixels) for i, (pixels, _) in enumerate(validation)],
        validation_labels=np.array([label for _, label in validation]),
        unseen_paths=[write(folder, f"u{i}", pixels) for i, (pixels, _) in enumerate(unseen)],
        unseen_labels=np.array([label for _, label in unseen]),
    )


def promote(detector: bytes, images: JudgedImages) -> RegistryDecision:
    with mlflow.start_run():
        return register_and_promote(detector, images, NAME, ALIAS, RULE)


def champion_version(tracking: MlflowClient) -> str:
    return str(tracking.get_model_version_by_alias(NAME, ALIAS).version)


def test_the_scorecards_of_the_stand_in_detectors(images: JudgedImages) -> None:
    # red answers the 10 unseen AI images "human", green the one validation AI image without green
    assert scorecard(channel_detector(RED), images) == Scorecard(0.5, 0.0, 0.5, 1.0)
    assert scorecard(channel_detector(GREEN), images) == Scorecard(
        1.0, 0.0, pytest.approx(1 / 20), pytest.approx(18 / 19)
    )
    assert scorecard(channel_detector(RIGHT), images) == Scorecard(1.0, 0.0, 0.0, 1.0)
    assert scorecard(channel_detector(WRONG), images) == Scorecard(0.0, 1.0, 1.0, 0.0)


def with_published(images: JudgedImages, resave: Perturbation | None) -> JudgedImages:
    """The same images plus ten published generated images, green only (PNG bytes, never files)."""
    encoded = []
    for _ in range(10):
        buffer = io.BytesIO()
        Image.fromarray(plain(60, 200).astype(np.uint8)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    published = {f"templates/green-{index}.png": data for index, data in enumerate(encoded)}
    return dataclasses.replace(images, published=published, human_resave=resave)


def test_the_published_images_are_ranked_against_the_humans_re_saved_alike(images: JudgedImages) -> None:
    judged = with_published(images, Perturbation(kind="webp", quality=90))
    assert scorecard(channel_detector(GREEN), judged).published_roc_auc == 1.0
    assert scorecard(channel_detector(RED), judged).published_roc_auc <= 0.5, "red is blind to them"
    assert scorecard(channel_detector(RED), images).published_roc_auc is None, "none to rank"


def test_ai_answered_human_is_the_worst_set_s_share_published_images_included(images: JudgedImages) -> None:
    judged = with_published(images, Perturbation(kind="webp", quality=90))
    # red: 10 of the 20 AI images of validation and the unseen split, and all 10 published ones
    assert scorecard(channel_detector(RED), images).ai_answered_human == 0.5
    assert scorecard(channel_detector(RED), judged).ai_answered_human == 1.0
    # green: 1 of the 20, and none of the published ones: the worse set decides
    assert scorecard(channel_detector(GREEN), judged).ai_answered_human == pytest.approx(1 / 20)


def test_published_images_without_their_controls_re_save_are_refused(images: JudgedImages) -> None:
    with pytest.raises(ValueError, match="published images need human_resave"):
        with_published(images, None)


def test_the_champion_moves_on_improvement_and_not_on_regression(
    tracking: MlflowClient, images: JudgedImages
) -> None:
    first = promote(channel_detector(WRONG), images)
    assert first.alias_moved and first.champion_version is None and first.champion is None
    assert first.reason == f"no {ALIAS} yet: version 1 becomes {ALIAS}"

    better = promote(channel_detector(RIGHT), images)
    assert better.alias_moved
    assert (better.challenger.unseen_roc_auc, better.champion.unseen_roc_auc) == (1.0, 0.0)
    assert "AUROC on generators never trained on 1.0000 vs 0.0000 (unseen family 1.0000 vs" in better.reason
    assert "same 20 validation, 20 unseen-family and 0 published images" in better.reason
    assert champion_version(tracking) == better.version == "2"

    worse = promote(channel_detector(WRONG), images)
    assert not worse.alias_moved
    assert worse.champion_version == "2"
    assert worse.reason.endswith("(no silent regression)")
    assert champion_version(tracking) == "2"
    tags = tracking.get_model_version(NAME, worse.version).tags
    assert (tags["validation_f1"], tags["human_fpr"], tags["ai_answered_human"], tags["unseen_roc_auc"]) == (
        "0.000000",
        "1.000000",
        "1.000000",
        "0.000000",
    )
    assert tags["threshold_ai"] == "0.5" and tags["max_tiles"] == "9", "the ONNX metadata is tagged too"


def test_better_validation_f1_does_not_buy_a_worse_unseen_family_score(
    tracking: MlflowClient, images: JudgedImages
) -> None:
    promote(channel_detector(GREEN), images)
    sharp = promote(channel_detector(RED), images)
    assert sharp.challenger.validation_f1 > sharp.champion.validation_f1, "the challenger wins on F1 ..."
    assert not sharp.alias_moved, "... and still does not become champion"
    assert "AUROC on generators never trained on 0.5000 vs 1.0000" in sharp.reason
    assert champion_version(tracking) == "1"


def test_better_on_unseen_families_wins_despite_a_slightly_worse_f1(
    tracking: MlflowClient, images: JudgedImages
) -> None:
    promote(channel_detector(RED), images)
    general = promote(channel_detector(GREEN), images)
    assert general.challenger.validation_f1 < general.champion.validation_f1
    assert general.alias_moved
    assert "AUROC on generators never trained on 1.0000 vs 0.5000" in general.reason
    assert champion_version(tracking) == general.version == "2"


def test_of_two_models_that_rank_alike_the_one_that_reassures_less_ships(
    tracking: MlflowClient, images: JudgedImages
) -> None:
    promote(channel_detector(GREEN), images)  # answers "human" to the validation AI image it misses
    careful = promote(channel_detector(GREEN, threshold_human=1e-4), images)  # inconclusive there
    assert careful.challenger.ai_answered_human == 0.0
    assert careful.alias_moved
    assert 'AI images answered "human" 0.0000 vs 0.0500' in careful.reason
    bold = promote(channel_detector(GREEN), images)
    assert not bold.alias_moved and champion_version(tracking) == careful.version == "2"


def test_a_registered_model_without_the_alias_has_no_champion(
    tracking: MlflowClient, images: JudgedImages
) -> None:
    promote(channel_detector(RIGHT), images)
    tracking.delete_registered_model_alias(NAME, ALIAS)
    again = promote(channel_detector(WRONG), images)
    assert again.alias_moved and again.champion_version is None
    assert champion_version(tracking) == "2"


def test_a_registry_error_propagates_and_leaves_the_alias_alone(
    tracking: MlflowClient, images: JudgedImages, monkeypatch: pytest.MonkeyPatch
) -> None:
    promote(channel_detector(WRONG), images)

    def refuse(self: MlflowClient, name: str) -> None:
        raise MlflowException(f"not allowed to read {name}", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(MlflowClient, "get_registered_model", refuse)
    with pytest.raises(MlflowException, match="not allowed to read") as raised:
        promote(channel_detector(RIGHT), images)
    assert raised.value.error_code == "PERMISSION_DENIED"
    monkeypatch.undo()

    assert champion_version(tracking) == "1"
    assert len(tracking.search_model_versions(f"name = '{NAME}'")) == 1, (
        "nothing registered without a comparison"
    )


def test_a_champion_of_another_input_size_is_scored_at_its_own_size(
    tracking: MlflowClient, images: JudgedImages
) -> None:
    small = channel_detector(GREEN, size=8, max_tiles=1)
    promote(small, images)
    larger = promote(channel_detector(RIGHT, size=12), images)
    assert larger.champion == scorecard(small, images), "the 8-pixel champion scored as it serves"
    assert larger.alias_moved, "same unseen AUROC and FPR: fewer AI images answered human decides"
    assert 'AI images answered "human" 0.0000 vs 0.0500' in larger.reason
    assert tracking.get_model_version(NAME, larger.version).tags["input_height"] == "12"


def test_the_scorecard_reads_tiles_and_band_from_the_metadata(tmp_path: Path) -> None:
    # An AI image whose centre tile is dark: found only when its three tiles are averaged; a human
    # image scoring 0.68: answered "ai" at threshold 0.5 but not at threshold_ai 0.8.
    striped = plain(60, 60, side=8).repeat(3, axis=1)
    striped[:, :8] = striped[:, 16:] = 250
    human = np.full((8, 8, 3), 131)
    images = JudgedImages(
        validation_paths=[write(tmp_path, "ai", striped), write(tmp_path, "human", human)],
        validation_labels=np.array([1, 0]),
        unseen_paths=[],
        unseen_labels=np.array([], dtype=int),
    )
    detector = (1.0, 1.0, 0.0)
    tiled = scorecard(channel_detector(detector, threshold_ai=0.8, max_tiles=9), images)
    # the AI image's three tiles average 2/3: below the human edge 0.8, so it is answered "human"
    assert tiled == Scorecard(None, 0.0, 1.0, pytest.approx(2 / 3)), "no unseen images: no unseen AUROC"
    assert scorecard(channel_detector(detector, threshold_ai=0.8, max_tiles=1), images).validation_f1 == 0.0
    older = scorecard(channel_detector(detector, threshold_ai=None, max_tiles=None), images)
    assert older == Scorecard(None, 1.0, 0.0, pytest.approx(2 / 3)), "no band: the threshold; no tiling: nine"


def test_the_scorecard_reads_the_validation_images_re_shared(tmp_path: Path) -> None:
    # An AI image bright around a dark centre: found whole (eight of its nine tiles), missed once
    # re-shared as its centre crop; a human image of middling grey either way.
    framed = np.full((24, 24, 3), 250)
    framed[8:16, 8:16] = 60
    images = JudgedImages(
        validation_paths=[write(tmp_path, "ai", framed), write(tmp_path, "human", plain(100, 100))],
        validation_labels=np.array([1, 0]),
        unseen_paths=[],
        unseen_labels=np.array([], dtype=int),
    )
    detector = channel_detector((1.0, 1.0, 0.0))
    centre = Perturbation(kind="centre_crop", factor=1 / 3)
    assert scorecard(detector, images).reshared_roc_auc is None, "none asked for"
    assert scorecard(detector, dataclasses.replace(images, reshared=(centre,))).reshared_roc_auc == 0.0
    both = dataclasses.replace(images, reshared=(centre, Perturbation(kind="jpeg", quality=95)))
    card = scorecard(detector, both)
    assert card.reshared_roc_auc == 0.5, "the mean over the degradations"
    assert card.validation_f1 == 1.0, "F1 stays on the images as stored"


@pytest.mark.parametrize(
    ("challenger", "champion", "moves", "decided_by"),
    [
        (  # ties until the re-shared images, which outweigh a lower F1
            Scorecard(0.90, 0.02, 0.0, 0.96, reshared_roc_auc=0.91),
            Scorecard(0.90, 0.02, 0.0, 0.97, reshared_roc_auc=0.84),
            True,
            "answered human; validation AUROC re-shared 0.9100 vs 0.8400",
        ),
        (
            Scorecard(0.90, 0.02, 0.0, 0.99, reshared_roc_auc=0.84),
            Scorecard(0.90, 0.02, 0.0, 0.90, reshared_roc_auc=0.91),
            False,
            "validation AUROC re-shared 0.8400 vs 0.9100",
        ),
        (
            Scorecard(0.90, 0.02, 0.0, 0.89, reshared_roc_auc=0.905),
            Scorecard(0.90, 0.02, 0.0, 0.90, reshared_roc_auc=0.90),
            False,
            "answered human, re-shared images; validation F1 0.8900 vs 0.9000",
        ),
        (  # a false positive outweighs the re-shared images
            Scorecard(0.90, 0.05, 0.0, 0.99, reshared_roc_auc=0.99),
            Scorecard(0.90, 0.02, 0.0, 0.90, reshared_roc_auc=0.80),
            False,
            "human false-positive rate 0.0500",
        ),
        (
            Scorecard(0.90, 0.30, 0.0, 0.50),
            Scorecard(0.80, 0.00, 0.0, 1.00),
            True,
            "never trained on 0.9000 vs 0.8000 (unseen family 0.9000 vs unseen family 0.8000)",
        ),
        (Scorecard(0.80, 0.00, 0.0, 1.00), Scorecard(0.90, 0.30, 0.0, 0.50), False, "never trained on"),
        (  # worse on the unseen family, far better on today's generators: the mean decides
            Scorecard(0.88, 0.02, 0.0, 0.90, published_roc_auc=0.80),
            Scorecard(0.95, 0.02, 0.0, 0.90, published_roc_auc=0.64),
            True,
            "0.8400 vs 0.7950 (unseen family 0.8800, published 0.8000 vs unseen family 0.9500, "
            "published 0.6400)",
        ),
        (  # the same gap the other way round: no silent regression on today's generators
            Scorecard(0.95, 0.02, 0.0, 0.99, published_roc_auc=0.64),
            Scorecard(0.88, 0.02, 0.0, 0.90, published_roc_auc=0.80),
            False,
            "never trained on 0.7950 vs 0.8400",
        ),
        (  # published images alone (no unseen split)
            Scorecard(None, 0.02, 0.0, 0.90, published_roc_auc=0.70),
            Scorecard(None, 0.02, 0.0, 0.95, published_roc_auc=0.65),
            True,
            "0.7000 vs 0.6500 (published 0.7000 vs published 0.6500)",
        ),
        (
            Scorecard(0.895, 0.05, 0.0, 0.99),
            Scorecard(0.90, 0.02, 0.0, 0.50),
            False,
            "human false-positive rate 0.0500",
        ),
        (
            Scorecard(0.895, 0.02, 0.0, 0.50),
            Scorecard(0.90, 0.05, 0.0, 0.99),
            True,
            "human false-positive rate 0.0200",
        ),
        (
            Scorecard(0.895, 0.025, 0.0, 0.91),
            Scorecard(0.90, 0.02, 0.0, 0.90),
            True,
            "validation F1 0.9100 vs 0.9000",
        ),
        (
            Scorecard(0.90, 0.02, 0.0, 0.90),
            Scorecard(0.90, 0.02, 0.0, 0.90),
            True,
            "ties on generators never trained on",
        ),
        (Scorecard(0.90, 0.02, 0.0, 0.89), Scorecard(0.90, 0.02, 0.0, 0.90), False, "validation F1"),
        (
            Scorecard(None, 0.10, 0.0, 0.99),
            Scorecard(0.90, 0.02, 0.0, 0.50),
            False,
            "human false-positive rate",
        ),
        (
            Scorecard(0.90, 0.02, 0.005, 0.80),
            Scorecard(0.90, 0.02, 0.027, 0.90),
            True,
            'AI images answered "human" 0.0050 vs 0.0270',
        ),
        (Scorecard(0.90, 0.02, 0.027, 0.99), Scorecard(0.90, 0.02, 0.005, 0.80), False, "answered"),
        (Scorecard(0.90, 0.02, 0.012, 0.91), Scorecard(0.90, 0.02, 0.005, 0.90), True, "validation F1"),
    ],
)
def test_the_rule_reads_unseen_generators_false_positives_false_reassurance_reshared_then_f1(
    challenger: Scorecard, champion: Scorecard, moves: bool, decided_by: str
) -> None:
    moved, reason = judge(challenger, champion, RULE)
    assert moved is moves
    assert decided_by in reason
