"""The model card of a registered detector, as Markdown (Mitchell et al., 2019, in short form)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from ai_image_detection.contract import VERDICTS

_METRICS = (
    ("accuracy", "accuracy"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("f1", "F1"),
    ("balanced_accuracy", "balanced acc."),
    ("roc_auc", "ROC AUC"),
    ("average_precision", "AP"),
    ("ece", "ECE"),
    ("tpr_at_fpr_1pct", "TPR@1%FPR"),
    ("tpr_at_fpr_5pct", "TPR@5%FPR"),
)


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _settings(perturbation: dict[str, Any]) -> str:
    """A perturbation in words: ``webp (quality 80)``."""
    settings = ", ".join(f"{name} {value:g}" for name, value in perturbation.items() if name != "kind")
    return f"{perturbation['kind']} ({settings})"


def _band_words(threshold_human: float, threshold_ai: float) -> str:
    """The band's edges in words; an edge no score crosses (0, or above 1) is an answer never given."""
    ai = 'never "ai"' if threshold_ai > 1.0 else f'"ai" at or above **{threshold_ai:.4f}**'
    human = 'never "human"' if threshold_human <= 0.0 else f'"human" below\n  **{threshold_human:.4f}**'
    return f"{ai}, {human}"


def _auroc(value: float) -> str:
    """An AUROC cell: empty when undefined (a single class)."""
    return "" if pd.isna(value) else format(value, ".3f")


def _metrics_table(rows: dict[str, dict[str, float]]) -> str:
    header = ["", *(label for _, label in _METRICS)]
    return _table(header, [[name, *(f"{m[key]:.3f}" for key, _ in _METRICS)] for name, m in rows.items()])


def _data_table(image_manifest: pd.DataFrame) -> str:
    labels = image_manifest["label"].map({0: "human", 1: "AI"}).fillna("unlabelled")
    counts = pd.crosstab(image_manifest["split"], labels)
    columns = [str(column) for column in counts.columns]
    rows = [
        [
            str(split),
            *(str(row[c]) for c in counts.columns),
            str(image_manifest.loc[image_manifest["split"] == split, "group"].nunique()),
        ]
        for split, row in counts.iterrows()
    ]
    return _table(["split", *columns, "source photos"], rows)


def _reshared_note(folds: pd.DataFrame) -> str:
    if not (folds["reshared_images"] > 0).any():
        return ""
    return (
        "; AUROC re-shared: the same fold on the pairs' blurred, shrunk and re-compressed copies "
        "(the re-shared views cached for training, pooled)"
    )


def _unseen_table(folds: pd.DataFrame) -> str:
    header = ["held-out family", "AI images", "human twins", "AUROC", "recall", "human FPR", "inconclusive"]
    reshared = bool((folds["reshared_images"] > 0).any())
    if reshared:
        header.append("AUROC re-shared")
    rows = [
        [
            str(row.family),
            str(row.ai_images),
            str(row.human_images),
            f"{row.roc_auc:.3f}",
            f"{row.recall:.3f}",
            f"{row.human_fpr:.3f}",
            f"{row.inconclusive_rate:.3f}",
            *([f"{row.reshared_roc_auc:.3f}"] if reshared else []),
        ]
        for row in folds.itertuples()
    ]
    return _table(header, rows)


def _family_table(families: list[dict[str, Any]]) -> str:
    header = ["split", "family", "class", "images", "AUROC vs humans", "answered ai", "inconclusive"]
    rows = [
        [
            row["split"],
            row["family"],
            "AI" if row["label"] else "human",
            str(row["images"]),
            _auroc(row["roc_auc"]),
            f"{row['ai_rate']:.3f}",
            f"{row['inconclusive_rate']:.3f}",
        ]
        for row in families
    ]
    return _table(header, rows)


def _format_table(formats: list[dict[str, Any]]) -> str:
    header = [
        "split",
        "stored as",
        "human images",
        "answered ai",
        "inconclusive",
        "AI images",
        "answered ai",
        "AUROC",
    ]
    rows = [
        [
            row["split"],
            row["format"],
            str(row["human_images"]),
            f"{row['human_ai_rate']:.3f}",
            f"{row['human_inconclusive_rate']:.3f}",
            str(row["ai_images"]),
            f"{row['ai_recall']:.3f}",
            _auroc(row["roc_auc"]),
        ]
        for row in formats
    ]
    return _table(header, rows)


def _answers(evaluation: dict[str, Any]) -> str:
    shares_by_row: dict[str, dict[str, float]] = {
        split: evaluation[split]["answers"]
        for split in ("validation", "test", "unseen")
        if split in evaluation
    }
    if evaluation["band"]["held_out_families"]:
        held_out = evaluation["band"]["held_out_answers"]
        shares_by_row["held-out families, AI images"] = held_out["ai_images"]
        shares_by_row["held-out families, human twins"] = held_out["human_images"]
    if evaluation["band"]["held_out_reshared_views"]:
        reshared = evaluation["band"]["held_out_reshared_answers"]
        shares_by_row["held-out families re-shared, AI images"] = reshared["ai_images"]
        shares_by_row["held-out families re-shared, human twins"] = reshared["human_images"]
    rows = [
        [name, *(f"{shares[answer]:.3f}" for answer in VERDICTS)] for name, shares in shares_by_row.items()
    ]
    return _table(["split", *VERDICTS], rows)


def _reshared_answers(robustness_answers: dict[str, dict[str, dict[str, float]]]) -> str:
    header = [
        "perturbation",
        "human images: human",
        "inconclusive",
        "ai",
        "AI images: human",
        "inconclusive",
        "ai",
    ]
    rows = [
        [
            name,
            *(
                f"{answers[kind][answer]:.3f}"
                for kind in ("human_images", "ai_images")
                for answer in VERDICTS
            ),
        ]
        for name, answers in robustness_answers.items()
    ]
    return _table(header, rows)


def _unseen_robustness(
    metrics: dict[str, dict[str, float]], answers: dict[str, dict[str, dict[str, float]]]
) -> str:
    if not metrics:
        return "Not measured: no labelled unseen split, or `evaluation.robustness_on_unseen` is empty."
    return f"""{_metrics_table(metrics)}

Answers on the same re-shared unseen-split images:

{_reshared_answers(answers)}"""


def _wild_generated(report: dict[str, Any]) -> str:
    if not report:
        return "Not measured: no published generated images (catalog `wild_generated_images`)."
    controls = report["human_controls"]
    resave = controls["resave"]
    rows = [
        [name, *(f"{report['answers'][kind][answer]:.3f}" for answer in VERDICTS)]
        for name, kind in (("generated images", "ai_images"), ("human controls, re-saved", "human_images"))
    ]
    missed = [row["template"] for row in report["per_image"] if row["answer"] == "human"]
    cross_fitted = report["answers_cross_fitted"]
    if cross_fitted is None:
        heeded = "The band was not chosen on these images (`evaluation.band.on_wild_generated: false`)."
    else:
        missed_cross_fitted = [
            row["template"] for row in report["per_image"] if row["answer_cross_fitted"] == "human"
        ]
        heeded = (
            "The band was chosen on these images too (pooled with the controls), so that the model does "
            'not answer "human" to what it cannot tell from a photograph; chosen on one half of them and '
            "answered on the other (both ways), the generated images were answered "
            + ", ".join(f"{answer} {cross_fitted[answer]:.3f}" for answer in VERDICTS)
            + f' ("human": {", ".join(f"`{name}`" for name in missed_cross_fitted) or "none"}).'
        )
    templates = report["templates"]
    by_source = [
        [
            f"`{row['source']}`",
            str(row["images"]),
            f"{_auroc(row['roc_auc'])} ({_auroc(row['roc_auc_humans_as_stored'])})",
            *(f"{row['answers'][answer]:.3f}" for answer in VERDICTS),
        ]
        for row in report["by_source"]
    ]
    return f"""{report["images"]} images, the previews of {templates} text-to-image workflow templates and
presets ({"; ".join(report["sources"])}), each the output of the generator it names, scored as
published (the files as their packages ship them), against {controls["images"]} human images of
{" and ".join(controls["splits"])} re-saved as {_settings(resave)}. None of these generators
is among the training families. AUROC **{_auroc(report["at_threshold"]["roc_auc"])}**
({_auroc(report["roc_auc_humans_as_stored"])} against the same humans as stored); recall at the
forced-choice threshold {report["at_threshold"]["recall"]:.3f}.

{_table(["images", *VERDICTS], rows)}

By package (AUROC against the re-saved controls, in brackets against the humans as stored; the
generated images' answers):

{_table(["package", "images", "AUROC", *VERDICTS], by_source)}

Generated images answered "human": {", ".join(f"`{name}`" for name in missed) or "none"}. {heeded}"""


def _int8_variant(quantization: dict[str, Any]) -> str:
    methods = ", ".join(quantization["methods"])
    line = f"{quantization['method']} quantisation (the best on validation of {methods})."
    if quantization["method"] == "dynamic_mixed":
        mixed = quantization["mixed_precision"]
        total = mixed["float_nodes"] + mixed["quantized_nodes"]
        line += (
            f" {mixed['float_nodes']} of its {total} matrix products stay float32: the most sensitive of"
            f" {mixed['groups']} runs in graph order."
        )
    return line


def _band_basis(evaluation: dict[str, Any]) -> str:
    families = evaluation["band"]["held_out_families"]
    views = evaluation["band"]["held_out_reshared_views"]
    formats = evaluation["band"]["stored_formats"]
    basis = "validation"
    if formats:
        basis += f" (and on each of its stored formats apart: {', '.join(formats)})"
    if families:
        basis += (
            f" and on the images of the {len(families)} generator families held out of training, "
            "each scored by the fold that never saw it,"
        )
    if views:
        basis += (
            " and on those families' re-shared copies (pooled: "
            f"{', '.join(f'`{view}`' for view in views)}), so that a trace erased by re-sharing is "
            "not taken for a human,"
        )
    if "published generated images" in evaluation["band"]["chosen_on"]:
        basis += " and on the published images of today's generators with their human controls (below),"
    return basis


def _attribution(attribution: dict[str, Any]) -> str:
    if not attribution.get("families"):
        return "No attribution head: the training data named no generator family."
    rows = [
        [
            split,
            str(attribution[split]["images"]),
            f"{attribution[split]['accuracy']:.3f}",
            ", ".join(f"{name} {value:.2f}" for name, value in attribution[split]["per_family"].items()),
        ]
        for split in ("validation", "test")
        if split in attribution
    ]
    return (
        f"Columns: {', '.join(attribution['families'])}. Accuracy of the closest family on images of "
        "families it was trained on (unseen families cannot be named right and are left out):\n\n"
        + _table(["split", "images", "accuracy", "per family"], rows)
    )


def render_model_card(
    export_report: dict[str, Any],
    evaluation: dict[str, Any],
    quantization: dict[str, Any],
    image_manifest: pd.DataFrame,
    unseen_folds: pd.DataFrame,
) -> str:
    """Write the card: what the model is, what it was trained on, how good it is, and where it fails.

    Args:
        export_report: The export pipeline's report (selection, parity, registry decision).
        evaluation: The selected candidate's evaluation report.
        quantization: The int8 report.
        image_manifest: The manifest the model was trained and evaluated on.
        unseen_folds: The selected candidate's leave-one-family-out rows (the headline table).

    Returns:
        The card as Markdown.
    """
    registry = export_report["registry"]
    validation, robustness = evaluation["validation"], evaluation["robustness"]
    splits = {
        "validation, at chosen threshold": validation["at_threshold"],
        "validation, at 0.5": validation["at_0.5"],
    }
    if "test" in evaluation:
        splits["test (unseen photos), at chosen threshold"] = evaluation["test"]["at_threshold"]
        splits["test (unseen photos), at 0.5"] = evaluation["test"]["at_0.5"]
    weakest = min(robustness.items(), key=lambda item: item[1]["f1"])
    accused = max(evaluation["robustness_answers"].items(), key=lambda item: item[1]["human_images"]["ai"])
    calibration = evaluation["calibration"]
    targets = evaluation["band"]["targets"]
    edges = _band_words(evaluation["threshold_human"], evaluation["threshold_ai"])
    return f"""# Model card: {registry["registered_model"]} v{registry["version"]}

## Model
- Architecture: `{export_report["candidate"]}`, {evaluation["parameters"]:,} parameters
  ({evaluation["size_mb"]} MB float32).
- Output: calibrated probability that the image is AI-generated (Platt scaling inside the graph,
  fitted on validation: ECE {calibration["ece_before"]:.3f} before, {calibration["ece_after"]:.3f} after).
  An image's score is the mean over up to {evaluation["max_tiles"]} native-resolution tiles. The answer
  is {edges}, and "inconclusive" in between (chosen on
  {_band_basis(evaluation)} for at most {targets["max_fpr"]:.0%} of human images answered "ai", at
  least {targets["min_human_precision"]:.0%} of "human" answers right and at most
  {targets["max_miss_rate"]:.0%} of AI images answered "human");
  the single forced-choice threshold is {evaluation["threshold"]:.4f} (maximises
  {evaluation["threshold_objective"]} on validation).
- Artefact: ONNX, input `image` float32 NHWC raw 0-255 RGB, output `probability_ai` [N, 1]
  (then `family_probabilities` [N, K] when it attributes); shipped precision
  **{export_report.get("shipped_precision", "fp32")}**.
- Selection: {export_report["reason"]}.
- Export parity: max |Keras - ONNX| = {export_report["parity_max_abs_difference"]:.2g} on
  {export_report["parity_images"]} validation images (tolerance {export_report["parity_tolerance"]:g}).
- Registry: {registry["reason"]}.
- MLflow run `{export_report.get("mlflow_run_id", "")}`;
  data version (manifest md5) `{export_report.get("data_version", "")}`.

## Data
{_data_table(image_manifest)}

Splits are grouped by source photo, so a photo and its generated twin never straddle two splits.

## Generator families it never saw (the headline)
Each row: the same recipe trained without that family's pairs, scored on them (AI images against their
content twins) at its own validation-chosen band{_reshared_note(unseen_folds)}.

{_unseen_table(unseen_folds)}

## Metrics
{_metrics_table(splits)}

## Answers (shares of human / inconclusive / ai)
{_answers(evaluation)}

## Per generator family (this model)
{_family_table(evaluation["families"])}

## Per stored file format (this model)
Both images of a pair are stored alike; a human image answered "ai" is a false accusation.

{_format_table(evaluation["formats"])}

## Attribution (which training family an image most resembles)
{_attribution(evaluation.get("attribution", {}))}

## Robustness (validation, at the chosen threshold)
{_metrics_table(robustness)}

Answers on the same re-shared validation images (shares; a human image answered "ai" is a false
accusation):

{_reshared_answers(evaluation["robustness_answers"])}

## Robustness on the generator family it never saw (unseen split, at the chosen threshold)
{_unseen_robustness(evaluation.get("robustness_unseen", {}), evaluation.get("robustness_unseen_answers", {}))}

## Published images of today's generators (never trained on)
{_wild_generated(evaluation.get("wild_generated", {}))}

## int8 variant
{_int8_variant(quantization)}
Validation F1 {quantization["f1_fp32"]:.4f} (fp32) vs {quantization["f1_int8"]:.4f} (int8),
{quantization["f1_change_points"]:+.2f} points; {quantization["speedup_batch1"]:.2f}x faster at batch 1 and
{quantization["speedup_batch32"]:.2f}x at batch 32 (ONNX Runtime, this CPU); calibrated on
{quantization["calibration_images"]} training images.

## Intended use
Screening: flag images that are likely AI-generated for a person to review, and give the public an
honest probability with the threshold it is compared against. It is not proof of origin and must not
be the sole basis of a decision about a person.

## Limitations
- It learned from the images summarised under Data only. Generator families it never saw (other
  diffusion models, GANs, editors, upscalers) can go undetected: the leave-one-family-out table
  above is the honest estimate, and it is far below the validation figures.
- Re-shared images lose the fingerprint: the weakest case above is `{weakest[0]}` (F1 {weakest[1]["f1"]:.3f}).
  Resized, blurred or heavily re-compressed images should be treated as uncertain: after
  `{accused[0]}`, {accused[1]["human_images"]["ai"]:.0%} of the human validation images were answered "ai".
- Scores are calibrated on the validation distribution only (ECE {validation["at_threshold"]["ece"]:.3f});
  on other sources the probability is less trustworthy than the ranking, which is why the answer
  abstains ("inconclusive") in the band where validation, or the families held out of training,
  showed the model unreliable.
- Images smaller than the model input are zero-padded (never up-scaled, which would add an
  up-sampling trace of its own); the model sees less evidence and is less sure of them.
"""
