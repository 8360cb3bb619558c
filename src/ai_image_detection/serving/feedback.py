"""User feedback: the recent predictions it may refer to, and the store on S3 it is kept in.

A feedback says "this verdict was wrong, the image is ``ai``/``human``". It is kept as a JSON record
under ``<prefix>/records/<date>/<feedback_id>.json`` with the prediction's numbers (model version,
score, thresholds, provenance found); the image itself is kept, under ``<prefix>/images/``, only
when the user consents, and only if it is the very file that was predicted (same sha256). Without
consent only the numbers are kept. The ``feedback`` ingestion source brings consented, labelled
images into the next training run.

The numbers come from the instance's memory of its recent predictions (bounded, oldest forgotten
first), never from the client, so a feedback cannot misstate what the model answered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as S3Refusal
from pydantic import BaseModel, Field

from ai_image_detection.serving.http_guard import ClientError
from ai_image_detection.serving.prediction_log import PredictionRecord, utc_now

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}
"""File extension of a kept image by its decoded format (others keep the format's name)."""
PREDICTION_FIELDS = {
    "probability_ai",
    "label",
    "decided_by",
    "threshold_human",
    "threshold_ai",
    "closest_family",
    "model_name",
    "model_version",
    "width",
    "height",
    "format",
    "provenance_sources",
    "declares_ai",
}
"""What a feedback record keeps of the prediction it is about."""
MAX_NOTE_CHARS = 1000


class FeedbackUnavailableError(RuntimeError):
    """The feedback store is turned off or cannot be reached."""


class FeedbackReceipt(BaseModel):
    """The answer to a feedback."""

    feedback_id: str = Field(description="The stored feedback's id.")
    stored_image: bool = Field(description="Whether the image was kept (only with consent).")
    message: str = Field(description="What was kept, in one sentence for people.")


@dataclass(frozen=True)
class RememberedPrediction:
    """A recent prediction as feedback needs it: its record and the sha256 of the uploaded file."""

    record: PredictionRecord
    image_sha256: str


class RecentPredictions:
    """The last ``capacity`` predictions of this instance, by id (oldest forgotten first)."""

    def __init__(self, capacity: int) -> None:
        """Remember at most ``capacity`` predictions."""
        self.capacity = capacity
        self._by_id: OrderedDict[str, RememberedPrediction] = OrderedDict()

    def remember(self, record: PredictionRecord, image_sha256: str) -> None:
        """Keep a prediction's record and its file's sha256 (never the file)."""
        self._by_id[record.prediction_id] = RememberedPrediction(record, image_sha256)
        while len(self._by_id) > self.capacity:
            self._by_id.popitem(last=False)

    def get(self, prediction_id: str) -> RememberedPrediction | None:
        """The remembered prediction, or None when unknown or forgotten."""
        return self._by_id.get(prediction_id)

    def recall(self, prediction_id: str) -> RememberedPrediction:
        """The remembered prediction a feedback is about.

        Raises:
            ClientError: 404 ``unknown_prediction`` when it is unknown or forgotten.
        """
        remembered = self.get(prediction_id)
        if remembered is None:
            message = (
                f"no recent prediction {prediction_id!r} on this service (the last "
                f"{self.capacity:,} predictions are kept for feedback)"
            )
            raise ClientError("unknown_prediction", message, 404)
        return remembered


def checked_note(note: str | None) -> str | None:
    """The note as kept (None when empty).

    Raises:
        ClientError: 400 ``note_too_long`` beyond :data:`MAX_NOTE_CHARS`.
    """
    if note is not None and len(note) > MAX_NOTE_CHARS:
        raise ClientError(
            "note_too_long", f"the note has {len(note)} characters; at most {MAX_NOTE_CHARS}", 400
        )
    return note or None


def kept_image(prediction: RememberedPrediction, consent: bool, uploads: list[Path]) -> bytes | None:
    """The image a feedback may keep: the one uploaded, with consent, if it is the file predicted.

    Args:
        prediction: The prediction the feedback is about.
        consent: Whether the user consents to keeping the image.
        uploads: The files sent in the field ``image`` (none or one).

    Returns:
        Its bytes, or None when no image was sent.

    Raises:
        ClientError: 400 ``too_many_files``, ``image_without_consent`` or ``image_mismatch``.
    """
    if len(uploads) > 1:
        raise ClientError(
            "too_many_files", f"{len(uploads)} files in 'image'; send at most the one predicted", 400
        )
    if not uploads:
        return None
    if not consent:
        message = "an image is kept only with consent: set consent=true, or send no image"
        raise ClientError("image_without_consent", message, 400)
    data = uploads[0].read_bytes()
    if sha256(data) != prediction.image_sha256:
        raise ClientError("image_mismatch", "this is not the image that was predicted", 400)
    return data


def sha256(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def feedback_record(
    prediction: RememberedPrediction,
    claimed_label: Literal["ai", "human"],
    note: str | None,
    consent: bool,
    image_format: str | None,
    prefix: str,
) -> dict[str, Any]:
    """The JSON record of one feedback (``image_format`` None when no image is kept).

    Returns:
        The record as stored; ``image_key`` and ``image_sha256`` are null without a kept image.
    """
    feedback_id = f"f-{uuid.uuid4().hex}"
    image_key = None
    if image_format is not None:
        extension = IMAGE_EXTENSIONS.get(image_format, image_format.lower())
        image_key = f"{prefix}/images/{feedback_id}.{extension}"
    return {
        "feedback_id": feedback_id,
        "prediction_id": prediction.record.prediction_id,
        "received_at": utc_now(),
        "claimed_label": claimed_label,
        "note": note,
        "consent": consent,
        "image_key": image_key,
        "image_sha256": prediction.image_sha256 if image_key else None,
        "image_format": image_format,
        "prediction": prediction.record.model_dump(include=PREDICTION_FIELDS),
    }


class FeedbackStore:
    """Feedback records (and consented images) in an S3 bucket under a prefix."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str) -> None:
        """Address the store with the credentials of the usual AWS chain; nothing is sent yet.

        Args:
            bucket: The S3 bucket; empty turns feedback off.
            prefix: Key prefix of the store (no leading or trailing slash).
            endpoint_url: S3 endpoint; empty for AWS.
        """
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._client: BaseClient | None = None
        if self.enabled:
            config = Config(connect_timeout=3, read_timeout=10, retries={"max_attempts": 2})
            self._client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)

    @property
    def enabled(self) -> bool:
        """Whether a bucket is configured."""
        return bool(self.bucket)

    def put(self, record: dict[str, Any], image: bytes | None) -> None:
        """Store the image (when the record keeps one) first, then the record that points to it.

        Raises:
            FeedbackUnavailableError: If the store is off or S3 refuses or cannot be reached.
        """
        if self._client is None:
            raise FeedbackUnavailableError("feedback is turned off on this service (no feedback bucket)")
        day = record["received_at"][:10]
        record_key = f"{self.prefix}/records/{day}/{record['feedback_id']}.json"
        try:
            if record["image_key"] is not None and image is not None:
                self._client.put_object(Bucket=self.bucket, Key=record["image_key"], Body=image)
            body = json.dumps(record, separators=(",", ":")).encode()
            self._client.put_object(
                Bucket=self.bucket, Key=record_key, Body=body, ContentType="application/json"
            )
        except (BotoCoreError, S3Refusal) as failed:
            logger.error("feedback store s3://%s/%s unreachable: %s", self.bucket, self.prefix, failed)
            raise FeedbackUnavailableError("the feedback store cannot be reached; try again later") from None
        logger.info(
            "feedback %s stored (image kept: %s)", record["feedback_id"], record["image_key"] is not None
        )
