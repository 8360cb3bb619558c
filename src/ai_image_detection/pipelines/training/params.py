"""Parameters of the ``training`` pipeline (``conf/base/parameters_training.yml``), checked at start-up."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ai_image_detection.input_pipeline import Perturbation
from ai_image_detection.models import DetectorSpec
from ai_image_detection.models.clip import CLIP_VIT_B16


class LossParams(BaseModel):
    """``BCE + alpha · (mean(p) − beta)²``, plus ``attribution_weight`` × the attribution cross-entropy."""

    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(ge=0)
    beta: float = Field(ge=0, le=1)
    attribution_weight: float = Field(
        default=0.5, ge=0, description="weight of the family head's loss (0: attribution learns nothing)"
    )


ExpertName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$")]


class ExpertParams(BaseModel):
    """One of a probe's expert heads (:mod:`ai_image_detection.models.expert_head`), joined by max logit."""

    model_config = ConfigDict(extra="forbid")

    view_kinds: list[Literal["clean", "jpeg", "webp", "downscale", "blur", "centre_crop"]] = Field(
        min_length=1,
        description=(
            "the views it learns in both classes (clean: the tiles as stored, or re-shared kinds); "
            "every other tile it sees as human only, so that it leaves those to the other heads"
        ),
    )
    l2: float = Field(gt=0, description="L2 penalty on its weights (standardised features, mean loss)")
    class_token_layers: list[int] | None = Field(
        default=None,
        description=(
            "the clip_vit_b16 blocks whose class tokens it reads, among the detector's "
            "class_token_layers; null: every cached feature"
        ),
    )


class CandidateParams(BaseModel):
    """One candidate of ``training.candidates`` in ``parameters_training.yml``."""

    model_config = ConfigDict(extra="forbid")

    detector: DetectorSpec
    epochs: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    warmup_epochs: int = Field(ge=0, description="linear learning-rate warm-up, then cosine decay")
    freeze_backbone_epochs: int = Field(ge=0, description="epochs with a frozen backbone before fine-tuning")
    early_stopping_patience: int = Field(ge=1)
    loss: LossParams
    probe: bool = Field(
        default=False,
        description="keep the pretrained backbone frozen: cache its features once, train only the heads",
    )
    reshared_views: list[Perturbation] = Field(
        default=[],
        description=(
            "a probe's training tiles are also cached after some of these degradations, "
            "drawn per image (seeded), so its heads learn what survives re-sharing"
        ),
    )
    reshared_views_per_image: int = Field(
        default=1,
        ge=1,
        description="how many of reshared_views each training image gets, each a different one",
    )
    experts: dict[ExpertName, ExpertParams] = Field(
        default={},
        description="a probe's expert heads by name; the detector's logit is the largest of all heads",
    )
    main_head_class_token_layers: list[int] | None = Field(
        default=None,
        description=(
            "the clip_vit_b16 blocks whose class tokens a probe's main head reads, among the "
            "detector's class_token_layers; null: every cached feature"
        ),
    )

    @model_validator(mode="after")
    def _probe_settings_only_on_probes(self) -> CandidateParams:
        """Settings that only a probe reads are an error elsewhere, not silently ignored."""
        if self.probe and self.detector.weights is None:
            raise ValueError(
                f"a probe freezes its backbone, and {self.detector.architecture} has no pretrained "
                "weights here (detector.weights is null): a frozen random backbone learns nothing"
            )
        if not self.probe and self.reshared_views:
            raise ValueError("reshared_views are cached features of a probe: set probe: true or drop them")
        if not self.probe and self.experts:
            raise ValueError(
                "expert heads are fitted on a probe's cached features: set probe: true or drop them"
            )
        if self.reshared_views and self.reshared_views_per_image > len(self.reshared_views):
            raise ValueError(
                f"reshared_views_per_image ({self.reshared_views_per_image}) is more than the "
                f"{len(self.reshared_views)} reshared_views: each view of an image is a different one"
            )
        if not self.probe and self.detector.class_token_layers:
            raise ValueError(
                "class_token_layers are the features a probe reads: set probe: true or drop them"
            )
        blocks = CLIP_VIT_B16.num_layers
        cached = {layer % blocks for layer in self.detector.class_token_layers}
        heads = {"main_head_class_token_layers": self.main_head_class_token_layers} | {
            f"experts.{name}.class_token_layers": expert.class_token_layers
            for name, expert in self.experts.items()
        }
        for setting, layers in heads.items():
            if layers is not None and not (layers and {layer % blocks for layer in layers} <= cached):
                raise ValueError(
                    f"{setting} {layers}: a head reads some of the class tokens the detector caches "
                    f"(detector.class_token_layers {self.detector.class_token_layers})"
                )
        return self


class LeaveOneFamilyOutParams(BaseModel):
    """The leave-one-family-out rotation (``training.leave_one_family_out``)."""

    model_config = ConfigDict(extra="forbid")

    families: list[str] | None = Field(
        default=None, description="families to rotate; null = every AI family in train and validation"
    )
    epochs: int | None = Field(default=None, ge=1, description="epochs per fold; null = the candidate's")


Distribution = Literal["default", "mirrored"]
"""``training.distribution``: the ``tf.distribute`` strategy every candidate trains under."""
