"""Evaluation nodes: score as the service does, calibrate, band, per-family and held-out-family tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import roc_auc_score

from ai_image_detection.calibration import PlattScaling, fit_platt
from ai_image_detection.contract import verdict
from ai_image_detection.input_pipeline import Perturbation
from ai_image_detection.metrics import (
    answer_shares,
    answers_by_class,
    binary_metrics,
    choose_band,
    choose_threshold,
)
from ai_image_detection.pipelines.evaluation.family_metrics import (
    FAMILY_COLUMNS,
    FORMAT_COLUMNS,
    HELD_OUT_COLUMNS,
    calibrated_held_out_families,
)
from ai_image_detection.pipelines.evaluation.nodes import (
    UNSEEN_FOLD_COLUMNS,
    BandParams,
    EvaluationParams,
    calibrate,
    compare_candidates,
    evaluate_candidate,
    plot_candidate,
    score_images,
    summarise_held_out_families,
)
from ai_image_detection.pipelines.evaluation.wild_generated import (
    PublishedScores,
    score_published,
)
from ai_image_detection.sample_data.photo_sources import SourcePhoto
from ai_image_detection.tiling import tile_crops
from tests.pipelines.evaluation.conftest import published_generated

SIZE = 32
HUMAN = "camera/original"


def params(**band: float | bool) -> EvaluationParams:
    return EvaluationParams(
        max_tiles=9,
        batch_size=16,
        band=BandParams(
            **{
                "max_fpr": 0.05,
                "min_human_precision": 0.95,
                "max_miss_rate": 0.02,
                "max_inconclusive": 0.5,
                **band,
            }
        ),
        robustness={
            "jpeg_q50": Perturbation(kind="jpeg", quality=50),
            "blur": Perturbation(kind="blur", sigma=1.0),
        },
        robustness_on_unseen=["blur"],
        wild_generated_human_resave=Perturbation(kind="webp", quality=80),
        wild_generated_generators={"light": "^(bright|grey)"},
    )


def brightness_model(steepness: float = 0.5) -> keras.Model:
    """A detector whose P(AI) is sigmoid(steepness * (mean pixel - 128)): steep, so overconfident."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    dense = keras.layers.Dense(1, activation="sigmoid")
    model = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(inputs)))
    dense.set_weights([np.full((3, 1), steepness / 3, dtype=np.float32), np.array([-128 * steepness])])
    return model


def _write(
    folder: Path, name: str, brightness: float, side: int, rng: np.random.Generator, stored: str = "PNG"
) -> str:
    pixels = np.clip(rng.normal(brightness, 3.0, (side, side, 3)), 0, 255).astype(np.uint8)
    path = folder / f"{name}.{stored.lower()}"
    Image.fromarray(pixels).save(path, format=stored)
    return str(path)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Human twins darker than their AI images, with overlap; the unseen family (waifu2x) much brighter.

    The realesrgan pairs are stored as JPEG, every other image as PNG.
    """
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    layout = [
        ("train", "realcugan/up2x", 3),
        ("validation", "realcugan/up2x", 20),
        ("validation", "realesrgan/x4", 20),
        ("test", "realcugan/up2x", 5),
        ("unseen", "waifu2x/cunet", 8),
    ]
    rows = []
    for split, generator, pairs in layout:
        for index in range(pairs):
            pair = f"{split}-{generator}-{index}"
            ai_brightness = rng.uniform(175, 200) if split == "unseen" else rng.uniform(112, 170)
            for label, made_by, brightness in (
                (0, HUMAN, rng.uniform(90, 146)),
                (1, generator, ai_brightness),
            ):
                side = 80 if index % 4 == 0 else 40  # 80 x 80: nine tiles, 40 x 40: one
                stored = "JPEG" if generator.startswith("realesrgan") else "PNG"
                path = _write(folder, f"{pair.replace('/', '_')}-{label}", brightness, side, rng, stored)
                rows.append(
                    {
                        "path": path,
                        "source_path": path,
                        "label": label,
                        "split": split,
                        "generator": made_by,
                        "pair": pair,
                        "format": stored,
                    }
                )
    for index in range(3):  # the competition's test images have no labels
        path = _write(folder, f"unlabelled-{index}", 128, 40, rng)
        rows.append(
            {
                "path": path,
                "source_path": path,
                "label": pd.NA,
                "split": "test",
                "generator": "unknown",
                "pair": f"u{index}",
                "format": "PNG",
            }
        )
    return pd.DataFrame(rows).astype({"label": "Int8"})


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return brightness_model()


@pytest.fixture(scope="module")
def raw_scores(model: keras.Model, manifest: pd.DataFrame) -> pd.DataFrame:
    return score_images(model, manifest, params())


@pytest.fixture(scope="module")
def calibrated(raw_scores: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    return calibrate(raw_scores, params())


@pytest.fixture(scope="module")
def report(
    model: keras.Model,
    calibrated: tuple[pd.DataFrame, dict[str, Any]],
    manifest: pd.DataFrame,
    published: list[SourcePhoto],
) -> dict[str, Any]:
    predictions, calibration = calibrated
    return evaluate_candidate(
        model, predictions, calibration, manifest, held_out_scores(), published, params()
    )


def test_every_scored_split_is_scored_tile_by_tile_in_manifest_order(
    model: keras.Model, manifest: pd.DataFrame, raw_scores: pd.DataFrame
) -> None:
    scored = manifest[manifest["split"] != "train"]
    assert list(raw_scores["path"]) == list(scored["path"])
    assert set(raw_scores["split"]) == {"validation", "test", "unseen"}
    assert {"generator", "pair", "source_path"} <= set(raw_scores.columns)
    counts = raw_scores["tile_scores"].map(len)
    assert set(counts) == {1, 9}, "a 40 x 40 image is one tile, an 80 x 80 one nine"
    first = raw_scores.iloc[0]
    with Image.open(first["path"]) as image:
        tiles = tile_crops(np.asarray(image.convert("RGB")), SIZE, 9).astype(np.float32)
    np.testing.assert_allclose(first["tile_scores"], model.predict_on_batch(tiles)[:, 0], rtol=1e-5)


def test_calibration_is_fitted_on_validation_and_improves_it(
    raw_scores: pd.DataFrame, calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    predictions, calibration = calibrated
    assert calibration["method"] == "platt"
    assert calibration["fitted_on"] == "80 validation images"
    assert 0 < calibration["slope"] < 1, "the steep model is overconfident: its logits are shrunk"
    assert calibration["ece_after"] < calibration["ece_before"]
    tiles = [np.asarray(t) for t in raw_scores["tile_scores"]]
    np.testing.assert_allclose(predictions["raw_probability_ai"], [np.mean(t) for t in tiles])
    scaling = PlattScaling(calibration["slope"], calibration["intercept"])
    np.testing.assert_allclose(predictions["probability_ai"], scaling.image_scores(tiles))


def test_calibration_ignores_test_and_unseen_images(
    raw_scores: pd.DataFrame, calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    flipped = raw_scores.copy()
    outside = flipped["split"] != "validation"
    flipped.loc[outside, "tile_scores"] = flipped.loc[outside, "tile_scores"].map(
        lambda tiles: [1 - t for t in tiles]
    )
    _, again = calibrate(flipped, params())
    assert (again["slope"], again["intercept"]) == (calibrated[1]["slope"], calibrated[1]["intercept"])


def test_the_band_is_ordered_and_meets_its_targets_on_validation(
    report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    predictions, _ = calibrated
    validation = predictions[predictions["split"] == "validation"]
    humans = validation.loc[validation["label"] == 0, "probability_ai"]
    assert 0 <= report["threshold_human"] <= report["threshold_ai"] <= 1
    assert report["threshold_human"] < report["threshold_ai"], "the classes overlap: there is a band"
    assert (humans >= report["threshold_ai"]).mean() <= 0.05
    answered_human = validation[validation["probability_ai"] < report["threshold_human"]]
    if len(answered_human):
        assert (answered_human["label"] == 0).mean() >= 0.95
    assert report["max_tiles"] == 9
    assert report["calibration"]["ece_after"] < report["calibration"]["ece_before"]


def test_the_report_has_metrics_and_answers_per_labelled_split(
    report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    predictions, _ = calibrated
    band = (report["threshold_human"], report["threshold_ai"])
    for split in ("validation", "test", "unseen"):
        assert set(report[split]) == {"at_threshold", "at_0.5", "answers"}
        part = predictions[(predictions["split"] == split) & predictions["label"].notna()]
        assert report[split]["answers"] == answer_shares(part["probability_ai"], *band)
        assert sum(report[split]["answers"].values()) == pytest.approx(1.0)
        expected = binary_metrics(part["label"].astype(int), part["probability_ai"], report["threshold"])
        assert report[split]["at_threshold"] == pytest.approx(expected, nan_ok=True)
    test = predictions[predictions["split"] == "test"]
    assert (len(test), test["label"].notna().sum()) == (13, 10), "unlabelled images are scored, not judged"
    assert report["unseen"]["at_threshold"]["roc_auc"] == 1.0, "waifu2x images are far brighter than humans"


def test_the_family_table_has_a_row_per_split_and_family(
    report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    predictions, _ = calibrated
    table = pd.DataFrame(report["families"])
    assert list(table.columns) == FAMILY_COLUMNS
    keys = set(zip(table["split"], table["family"], table["label"], strict=True))
    assert keys == {
        ("validation", "camera", 0),
        ("validation", "realcugan", 1),
        ("validation", "realesrgan", 1),
        ("test", "camera", 0),
        ("test", "realcugan", 1),
        ("unseen", "camera", 0),
        ("unseen", "waifu2x", 1),
    }
    unseen = table[(table["split"] == "unseen") & (table["family"] == "waifu2x")].iloc[0]
    part = predictions[predictions["split"] == "unseen"]
    assert unseen["images"] == 8
    assert unseen["roc_auc"] == roc_auc_score(part["label"].astype(int), part["probability_ai"])
    realesrgan = table[(table["split"] == "validation") & (table["family"] == "realesrgan")].iloc[0]
    validation = predictions[predictions["split"] == "validation"]
    mine = validation[validation["generator"] == "realesrgan/x4"]
    humans = validation[validation["label"] == 0]
    expected = roc_auc_score(
        np.r_[np.ones(len(mine)), np.zeros(len(humans))],
        np.r_[mine["probability_ai"], humans["probability_ai"]],
    )
    assert realesrgan["roc_auc"] == pytest.approx(expected), "an AI family against every human of its split"
    assert realesrgan["ai_rate"] == np.mean(mine["probability_ai"] >= report["threshold_ai"])
    human = table[(table["split"] == "validation") & (table["family"] == "camera")].iloc[0]
    assert math.isnan(human["roc_auc"])
    assert human["ai_rate"] == np.mean(humans["probability_ai"] >= report["threshold_ai"]), "the FPR"


def test_robustness_speed_size_and_the_plots(
    model: keras.Model, report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    assert set(report["robustness"]) == {"none", "jpeg_q50", "blur"}
    assert report["robustness"]["none"] == report["validation"]["at_threshold"]
    assert report["robustness"]["blur"]["roc_auc"] > 0.7, "a blur keeps the brightness the model reads"
    answers = report["robustness_answers"]
    assert set(answers) == {"none", "jpeg_q50", "blur"}
    validation = calibrated[0][calibrated[0]["split"] == "validation"]
    band = (report["threshold_human"], report["threshold_ai"])
    for kind, label in (("ai_images", 1), ("human_images", 0)):
        clean = validation.loc[validation["label"] == label, "probability_ai"]
        assert answers["none"][kind] == answer_shares(clean, *band), "unperturbed: validation's own answers"
        for shares in (answers[name][kind] for name in ("jpeg_q50", "blur")):
            assert sum(shares.values()) == pytest.approx(1.0)
    for name in ("jpeg_q50", "blur"):  # the band holds the threshold: "ai" answers are a subset of its hits
        assert answers[name]["ai_images"]["ai"] <= report["robustness"][name]["recall"] + 1e-12
        assert answers[name]["ai_images"]["human"] <= 1 - report["robustness"][name]["recall"] + 1e-12
    assert report["seconds_per_image"] > 0
    assert report["parameters"] == model.count_params() == 4
    assert isinstance(plot_candidate(calibrated[0], report, params()), Figure)


def test_robustness_on_the_unseen_split_rescores_its_images_under_the_chosen_perturbations(
    report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    assert set(report["robustness_unseen"]) == set(report["robustness_unseen_answers"]) == {"none", "blur"}
    assert report["robustness_unseen"]["none"] == report["unseen"]["at_threshold"]
    assert report["robustness_unseen"]["blur"]["roc_auc"] > 0.9, (
        "the unseen family's brightness survives a blur"
    )
    assert report["robustness_unseen"]["blur"] != report["robustness"]["blur"], (
        "its own images, not validation's"
    )
    unseen = calibrated[0][calibrated[0]["split"] == "unseen"]
    band = (report["threshold_human"], report["threshold_ai"])
    for kind, label in (("ai_images", 1), ("human_images", 0)):
        clean = unseen.loc[unseen["label"] == label, "probability_ai"]
        assert report["robustness_unseen_answers"]["none"][kind] == answer_shares(clean, *band)
        assert sum(report["robustness_unseen_answers"]["blur"][kind].values()) == pytest.approx(1.0)


def published_scores(
    model: keras.Model, calibrated: tuple[pd.DataFrame, dict[str, Any]], published: list[SourcePhoto]
) -> PublishedScores:
    predictions, calibration = calibrated
    scaling = PlattScaling(calibration["slope"], calibration["intercept"])
    scores = score_published(
        model,
        published,
        predictions,
        scaling,
        params().wild_generated_human_resave,
        params().wild_generated_generators,
        9,
        16,
    )
    assert scores is not None
    return scores


def test_published_generated_images_are_answered_at_the_candidates_own_band(
    model: keras.Model,
    calibrated: tuple[pd.DataFrame, dict[str, Any]],
    report: dict[str, Any],
    published: list[SourcePhoto],
) -> None:
    scores = published_scores(model, calibrated, published)
    band = (report["threshold_human"], report["threshold_ai"])
    section = report["wild_generated"]
    assert section["answers"] == answers_by_class(*scores.band_set(), band)
    assert [row["answer"] for row in section["per_image"]] == [
        verdict(score, *band) for score in sorted(scores.generated["probability_ai"])
    ]
    controls = calibrated[0][
        calibrated[0]["split"].isin(["validation", "unseen"]) & (calibrated[0]["label"] == 0)
    ]
    assert (section["images"], section["human_controls"]["images"]) == (len(published), len(controls))
    assert section["band_chosen_on_them"] and report["band"]["chosen_on"][-1] == "published generated images"
    assert sum(section["answers_cross_fitted"].values()) == pytest.approx(1.0)


def test_published_images_the_model_cannot_see_lower_the_human_edge(
    model: keras.Model, calibrated: tuple[pd.DataFrame, dict[str, Any]], manifest: pd.DataFrame
) -> None:
    """Four published images darker than every human: a band that holds on them answers them "inconclusive".

    Validation is the only other set, so that the edge moves for the published images alone.
    """
    published = published_generated({**{f"dark_{n}_t2i-1": 60.0 for n in range(4)}, "bright_t2i-1": 200.0})
    quick = {"robustness": {}, "robustness_on_unseen": []}
    others_off = {"on_held_out_families": False, "on_held_out_reshared": False, "on_each_format": False}
    reports = {
        on: evaluate_candidate(
            model,
            *calibrated,
            manifest,
            held_out_scores(),
            published,
            params(on_wild_generated=on, **others_off).model_copy(update=quick),
        )
        for on in (True, False)
    }
    with_them, without = reports[True], reports[False]
    assert with_them["threshold_human"] < without["threshold_human"]
    assert with_them["threshold_ai"] >= without["threshold_ai"], "the band only ever widens"
    assert with_them["wild_generated"]["answers"]["ai_images"]["human"] == 0.0
    assert without["wild_generated"]["answers"]["ai_images"]["human"] > 0.0, "scored, but not heeded"
    assert without["wild_generated"]["answers_cross_fitted"] is None
    assert "published generated images" not in without["band"]["chosen_on"]
    labels, values = published_scores(model, calibrated, published).band_set()
    assert with_them["wild_generated"]["answers"]["human_images"] == answer_shares(
        values[labels == 0], with_them["threshold_human"], with_them["threshold_ai"]
    )
    answered_human = values < with_them["threshold_human"]
    assert not answered_human.any() or (labels[answered_human] == 0).mean() >= 0.95


def test_robustness_on_unseen_names_only_perturbations_of_the_robustness_table() -> None:
    with pytest.raises(
        ValueError, match=r"robustness_on_unseen names \['jpeg_q10'\], which robustness does not"
    ):
        EvaluationParams.model_validate({**params().model_dump(), "robustness_on_unseen": ["jpeg_q10"]})


def test_a_band_too_wide_is_logged(
    model: keras.Model,
    calibrated: tuple[pd.DataFrame, dict[str, Any]],
    manifest: pd.DataFrame,
    caplog: pytest.LogCaptureFixture,
) -> None:
    strict = params(max_fpr=0.001, min_human_precision=0.999, max_inconclusive=0.01)
    strict = strict.model_copy(update={"robustness": {}, "robustness_on_unseen": []})
    report = evaluate_candidate(model, *calibrated, manifest, held_out_scores(), [], strict)
    assert report["validation"]["answers"]["inconclusive"] > 0.01
    assert "needs work, not a wider band" in caplog.text


def held_out_scores() -> pd.DataFrame:
    """Two folds, each separable on its validation (no band, cut 0.5); AUROC 5/6 and 1/4 on their families.

    Alpha's held-out pairs are also scored re-shared (view ``jpeg_70``): there its AI images lost
    their trace and score as low as its humans.
    """
    rows = []
    for fold, ai, human in (("alpha", [0.9, 0.8, 0.3], [0.2, 0.4]), ("beta", [0.6, 0.1], [0.45, 0.7])):
        for label, score in ((0, 0.1), (0, 0.2), (1, 0.8), (1, 0.9)):
            rows.append(
                (
                    fold,
                    f"{fold}-v{score}",
                    "clean",
                    label,
                    "validation",
                    HUMAN if label == 0 else "x/1",
                    score,
                )
            )
        for label, scores, generator in ((1, ai, f"{fold}/1"), (0, human, HUMAN)):
            rows += [(fold, f"{fold}-h{s}", "clean", label, "held_out", generator, s) for s in scores]
    for label, scores, generator in ((1, [0.02, 0.04, 0.5], "alpha/1"), (0, [0.01, 0.3], HUMAN)):
        rows += [("alpha", f"alpha-r{s}", "jpeg_70", label, "held_out", generator, s) for s in scores]
    return pd.DataFrame(
        rows, columns=["fold", "path", "view", "label", "split", "generator", "probability_ai"]
    )


def test_each_held_out_family_is_calibrated_by_its_own_fold() -> None:
    scores = held_out_scores()
    held_out = calibrated_held_out_families(scores)
    assert list(held_out.columns) == HELD_OUT_COLUMNS
    raw_rows = scores[scores["split"] == "held_out"].sort_values("fold", kind="stable")
    assert list(held_out["path"]) == list(raw_rows["path"]), "every view, fold by fold"
    for fold, rows in held_out.groupby("fold"):
        own = scores[scores["fold"] == fold]
        validation, raw = own[own["split"] == "validation"], own[own["split"] == "held_out"]
        assert list(rows["view"]) == list(raw["view"])
        scaling = fit_platt([np.array([p]) for p in validation["probability_ai"]], validation["label"])
        np.testing.assert_allclose(rows["probability_ai"], scaling(raw["probability_ai"]))
    assert calibrated_held_out_families(scores.head(0)).empty


def test_the_band_also_meets_its_targets_on_the_held_out_families(
    report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]]
) -> None:
    held_out = calibrated_held_out_families(held_out_scores())
    band = (report["threshold_human"], report["threshold_ai"])
    for view in (held_out["view"] == "clean", held_out["view"] != "clean"):
        part = held_out[view]
        humans, answered_human = part[part["label"] == 0], part[part["probability_ai"] < band[0]]
        assert (humans["probability_ai"] >= band[1]).mean() <= 0.05
        assert answered_human.empty or (answered_human["label"] == 0).mean() >= 0.95
    assert report["band"]["chosen_on"] == [
        "validation",
        "held_out_families",
        "held_out_families re-shared",
        "validation JPEG",
        "validation PNG",
        "published generated images",
    ]
    assert report["band"]["held_out_families"] == ["alpha", "beta"]
    assert report["band"]["held_out_reshared_views"] == ["jpeg_70"]
    humans = held_out[(held_out["label"] == 0) & (held_out["view"] == "clean")]
    assert report["band"]["stored_formats"] == ["JPEG", "PNG"]
    assert report["band"]["held_out_answers"]["human_images"] == answer_shares(
        humans["probability_ai"], *band
    )
    validation = calibrated[0][calibrated[0]["split"] == "validation"]
    y, p = validation["label"].astype(int), validation["probability_ai"]
    validation_only = choose_band(y, p, choose_threshold(y, p), 0.05, 0.95, 0.02)
    assert band[0] <= validation_only[0] and band[1] >= validation_only[1], "only ever wider"
    assert band != validation_only, "beta's held-out humans outscore its AI images: the band widens"


def test_the_band_on_validation_alone_when_told(
    model: keras.Model, calibrated: tuple[pd.DataFrame, dict[str, Any]], manifest: pd.DataFrame
) -> None:
    validation_only = params(on_held_out_families=False, on_held_out_reshared=False, on_each_format=False)
    validation_only = validation_only.model_copy(update={"robustness": {}, "robustness_on_unseen": []})
    report = evaluate_candidate(model, *calibrated, manifest, held_out_scores(), [], validation_only)
    validation = calibrated[0][calibrated[0]["split"] == "validation"]
    y, p = validation["label"].astype(int), validation["probability_ai"]
    assert (report["threshold_human"], report["threshold_ai"]) == choose_band(
        y, p, report["threshold"], 0.05, 0.95, 0.02
    )
    assert report["band"]["chosen_on"] == ["validation"] and report["band"]["held_out_families"] == []


def test_the_band_also_meets_its_targets_on_each_stored_format(
    model: keras.Model,
    report: dict[str, Any],
    calibrated: tuple[pd.DataFrame, dict[str, Any]],
    manifest: pd.DataFrame,
    published: list[SourcePhoto],
) -> None:
    predictions = calibrated[0]
    stored = predictions["path"].map(manifest.set_index("path")["format"])
    band = (report["threshold_human"], report["threshold_ai"])
    validation = predictions[predictions["split"] == "validation"]
    slices = [validation[stored[validation.index] == name] for name in ("JPEG", "PNG")]
    for part in slices:
        humans = part.loc[part["label"] == 0, "probability_ai"]
        assert (humans >= band[1]).mean() <= 0.05
        answered_human = part[part["probability_ai"] < band[0]]
        assert answered_human.empty or (answered_human["label"] == 0).mean() >= 0.95
        assert (answered_human["label"] == 1).sum() <= 0.02 * (part["label"] == 1).sum()
    held_out = calibrated_held_out_families(held_out_scores())
    y, p = validation["label"].astype(int), validation["probability_ai"]
    assert band == choose_band(
        y,
        p,
        report["threshold"],
        0.05,
        0.95,
        0.02,
        also_on=[
            *(
                (part["label"], part["probability_ai"])
                for _, part in held_out.groupby(held_out["view"] != "clean")
            ),
            *((part["label"], part["probability_ai"]) for part in slices),
            published_scores(model, calibrated, published).band_set(),
        ],
    )


def test_a_trace_erased_by_re_sharing_is_not_taken_for_a_human(
    model: keras.Model, calibrated: tuple[pd.DataFrame, dict[str, Any]], manifest: pd.DataFrame
) -> None:
    alpha = held_out_scores().query("fold == 'alpha'")  # as stored, its lowest score is a human's
    reports = {
        reshared: evaluate_candidate(
            model,
            *calibrated,
            manifest,
            alpha,
            [],
            params(on_held_out_reshared=reshared, on_each_format=False).model_copy(
                update={"robustness": {}, "robustness_on_unseen": []}
            ),
        )
        for reshared in (True, False)
    }
    with_views, without = reports[True], reports[False]
    assert with_views["threshold_human"] < without["threshold_human"], "re-shared AI images lower the edge"
    assert with_views["threshold_ai"] == without["threshold_ai"]
    assert with_views["band"]["chosen_on"] == [
        "validation",
        "held_out_families",
        "held_out_families re-shared",
    ]
    assert without["band"]["chosen_on"] == ["validation", "held_out_families"]
    reshared = calibrated_held_out_families(alpha).query("view != 'clean'")
    answers = {
        name: answers_by_class(
            reshared["label"], reshared["probability_ai"], (result["threshold_human"], result["threshold_ai"])
        )
        for name, result in (("with", with_views), ("without", without))
    }
    assert with_views["band"]["held_out_reshared_answers"] == answers["with"]
    assert answers["without"]["ai_images"]["human"] > 0 and answers["with"]["ai_images"]["human"] == 0
    assert without["band"]["held_out_reshared_views"] == [], "not chosen on, not reported"


def test_the_format_table_has_a_row_per_split_and_stored_format(
    report: dict[str, Any], calibrated: tuple[pd.DataFrame, dict[str, Any]], manifest: pd.DataFrame
) -> None:
    predictions = calibrated[0]
    table = pd.DataFrame(report["formats"])
    assert list(table.columns) == FORMAT_COLUMNS
    assert set(zip(table["split"], table["format"], strict=True)) == {
        ("validation", "JPEG"),
        ("validation", "PNG"),
        ("test", "PNG"),
        ("unseen", "PNG"),
    }
    jpeg = table[(table["split"] == "validation") & (table["format"] == "JPEG")].iloc[0]
    validation = predictions[predictions["split"] == "validation"]
    part = validation[validation["pair"].str.contains("realesrgan")]
    humans, ai = part[part["label"] == 0], part[part["label"] == 1]
    assert (jpeg["human_images"], jpeg["ai_images"]) == (20, 20)
    assert jpeg["roc_auc"] == pytest.approx(roc_auc_score(part["label"].astype(int), part["probability_ai"]))
    assert jpeg["human_ai_rate"] == np.mean(humans["probability_ai"] >= report["threshold_ai"])
    assert jpeg["ai_recall"] == np.mean(ai["probability_ai"] >= report["threshold_ai"])
    test = table[table["split"] == "test"].iloc[0]
    assert test["human_images"] + test["ai_images"] == 10, "unlabelled images are not judged"


def test_the_held_out_families_summary_by_hand() -> None:
    summary = summarise_held_out_families(held_out_scores(), params())
    folds = {fold["family"]: fold for fold in summary["folds"]}
    assert list(folds) == ["alpha", "beta"]
    assert set(folds["alpha"]) == set(UNSEEN_FOLD_COLUMNS)
    assert folds["alpha"]["roc_auc"] == pytest.approx(5 / 6)
    assert folds["beta"]["roc_auc"] == pytest.approx(1 / 4)
    assert (folds["alpha"]["threshold_human"], folds["alpha"]["threshold_ai"]) == (0.5, 0.5)
    assert (folds["alpha"]["ai_images"], folds["alpha"]["human_images"]) == (3, 2)
    assert folds["alpha"]["recall"] == pytest.approx(2 / 3)
    assert (folds["alpha"]["human_fpr"], folds["beta"]["human_fpr"]) == (0.0, 0.5)
    assert folds["beta"]["recall"] == 0.5
    assert folds["beta"]["inconclusive_rate"] == 0.0
    assert summary["mean_roc_auc"] == pytest.approx((5 / 6 + 1 / 4) / 2)
    assert summary["min_roc_auc"] == pytest.approx(1 / 4)
    assert summary["worst_family"] == "beta"
    assert summary["mean_human_fpr"] == 0.25
    assert (folds["alpha"]["reshared_images"], folds["beta"]["reshared_images"]) == (5, 0)
    # alpha's re-shared AI views 0.02, 0.04, 0.5 against its twins' 0.01, 0.3: 4 of 6 pairs ordered
    assert folds["alpha"]["reshared_roc_auc"] == pytest.approx(4 / 6)
    assert math.isnan(folds["beta"]["reshared_roc_auc"]), "beta has no re-shared views"
    assert summary["mean_reshared_roc_auc"] == pytest.approx(4 / 6), "the folds that have them"
    as_stored = summarise_held_out_families(held_out_scores().query("view == 'clean'"), params())
    for fold in (*as_stored["folds"], *summary["folds"]):
        fold.pop("reshared_images"), fold.pop("reshared_roc_auc")
    assert as_stored["folds"] == summary["folds"], "the rest of the table is of images as stored"


def test_each_fold_chooses_its_band_on_its_own_validation() -> None:
    scores = held_out_scores()
    beta_validation = (scores["fold"] == "beta") & (scores["split"] == "validation")
    scores.loc[beta_validation, "probability_ai"] = [0.1, 0.2, 0.95, 0.99]  # its cut moves up
    folds = {f["family"]: f for f in summarise_held_out_families(scores, params())["folds"]}
    assert folds["alpha"]["threshold_ai"] == 0.5
    assert folds["beta"]["threshold_ai"] == pytest.approx(0.575)
    assert folds["beta"]["human_fpr"] == 0.5 and folds["beta"]["recall"] == 0.5


def test_no_families_no_folds() -> None:
    summary = summarise_held_out_families(held_out_scores().head(0), params())
    assert summary["folds"] == [] and summary["worst_family"] == ""
    assert math.isnan(summary["mean_roc_auc"]) and math.isnan(summary["mean_human_fpr"])
    assert math.isnan(summary["mean_reshared_roc_auc"])


def test_the_comparison_puts_unseen_families_first(report: dict[str, Any]) -> None:
    summary = summarise_held_out_families(held_out_scores(), params())
    other = {**summary, "folds": summary["folds"][:1], "mean_roc_auc": 0.6, "worst_family": "alpha"}
    worse_f1 = {
        **report,
        "validation": {**report["validation"], "at_threshold": {"accuracy": 0.1, "f1": 0.2}},
    }
    worse_f1["validation"]["at_threshold"]["roc_auc"] = 0.5
    worse_f1["wild_generated"] = {}
    bars, scatter, table, families, chart = compare_candidates(
        report, worse_f1, summary, other, names=["a", "b"]
    )
    assert all(isinstance(figure, Figure) for figure in (bars, scatter, chart))
    assert list(table["candidate"]) == ["a", "b"]
    assert list(table.columns[:5]) == [
        "candidate",
        "unseen_roc_auc_mean",
        "unseen_roc_auc_min",
        "unseen_worst_family",
        "unseen_human_fpr",
    ]
    rows = table.set_index("candidate")
    assert rows.loc["a", "unseen_roc_auc_mean"] == summary["mean_roc_auc"]
    assert rows.loc["b", "unseen_roc_auc_mean"] == 0.6, "each candidate gets its own summary"
    assert rows.loc["b", "f1"] == 0.2
    assert rows.loc["a", "unseen_reshared_roc_auc_mean"] == summary["mean_reshared_roc_auc"]
    assert rows.loc["a", "threshold_ai"] == report["threshold_ai"]
    published = report["wild_generated"]
    assert rows.loc["a", "wild_generated_roc_auc"] == published["at_threshold"]["roc_auc"]
    assert rows.loc["a", "wild_generated_answered_human"] == published["answers_cross_fitted"]["human"], (
        "the band was chosen on them: in-sample, the miss-rate target fixes the share"
    )
    assert rows.loc["b", ["wild_generated_roc_auc", "wild_generated_answered_human"]].isna().all(), (
        "unmeasured"
    )
    assert rows.loc["a", "ece_after"] == report["calibration"]["ece_after"]
    assert rows.loc["a", "ms_per_image"] == pytest.approx(1000 * report["seconds_per_image"])
    assert list(families.columns) == ["candidate", *UNSEEN_FOLD_COLUMNS]
    assert list(zip(families["candidate"], families["family"], strict=True)) == [
        ("a", "alpha"),
        ("a", "beta"),
        ("b", "alpha"),
    ]


def test_the_comparison_without_families_still_charts(report: dict[str, Any]) -> None:
    empty = summarise_held_out_families(held_out_scores().head(0), params())
    *_, families, chart = compare_candidates(report, empty, names=["a"])
    assert families.empty
    assert "No generator families" in chart.texts[0].get_text()
