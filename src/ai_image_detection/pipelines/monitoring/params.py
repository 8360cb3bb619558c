"""Parameters of the ``monitoring`` pipeline (``conf/base/parameters_monitoring.yml``)."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PsiBands(BaseModel):
    """Where a PSI stops being stable: the usual 0.1 (moderate shift) and 0.25 (major shift)."""

    model_config = ConfigDict(extra="forbid")

    moderate: float = Field(default=0.1, gt=0)
    major: float = Field(default=0.25, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.major <= self.moderate:
            raise ValueError(
                f"psi_bands.major ({self.major}) must be above psi_bands.moderate ({self.moderate})"
            )
        return self


class RetrainRule(BaseModel):
    """When the drift flag says "retrain": any one of these, each judged only on enough data."""

    model_config = ConfigDict(extra="forbid")

    probability_psi: float = Field(gt=0, description="PSI of P(AI) against the reference, at or above")
    inconclusive_rise: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="inconclusive share above the reference's (its validation images at its band), "
        "at or above this many points (null: never)",
    )
    feedback_error_rate: float = Field(
        gt=0, le=1, description="share of the model version's feedback that confirms a wrong verdict"
    )
    min_feedback: int = Field(ge=1, description="feedback on the model version needed to judge that rate")
    input_psi: float | None = Field(
        default=None, gt=0, description="PSI of any input statistic, at or above (null: inputs only warn)"
    )


class MonitoringParams(BaseModel):
    """What the monitoring reads and when it raises the flag."""

    model_config = ConfigDict(extra="forbid")

    window_days: float | None = Field(
        default=None, gt=0, description="only the last N days before the log's latest line (null: all)"
    )
    min_predictions: int = Field(
        ge=1, description="predictions of the model version needed before its drift can raise the flag"
    )
    psi_bins: int = Field(default=10, ge=2, description="most bins of a numeric PSI (reference quantiles)")
    psi_bands: PsiBands = PsiBands()
    retrain_when: RetrainRule
