"""Provenance in the verdict, ``/feedback`` into the S3 store, and the prediction log, through the ASGI app.

The test service keeps feedback on the local S3 server (``service_env``) and logs to its own directory.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import FEEDBACK_PREFIX, encode, photo
from starlette.testclient import TestClient

from ai_image_detection.serving.prediction_log import LOG_FILE_NAME, PredictionRecord
from tests.conftest import LocalS3
from tests.serving.provenance_fixtures import jpeg_with_camera_exif, png_with_parameters, signed_ai_jpeg
from tests.serving.test_service import assert_error, upload


def predict(client: TestClient, data: bytes, name: str = "upload.png") -> dict:
    response = client.post("/predict", files=upload(data, name, "application/octet-stream"))
    assert response.status_code == 200, response.text
    return response.json()


def stored_record(s3_server: LocalS3, feedback_id: str) -> dict:
    """The feedback record that the service put on S3 under the test prefix."""
    listing = s3_server.client().list_objects_v2(
        Bucket=s3_server.bucket, Prefix=f"{FEEDBACK_PREFIX}/records/"
    )
    (key,) = [
        item["Key"] for item in listing.get("Contents", []) if item["Key"].endswith(f"/{feedback_id}.json")
    ]
    return json.loads(s3_server.client().get_object(Bucket=s3_server.bucket, Key=key)["Body"].read())


def test_every_answer_has_an_id_and_its_provenance_and_a_plain_image_is_judged_by_its_pixels(
    client: TestClient,
) -> None:
    answer = predict(client, encode(photo(96, 64), "PNG"))
    assert re.fullmatch(r"p-[0-9a-f]{32}", answer["prediction_id"])
    assert answer["decided_by"] == "pixels"
    assert answer["provenance"]["found"] is False
    assert answer["provenance"]["note"].endswith("an image without provenance proves nothing.")
    assert predict(client, encode(photo(96, 64), "PNG"))["prediction_id"] != answer["prediction_id"]


@pytest.mark.parametrize(
    ("name", "make", "source"),
    [("a1111.png", png_with_parameters, "png_text"), ("signed.jpg", signed_ai_jpeg, "c2pa")],
)
def test_a_declaration_of_ai_decides_the_answer(client: TestClient, name: str, make, source: str) -> None:
    answer = predict(client, make(), name)
    assert (answer["label"], answer["decided_by"], answer["confidence"]) == ("ai", "provenance", None)
    assert answer["provenance"]["decisive"] == source
    assert answer["summary"].startswith("AI-generated (declared): ")
    assert 0.0 <= answer["probability_ai"] <= 1.0, "the pixels' score is still told"


def test_a_camera_claim_is_shown_but_the_pixels_decide(client: TestClient) -> None:
    answer = predict(client, jpeg_with_camera_exif(), "camera.jpg")
    assert answer["decided_by"] == "pixels"
    assert answer["provenance"]["claims_capture"] is True
    assert [item["source"] for item in answer["provenance"]["evidence"]] == ["exif"]


def test_feedback_without_consent_keeps_the_numbers_only(client: TestClient, s3_server: LocalS3) -> None:
    answer = predict(client, encode(photo(96, 64, seed=3), "PNG"))
    form = {"prediction_id": answer["prediction_id"], "label": "ai", "note": "a diffusion portrait"}
    response = client.post("/feedback", files={name: (None, value) for name, value in form.items()})
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["stored_image"] is False and "not the image" in receipt["message"]
    record = stored_record(s3_server, receipt["feedback_id"])
    assert (record["claimed_label"], record["note"], record["consent"], record["image_key"]) == (
        "ai",
        "a diffusion portrait",
        False,
        None,
    )
    assert record["prediction"]["probability_ai"] == pytest.approx(answer["probability_ai"])
    assert (record["prediction"]["label"], record["prediction"]["model_version"]) == (answer["label"], "7")


def test_feedback_with_consent_keeps_the_very_image_that_was_predicted(
    client: TestClient, s3_server: LocalS3
) -> None:
    image = encode(photo(96, 64, seed=4), "PNG")
    answer = predict(client, image)
    fields = {
        "prediction_id": (None, answer["prediction_id"]),
        "label": (None, "human"),
        "consent": (None, "true"),
    }
    response = client.post("/feedback", files={**fields, "image": ("mine.png", image, "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["stored_image"] is True
    record = stored_record(s3_server, response.json()["feedback_id"])
    assert record["image_key"] == f"{FEEDBACK_PREFIX}/images/{record['feedback_id']}.png"
    kept = s3_server.client().get_object(Bucket=s3_server.bucket, Key=record["image_key"])["Body"].read()
    assert kept == image


def test_feedback_refuses_what_it_cannot_keep_honestly(client: TestClient) -> None:
    image = encode(photo(96, 64, seed=5), "PNG")
    answer = predict(client, image)
    known = {"prediction_id": (None, answer["prediction_id"]), "label": (None, "ai")}
    unknown = {"prediction_id": (None, "p-" + "0" * 32), "label": (None, "ai")}
    assert_error(client.post("/feedback", files=unknown), 404, "unknown_prediction")
    other_image = {"image": ("other.png", encode(photo(96, 64, seed=6), "PNG"), "image/png")}
    assert_error(
        client.post("/feedback", files={**known, "consent": (None, "true"), **other_image}),
        400,
        "image_mismatch",
    )
    same_image = {"image": ("same.png", image, "image/png")}
    assert_error(client.post("/feedback", files={**known, **same_image}), 400, "image_without_consent")
    assert_error(client.post("/feedback", files={**known, "note": (None, "x" * 1001)}), 400, "note_too_long")
    assert_error(client.post("/feedback", files={"label": (None, "ai")}), 400, "missing_field")
    assert client.post("/feedback", files={**known, "label": (None, "maybe")}).status_code == 400


def test_every_verdict_is_logged_without_pixels(client: TestClient, service_env: dict[str, str]) -> None:
    image = encode(photo(128, 96, seed=7), "JPEG")
    answer = predict(client, image, "logged.jpg")
    log = Path(service_env["AIID_PREDICTION_LOG_DIR"]) / LOG_FILE_NAME
    deadline = time.monotonic() + 10
    while True:  # the log is written by a background thread
        lines = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
        logged = [PredictionRecord.model_validate_json(line) for line in lines]
        mine = [record for record in logged if record.prediction_id == answer["prediction_id"]]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(mine) == 1, f"prediction {answer['prediction_id']} not in {log}"
    (record,) = mine
    assert (record.endpoint, record.label, record.model_version, record.format) == (
        "predict",
        answer["label"],
        "7",
        "JPEG",
    )
    assert (record.width, record.height, record.bytes, record.tiles) == (128, 96, len(image), answer["tiles"])
    assert record.probability_ai == pytest.approx(answer["probability_ai"])
    assert 0 < record.mean_luma < 255 and record.std_luma > 0 and record.latency_ms > 0
    assert len(log.read_bytes()) < 2_000 * len(lines), "numbers only: no pixels in the log"


def test_the_annotated_image_says_when_provenance_decided(client: TestClient) -> None:
    response = client.post("/annotate", files=upload(png_with_parameters(), "a1111.png", "image/png"))
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    numbers = json.loads(response.headers["X-Verdict"])
    assert (numbers["label"], numbers["decided_by"], numbers["confidence"]) == ("ai", "provenance", None)
    assert re.fullmatch(r"p-[0-9a-f]{32}", numbers["prediction_id"])
