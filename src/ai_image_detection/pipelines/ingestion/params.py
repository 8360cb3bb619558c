"""Parameters of the ``ingestion`` pipeline (``conf/base/parameters_ingestion.yml``), checked at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ai_image_detection.contract import FEEDBACK_FAMILY


class KaggleLayoutParams(BaseModel):
    """Where the Kaggle competition layout keeps its tables."""

    model_config = ConfigDict(extra="forbid")

    train_csv: str = "train.csv"
    test_csv: str | None = "test.csv"
    pairing: Literal["consecutive_rows", "none"] = "consecutive_rows"
    sidecar_csv: str | None = None
    """Optional ``file_name,group[,label][,pair][,generator]`` table."""


class FeedbackParams(BaseModel):
    """The ``feedback`` source: consented, labelled images users sent, added to the train split only."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="read the feedback store (catalog feedback_records, feedback_images); off: no S3 access",
    )
    image_dir: str = Field(
        default="data/02_intermediate/feedback/images",
        description="where the catalog's feedback_image_files keeps the local copies (the same folder)",
    )


class IngestionParams(BaseModel):
    """Parameters of the ``ingestion`` pipeline (``conf/base/parameters_ingestion.yml``)."""

    model_config = ConfigDict(extra="forbid")

    raw_dir: str
    layout: Literal["kaggle", "folders"]
    kaggle: KaggleLayoutParams = KaggleLayoutParams()
    min_side: int = Field(ge=1)
    max_pixels: int = Field(gt=0)
    validation_fraction: float = Field(gt=0, lt=0.5)
    seed: int
    normalised_dir: str
    workers: int = Field(ge=0, description="0 = one per CPU core")
    unseen_families: list[str] = Field(
        default_factory=list,
        description="generator families held out of training and validation (their pairs: split unseen)",
    )
    feedback: FeedbackParams = FeedbackParams()

    @field_validator("unseen_families")
    @classmethod
    def _feedback_is_never_held_out(cls, families: list[str]) -> list[str]:
        if FEEDBACK_FAMILY in families:
            raise ValueError(
                f"{FEEDBACK_FAMILY!r} cannot be an unseen family: feedback images go to the train split "
                "only (turn the source off with ingestion.feedback.enabled: false)"
            )
        return families
