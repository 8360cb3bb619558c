"""The model card carries the figures a reader needs to trust or distrust the model, unseen families first."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ai_image_detection.contract import NEVER_CUT
from ai_image_detection.model_card import render_model_card


def metrics(f1: float) -> dict[str, float]:
    names = ("accuracy", "precision", "recall", "balanced_accuracy", "roc_auc", "average_precision")
    return {
        **dict.fromkeys(names, 0.9),
        "f1": f1,
        "ece": 0.05,
        "tpr_at_fpr_1pct": 0.7,
        "tpr_at_fpr_5pct": 0.8,
    }


def card_inputs() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """A small_cnn export, its evaluation (band chosen on two held-out families), int8, data, folds."""
    export_report = {
        "candidate": "small_cnn",
        "reason": "small_cnn: best validation F1",
        "parity_max_abs_difference": 6e-8,
        "parity_images": 64,
        "parity_tolerance": 1e-4,
        "mlflow_run_id": "run123",
        "data_version": "md5abc",
        "shipped_precision": "fp32",
        "registry": {"registered_model": "ai-image-detector", "version": "7", "reason": "champion moves"},
    }
    evaluation = {
        "threshold": 0.4321,
        "threshold_objective": "f1",
        "threshold_human": 0.2468,
        "threshold_ai": 0.8642,
        "band": {
            "targets": {"max_fpr": 0.05, "min_human_precision": 0.95, "max_miss_rate": 0.02},
            "chosen_on": [
                "validation",
                "held_out_families",
                "held_out_families re-shared",
                "validation JPEG",
                "validation PNG",
                "published generated images",
            ],
            "stored_formats": ["JPEG", "PNG"],
            "held_out_families": ["realcugan", "waifu2x"],
            "held_out_answers": {
                "ai_images": {"human": 0.05, "inconclusive": 0.25, "ai": 0.7},
                "human_images": {"human": 0.6, "inconclusive": 0.36, "ai": 0.04},
            },
            "held_out_reshared_views": ["blur_1.5", "jpeg_70"],
            "held_out_reshared_answers": {
                "ai_images": {"human": 0.02, "inconclusive": 0.58, "ai": 0.4},
                "human_images": {"human": 0.31, "inconclusive": 0.66, "ai": 0.03},
            },
        },
        "max_tiles": 9,
        "calibration": {
            "method": "platt",
            "slope": 0.4,
            "intercept": 0.1,
            "ece_before": 0.21,
            "ece_after": 0.03,
        },
        "parameters": 1234,
        "size_mb": 0.01,
        "validation": {
            "at_threshold": metrics(0.95),
            "at_0.5": metrics(0.94),
            "answers": {"human": 0.45, "inconclusive": 0.1, "ai": 0.45},
        },
        "unseen": {
            "at_threshold": metrics(0.7),
            "at_0.5": metrics(0.7),
            "answers": {"human": 0.3, "inconclusive": 0.4, "ai": 0.3},
        },
        "families": [
            {
                "split": "validation",
                "family": "realcugan",
                "label": 1,
                "images": 40,
                "roc_auc": 0.97,
                "ai_rate": 0.9,
                "inconclusive_rate": 0.05,
            },
            {
                "split": "unseen",
                "family": "camera",
                "label": 0,
                "images": 12,
                "roc_auc": float("nan"),
                "ai_rate": 0.08,
                "inconclusive_rate": 0.25,
            },
        ],
        "formats": [
            {
                "split": "validation",
                "format": "PNG",
                "human_images": 30,
                "ai_images": 30,
                "roc_auc": 0.91,
                "human_ai_rate": 0.1,
                "human_inconclusive_rate": 0.3,
                "ai_recall": 0.8,
            },
            {
                "split": "test",
                "format": "JPEG",
                "human_images": 0,
                "ai_images": 5,
                "roc_auc": float("nan"),
                "human_ai_rate": float("nan"),
                "human_inconclusive_rate": float("nan"),
                "ai_recall": 1.0,
            },
        ],
        "robustness": {"none": metrics(0.95), "jpeg_q50": metrics(0.9), "blur_sigma_1": metrics(0.6)},
        "robustness_answers": {
            name: {
                "human_images": {"human": 0.9 - accused, "inconclusive": 0.1, "ai": accused},
                "ai_images": {"human": 0.05, "inconclusive": 0.15, "ai": 0.8},
            }
            for name, accused in (("none", 0.0), ("jpeg_q50", 0.04), ("downscale_90pct", 0.16))
        },
        "robustness_unseen": {"none": metrics(0.85), "blur_sigma_1": metrics(0.45)},
        "robustness_unseen_answers": {
            name: {
                "human_images": {"human": 0.7, "inconclusive": 0.25, "ai": 0.05},
                "ai_images": {"human": missed, "inconclusive": 0.2, "ai": 0.8 - missed},
            }
            for name, missed in (("none", 0.1), ("blur_sigma_1", 0.55))
        },
        "wild_generated": {
            "images": 3,
            "templates": 2,
            "sources": ["templates-media==1.0: MIT"],
            "human_controls": {
                "images": 40,
                "splits": ["validation", "unseen"],
                "resave": {"kind": "webp", "quality": 80},
            },
            "answers": {
                "ai_images": {"human": 1 / 3, "inconclusive": 2 / 3, "ai": 0.0},
                "human_images": {"human": 0.3, "inconclusive": 0.675, "ai": 0.025},
            },
            "at_threshold": {**metrics(0.4), "roc_auc": 0.642, "recall": 0.0},
            "roc_auc_humans_as_stored": 0.667,
            "by_source": [
                {
                    "source": "templates-media==1.0",
                    "images": 3,
                    "roc_auc": 0.642,
                    "roc_auc_humans_as_stored": 0.667,
                    "answers": {"human": 1 / 3, "inconclusive": 2 / 3, "ai": 0.0},
                }
            ],
            "band_chosen_on_them": True,
            "answers_cross_fitted": {"human": 1 / 3, "inconclusive": 2 / 3, "ai": 0.0},
            "per_image": [
                {
                    "template": "image_z_image",
                    "member": "t/image_z_image-1.webp",
                    "probability_ai": 0.0001,
                    "answer": "human",
                    "answer_cross_fitted": "inconclusive",
                },
                {
                    "template": "flux_schnell",
                    "member": "t/flux_schnell-1.webp",
                    "probability_ai": 0.2,
                    "answer": "inconclusive",
                    "answer_cross_fitted": "human",
                },
                {
                    "template": "flux_schnell",
                    "member": "t/flux_schnell-2.webp",
                    "probability_ai": 0.3,
                    "answer": "inconclusive",
                    "answer_cross_fitted": "inconclusive",
                },
            ],
        },
    }
    quantization = {
        "method": "dynamic_mixed",
        "methods": {"static": {}, "dynamic": {}, "dynamic_mixed": {}},
        "mixed_precision": {"groups": 6, "float_groups": [0], "float_nodes": 6, "quantized_nodes": 26},
        "f1_fp32": 0.95,
        "f1_int8": 0.94,
        "f1_change_points": -1.0,
        "speedup_batch1": 1.5,
        "speedup_batch32": 1.6,
        "calibration_images": 256,
    }
    manifest = pd.DataFrame(
        {
            "split": ["train", "train", "validation", "validation", "test"],
            "label": [0, 1, 0, 1, None],
            "group": ["a", "a", "b", "b", "c"],
        }
    )
    unseen_folds = pd.DataFrame(
        {
            "candidate": ["small_cnn", "small_cnn"],
            "family": ["waifu2x", "realesrgan"],
            "ai_images": [30, 25],
            "human_images": [30, 25],
            "roc_auc": [0.612, 0.734],
            "recall": [0.2, 0.4],
            "human_fpr": [0.05, 0.04],
            "inconclusive_rate": [0.5, 0.3],
            "threshold_human": [0.3, 0.3],
            "threshold_ai": [0.8, 0.8],
            "reshared_images": [0, 0],
            "reshared_roc_auc": [float("nan"), float("nan")],
        }
    )
    return export_report, evaluation, quantization, manifest, unseen_folds


def test_card_reports_data_metrics_robustness_int8_and_limits() -> None:
    card = render_model_card(*card_inputs())

    assert card.startswith("# Model card: ai-image-detector v7")
    assert "threshold is 0.4321" in card
    assert '"ai" at or above **0.8642**, "human" below\n  **0.2468**, and "inconclusive" in between' in card
    assert "mean over up to 9 native-resolution tiles" in card
    targets = ['at most 5% of human images answered "ai"', 'least 95% of "human" answers right']
    assert ", at\n  ".join(targets) + ' and at most\n  2% of AI images answered "human"' in card
    assert "ECE 0.210 before, 0.030 after" in card
    assert "`run123`" in card
    assert "`md5abc`" in card
    assert "| train | 1 | 1 | 0 | 1 |" in card, "per split: AI, human, unlabelled, source photos"
    assert "| validation, at chosen threshold | 0.900 | 0.900 | 0.900 | 0.950 |" in card
    assert "test (unseen photos)" not in card, "no test row when the test split has no labels"
    assert "| blur_sigma_1 |" in card
    assert "weakest case above is `blur_sigma_1` (F1 0.600)" in card
    assert "| downscale_90pct | 0.740 | 0.100 | 0.160 | 0.050 | 0.150 | 0.800 |" in card
    assert 'after\n  `downscale_90pct`, 16% of the human validation images were answered "ai"' in card
    assert "-1.00 points" in card
    assert "dynamic_mixed quantisation (the best on validation of static, dynamic, dynamic_mixed)." in card
    assert "6 of its 32 matrix products stay float32: the most sensitive of 6 runs in graph order." in card
    assert "## Intended use" in card
    assert "held out of training,\n  showed the model unreliable" in card
    assert "Generator families it never saw (other" in card, "the limitation names the unseen-family risk"
    assert "leave-one-family-out table\n  above is the honest estimate" in card
    headline = card.split("## Generator families it never saw (the headline)")[1].split("## Metrics")[0]
    assert "| waifu2x | 30 | 30 | 0.612 | 0.200 | 0.050 | 0.500 |" in headline
    assert "| realesrgan | 25 | 25 | 0.734 | 0.400 | 0.040 | 0.300 |" in headline
    assert card.index("## Generator families it never saw") < card.index("## Metrics"), "the headline first"
    assert "| validation | 0.450 | 0.100 | 0.450 |" in card
    assert (
        "chosen on\n  validation (and on each of its stored formats apart: JPEG, PNG) and on the images "
        "of the 2 generator families held out of training" in card
    )
    assert "| held-out families, AI images | 0.050 | 0.250 | 0.700 |" in card
    assert "| held-out families, human twins | 0.600 | 0.360 | 0.040 |" in card
    assert "| held-out families re-shared, AI images | 0.020 | 0.580 | 0.400 |" in card
    assert "| held-out families re-shared, human twins | 0.310 | 0.660 | 0.030 |" in card
    assert "on those families' re-shared copies (pooled: `blur_1.5`, `jpeg_70`), so that a trace" in " ".join(
        card.split()
    )
    assert "| unseen | 0.300 | 0.400 | 0.300 |" in card
    assert "| validation | realcugan | AI | 40 | 0.970 | 0.900 | 0.050 |" in card
    assert "| unseen | camera | human | 12 |  | 0.080 | 0.250 |" in card, "no AUROC for a human family"
    assert "| validation | PNG | 30 | 0.100 | 0.300 | 30 | 0.800 | 0.910 |" in card
    assert "| test | JPEG | 0 | nan | nan | 5 | 1.000 |  |" in card, "no AUROC without both classes"
    unseen_reshared = card.split("## Robustness on the generator family it never saw")[1].split("## int8")[0]
    assert "| none | 0.900 | 0.900 | 0.900 | 0.850 |" in unseen_reshared
    assert "| blur_sigma_1 | 0.900 | 0.900 | 0.900 | 0.450 |" in unseen_reshared
    assert "| blur_sigma_1 | 0.700 | 0.250 | 0.050 | 0.550 | 0.200 | 0.250 |" in unseen_reshared


def test_a_probes_headline_adds_its_folds_on_re_shared_copies() -> None:
    export_report, evaluation, quantization, manifest, unseen_folds = card_inputs()
    before = render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    assert "AUROC re-shared" not in before, "a whole detector's folds score the images as stored only"
    unseen_folds["reshared_images"] = [110, 90]
    unseen_folds["reshared_roc_auc"] = [0.551, 0.702]
    card = render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    headline = card.split("## Generator families it never saw (the headline)")[1].split("## Metrics")[0]
    assert "| inconclusive | AUROC re-shared |" in headline
    assert "| waifu2x | 30 | 30 | 0.612 | 0.200 | 0.050 | 0.500 | 0.551 |" in headline
    assert "AUROC re-shared: the same fold on the pairs' blurred, shrunk and re-compressed" in " ".join(
        headline.split()
    )


def test_a_report_without_unseen_robustness_says_it_was_not_measured() -> None:
    export_report, evaluation, quantization, manifest, unseen_folds = card_inputs()
    evaluation["robustness_unseen"], evaluation["robustness_unseen_answers"] = {}, {}
    card = render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    unseen_reshared = card.split("## Robustness on the generator family it never saw")[1].split("## int8")[0]
    assert "Not measured: no labelled unseen split" in unseen_reshared
    assert "| blur_sigma_1 |" not in unseen_reshared


PUBLISHED_HEADING = "## Published images of today's generators (never trained on)"


def published_section(card: str) -> str:
    return card.split(PUBLISHED_HEADING)[1].split("## int8", maxsplit=1)[0]


def test_the_card_says_what_the_model_answers_to_published_generated_images() -> None:
    card = render_model_card(*card_inputs())
    section = published_section(card)
    assert (
        "3 images, the previews of 2 text-to-image workflow templates and\n"
        "presets (templates-media==1.0: MIT)" in section
    )
    assert "against 40 human images of\nvalidation and unseen re-saved as webp (quality 80)" in section
    assert "| `templates-media==1.0` | 3 | 0.642 (0.667) | 0.333 | 0.667 | 0.000 |" in section
    assert "AUROC **0.642**\n(0.667 against the same humans as stored)" in section
    assert "| generated images | 0.333 | 0.667 | 0.000 |" in section
    assert "| human controls, re-saved | 0.300 | 0.675 | 0.025 |" in section
    assert 'Generated images answered "human": `image_z_image`.' in section
    assert (
        "answered on the other (both ways), the generated images were answered human 0.333, "
        'inconclusive 0.667, ai 0.000 ("human": `flux_schnell`).'
    ) in section
    assert "and on the published images of today's generators with their human controls (below)," in card


def test_a_band_not_chosen_on_the_published_images_says_so() -> None:
    export_report, evaluation, quantization, manifest, unseen_folds = card_inputs()
    evaluation["wild_generated"]["answers_cross_fitted"] = None
    evaluation["band"]["chosen_on"].remove("published generated images")
    card = render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    assert "(`evaluation.band.on_wild_generated: false`)" in published_section(card)
    assert "published images of today's generators with their human controls" not in card


def test_a_report_without_published_generated_images_says_it_was_not_measured() -> None:
    export_report, evaluation, quantization, manifest, unseen_folds = card_inputs()
    evaluation["wild_generated"] = {}
    section = published_section(
        render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    )
    assert section.strip() == "Not measured: no published generated images (catalog `wild_generated_images`)."


def test_a_band_without_an_ai_cut_says_the_model_never_answers_ai() -> None:
    export_report, evaluation, quantization, manifest, unseen_folds = card_inputs()
    evaluation.update(threshold_human=0.0, threshold_ai=NEVER_CUT)
    card = render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    assert 'The answer\n  is never "ai", never "human", and "inconclusive" in between' in card


def test_a_band_chosen_on_validation_alone_says_so() -> None:
    export_report, evaluation, quantization, manifest, unseen_folds = card_inputs()
    evaluation["band"] = {
        **evaluation["band"],
        "chosen_on": ["validation"],
        "stored_formats": [],
        "held_out_families": [],
        "held_out_answers": {"ai_images": {}, "human_images": {}},
        "held_out_reshared_views": [],
        "held_out_reshared_answers": {"ai_images": {}, "human_images": {}},
    }
    card = render_model_card(export_report, evaluation, quantization, manifest, unseen_folds)
    assert '"inconclusive" in between (chosen on\n  validation for at most' in card
    assert "held-out families, AI images" not in card
    assert "re-shared" not in card.split("## Answers")[1].split("##")[0]
