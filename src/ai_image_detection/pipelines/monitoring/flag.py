"""The drift flag's rule: which figures say "retrain", and which are only worth watching.

Each finding is a sentence for people, and whether it decides. Drift and the inconclusive share
(against the reference's own) decide only once the model version has answered ``min_predictions``
times, and the feedback error rate only on ``retrain_when.min_feedback`` feedback; below that they
are listed to watch.
"""

from __future__ import annotations

from typing import Any

from ai_image_detection.pipelines.monitoring.params import MonitoringParams

Finding = tuple[bool, str]
"""Whether it says "retrain", and the sentence that says why."""


def drift_findings(drift: dict[str, Any], enough: bool, params: MonitoringParams) -> list[Finding]:
    """P(AI) decides at ``probability_psi``; an input statistic at ``input_psi`` when set, else it warns.

    Args:
        drift: The drift figures (``probability_ai``, ``inputs``).
        enough: Whether there are enough predictions to judge.
        params: The thresholds and PSI bands.

    Returns:
        One finding per figure at or above the moderate band.
    """
    rule, moderate = params.retrain_when, params.psi_bands.moderate
    compared: list[tuple[str, dict[str, Any], float | None]] = []
    if drift["probability_ai"]:
        compared.append(("P(AI)", drift["probability_ai"], rule.probability_psi))
    compared += [(name, figures, rule.input_psi) for name, figures in drift["inputs"].items()]
    findings = []
    for name, figures, threshold in compared:
        value = figures["psi"]
        if value is None or value < moderate:
            continue
        line = f"PSI of {name} {value:.3f} against the validation set ({figures['band']} shift)"
        decides = enough and threshold is not None and value >= threshold
        findings.append((decides, f"{line} >= {threshold}" if decides else line))
    return findings


def inconclusive_finding(
    share: float | None, reference_share: float | None, enough: bool, params: MonitoringParams
) -> list[Finding]:
    """The inconclusive share ``inconclusive_rise`` or more above the reference's (when that rule is set).

    A model abstains on part of its own validation images by design (its band); what says that
    the traffic has moved away from what it can answer is abstaining more than it did there.
    """
    rise = params.retrain_when.inconclusive_rise
    if rise is None or share is None:
        return []
    if reference_share is None:
        return [(False, f"{share:.1%} of the answers inconclusive; no reference share to judge it against")]
    if share < reference_share + rise:
        return []
    return [
        (
            enough,
            f"{share:.1%} of the answers inconclusive, {reference_share:.1%} on the validation set "
            f"(>= {rise:.0%} points more)",
        )
    ]


def feedback_finding(this_version: dict[str, Any], params: MonitoringParams) -> list[Finding]:
    """The confirmed error rate of the version's feedback at or above ``feedback_error_rate``."""
    rule = params.retrain_when
    rate = this_version["confirmed_error_rate"]
    if rate is None or rate < rule.feedback_error_rate:
        return []
    line = (
        f"feedback confirms {this_version['confirmed_errors']} wrong verdicts in {this_version['count']} "
        f"feedback ({rate:.1%} >= {rule.feedback_error_rate:.0%})"
    )
    if this_version["count"] >= rule.min_feedback:
        return [(True, line)]
    return [(False, f"{line}, on fewer than {rule.min_feedback} feedback: not judged")]


def findings(
    prediction_summary: dict[str, Any],
    drift: dict[str, Any],
    feedback_summary: dict[str, Any],
    params: MonitoringParams,
) -> list[Finding]:
    """Every finding of the rule, deciding or not, in the report's order.

    Args:
        prediction_summary: The monitored version's answers (``count``, ``inconclusive_share``,
            ``reference_verdict_shares``).
        drift: Its drift figures (and ``note`` when some are missing).
        feedback_summary: The feedback figures (``this_version``).
        params: The thresholds.

    Returns:
        The findings.
    """
    count = prediction_summary["count"]
    enough = count >= params.min_predictions
    found: list[Finding] = []
    if count and not enough:
        found.append((False, f"only {count} predictions (< {params.min_predictions}): shown, not judged"))
    found += drift_findings(drift, enough, params)
    found += inconclusive_finding(
        prediction_summary["inconclusive_share"],
        prediction_summary["reference_verdict_shares"]["inconclusive"],
        enough,
        params,
    )
    found += feedback_finding(feedback_summary["this_version"], params)
    if drift["note"]:
        found.append((False, drift["note"]))
    return found
