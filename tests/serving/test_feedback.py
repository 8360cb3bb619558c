"""Feedback: the recent predictions it may quote, the record it becomes, the store on a real local S3."""

from __future__ import annotations

import json

import pytest

from ai_image_detection.serving.feedback import (
    FeedbackStore,
    FeedbackUnavailableError,
    RecentPredictions,
    feedback_record,
    sha256,
)
from tests.conftest import LocalS3
from tests.serving.test_prediction_log import record


def test_recent_predictions_forget_the_oldest_beyond_their_capacity() -> None:
    recent = RecentPredictions(capacity=2)
    for number in range(3):
        recent.remember(record(number), sha256(bytes([number])))
    assert recent.get("p-000000") is None
    kept = recent.get("p-000002")
    assert kept is not None
    assert (kept.record, kept.image_sha256) == (
        record(2).model_copy(update={"time": kept.record.time}),
        sha256(b"\x02"),
    )


def test_a_record_keeps_the_numbers_always_and_the_image_only_when_kept() -> None:
    recent = RecentPredictions(capacity=1)
    recent.remember(record(1), sha256(b"jpeg bytes"))
    prediction = recent.get("p-000001")
    assert prediction is not None
    numbers_only = feedback_record(
        prediction, "ai", None, consent=False, image_format=None, prefix="feedback"
    )
    assert (numbers_only["image_key"], numbers_only["image_sha256"], numbers_only["consent"]) == (
        None,
        None,
        False,
    )
    assert numbers_only["prediction"] == {
        "probability_ai": 0.25,
        "label": "human",
        "decided_by": "pixels",
        "threshold_human": 0.4,
        "threshold_ai": 0.6,
        "closest_family": None,
        "model_name": "ai-image-detector",
        "model_version": "7",
        "width": 640,
        "height": 480,
        "format": "JPEG",
        "provenance_sources": ["exif"],
        "declares_ai": False,
    }
    with_image = feedback_record(prediction, "ai", "a diffusion portrait", True, "JPEG", "feedback")
    assert with_image["image_key"] == f"feedback/images/{with_image['feedback_id']}.jpg"
    assert with_image["image_sha256"] == sha256(b"jpeg bytes")
    assert with_image["received_at"].endswith("Z")
    assert with_image["feedback_id"] != numbers_only["feedback_id"]


def test_the_store_puts_the_record_and_the_consented_image_on_s3(
    s3_server: LocalS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in s3_server.credentials.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    recent = RecentPredictions(capacity=1)
    recent.remember(record(3), sha256(b"png bytes"))
    prediction = recent.get("p-000003")
    assert prediction is not None
    store = FeedbackStore(s3_server.bucket, "feedback-unit", s3_server.endpoint_url)
    kept = feedback_record(prediction, "human", None, True, "PNG", store.prefix)
    store.put(kept, b"png bytes")
    numbers = feedback_record(prediction, "ai", "wrong", False, None, store.prefix)
    store.put(numbers, None)

    s3 = s3_server.client()
    keys = sorted(
        item["Key"]
        for item in s3.list_objects_v2(Bucket=s3_server.bucket, Prefix="feedback-unit/")["Contents"]
    )
    day = kept["received_at"][:10]
    assert keys == sorted(
        [
            f"feedback-unit/images/{kept['feedback_id']}.png",
            f"feedback-unit/records/{day}/{kept['feedback_id']}.json",
            f"feedback-unit/records/{numbers['received_at'][:10]}/{numbers['feedback_id']}.json",
        ]
    )
    image = s3.get_object(Bucket=s3_server.bucket, Key=kept["image_key"])["Body"].read()
    stored = json.loads(
        s3.get_object(Bucket=s3_server.bucket, Key=f"feedback-unit/records/{day}/{kept['feedback_id']}.json")[
            "Body"
        ].read()
    )
    assert (image, stored) == (b"png bytes", kept)


def test_an_unreachable_or_unconfigured_store_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "nothing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    recent = RecentPredictions(capacity=1)
    recent.remember(record(4), sha256(b""))
    prediction = recent.get("p-000004")
    assert prediction is not None
    closed_port = FeedbackStore("ai-image-detection", "feedback", "http://127.0.0.1:9")
    with pytest.raises(FeedbackUnavailableError, match="cannot be reached"):
        closed_port.put(feedback_record(prediction, "ai", None, False, None, "feedback"), None)
    with pytest.raises(FeedbackUnavailableError, match="turned off"):
        FeedbackStore("", "feedback", "").put(
            feedback_record(prediction, "ai", None, False, None, "feedback"), None
        )
