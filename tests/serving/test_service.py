"""The HTTP API through ``Service.to_asgi()``: every endpoint; every kind of bad input gets a clear 4xx.

Answers are ``human``, ``inconclusive`` or ``ai`` by the model's band, with the closest training
family for a model that attributes; a model exported before the band or before attribution still serves.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import threading
from pathlib import Path
from types import ModuleType

import bentoml
import numpy as np
import onnx
import pytest
from conftest import (
    CALIBRATION,
    FAMILIES,
    INPUT_SIZE,
    MODEL_MAX_TILES,
    SETTING_MAX_TILES,
    THRESHOLD,
    THRESHOLD_AI,
    THRESHOLD_HUMAN,
    encode,
    family_rows,
    photo,
    store,
)
from PIL import Image
from starlette.testclient import TestClient

from ai_image_detection.contract import FAMILIES_KEY, INPUT_NAME, OUTPUT_NAME, Verdict, verdict
from ai_image_detection.onnx_runtime import onnx_session
from ai_image_detection.scoring import score_files
from ai_image_detection.serving.batching import CropBatcher
from ai_image_detection.serving.http_guard import ClientError, error_response
from ai_image_detection.serving.scorer import Scorer
from ai_image_detection.tiling import tile_crops


def upload(data: bytes, name: str = "upload.jpg", content_type: str = "image/jpeg") -> dict[str, tuple]:
    return {"image": (name, data, content_type)}


def assert_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


BAND = {"human": THRESHOLD_HUMAN, "ai": THRESHOLD_AI}


def test_predict_answers_a_verdict_with_its_model(client: TestClient) -> None:
    response = client.post("/predict", files=upload(encode(photo(200, 120))))
    assert response.status_code == 200, response.text
    answer = response.json()
    assert 0 <= answer["probability_ai"] <= 1
    assert answer["label"] == verdict(answer["probability_ai"], THRESHOLD_HUMAN, THRESHOLD_AI)
    assert (answer["thresholds"], answer["threshold"], answer["calibrated"]) == (BAND, THRESHOLD, True)
    assert (answer["model_version"], answer["input_size"]) == ("7", INPUT_SIZE)
    assert (answer["width"], answer["height"], answer["format"], answer["frames"]) == (200, 120, "JPEG", 1)
    assert answer["tiles"] == MODEL_MAX_TILES, (
        f"a 200x120 image is tiled as evaluation tiled it (the model's max_tiles), "
        f"not by AIID_MAX_TILES={SETTING_MAX_TILES}"
    )
    assert answer["summary"]


def test_the_closest_family_is_the_largest_mean_of_the_tiles_family_probabilities(client: TestClient) -> None:
    pixels = np.zeros((32, 96, 3), dtype=np.uint8)  # one row of three tiles
    pixels[:, :64] = (120, 124, 120)  # two tiles leaning to diffusion (green)
    pixels[:, 64:] = (100, 100, 200)  # one tile clearly gan (blue)
    rows = family_rows(tile_crops(pixels, INPUT_SIZE, MODEL_MAX_TILES))
    assert len(rows) == 3 and np.bincount(rows.argmax(axis=1)).argmax() == 1, "diffusion wins 2 tiles of 3"
    answer = client.post("/predict", files=upload(encode(pixels, "PNG"), "x.png", "image/png")).json()
    assert list(answer["family_probabilities"]) == FAMILIES, "named in the model's order, human first"
    assert list(answer["family_probabilities"].values()) == pytest.approx(rows.mean(axis=0), abs=1e-5)
    assert answer["closest_family"] == "gan", "the largest mean, not the family most tiles lean to"
    assert answer["closest_family_probability"] == pytest.approx(rows.mean(axis=0)[2], abs=1e-5)


@pytest.mark.parametrize("label", ["human", "inconclusive", "ai"])
def test_scores_below_inside_and_above_the_band_answer_human_inconclusive_and_ai(
    client: TestClient, verdict_images: dict[Verdict, tuple[bytes, float]], label: Verdict
) -> None:
    png, score = verdict_images[label]
    answer = client.post("/predict", files=upload(png, f"{label}.png", "image/png")).json()
    assert answer["label"] == label
    assert answer["probability_ai"] == pytest.approx(score, abs=1e-5), "the score is evaluation's"
    assert (answer["tiles"], answer["thresholds"]) == (3, BAND), "96x64: one row of three tiles"
    band_notes = [note for note in answer["notes"] if "inconclusive band" in note]
    if label == "inconclusive":
        assert answer["confidence"] is None, "no certainty claimed inside the band"
        assert len(band_notes) == 1 and "unreliable" in band_notes[0]
        assert answer["summary"].startswith("Inconclusive") and "no verdict" in answer["summary"]
    else:
        expected = score if label == "ai" else 1 - score
        assert answer["confidence"] == pytest.approx(expected, abs=1e-5), "P(stated class)"
        assert answer["confidence"] > 0.5 and not band_notes
        assert answer["summary"].startswith("Likely AI-generated" if label == "ai" else "Likely human-made")


def test_an_image_of_the_model_size_scores_as_the_model_does(
    client: TestClient, detector_onnx: bytes
) -> None:
    pixels = photo(INPUT_SIZE, INPUT_SIZE, seed=3)
    png = encode(pixels, "PNG")
    session = onnx_session(detector_onnx)
    (expected,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixels[None].astype(np.float32)})
    answer = client.post("/predict", files=upload(png, "x.png", "image/png")).json()
    assert answer["tiles"] == 1
    assert answer["probability_ai"] == pytest.approx(float(expected[0, 0]), abs=1e-6)


def test_content_type_and_file_name_are_ignored(client: TestClient) -> None:
    response = client.post("/predict", files=upload(encode(photo(64, 64), "PNG"), "notes.txt", "text/plain"))
    assert response.status_code == 200
    assert response.json()["format"] == "PNG"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("RGBA", "PNG"),
        ("L", "PNG"),
        ("I;16", "PNG"),
        ("P", "GIF"),
        ("CMYK", "JPEG"),
        ("RGB", "WEBP"),
        ("RGB", "HEIF"),
        ("RGB", "AVIF"),
    ],
)
def test_any_mode_and_format_becomes_rgb(client: TestClient, mode: str, fmt: str) -> None:
    image = Image.fromarray(photo(64, 48)).convert(mode if mode != "I;16" else "I").convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    response = client.post("/predict", files=upload(buffer.getvalue()))
    assert response.status_code == 200, response.text
    assert response.json()["format"] == fmt


def test_exif_orientation_is_applied(client: TestClient) -> None:
    image = Image.fromarray(photo(80, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    verdict = client.post("/predict", files=upload(buffer.getvalue())).json()
    assert (verdict["width"], verdict["height"]) == (40, 80)
    assert any("EXIF" in note for note in verdict["notes"])


def test_small_images_are_padded_and_say_so(client: TestClient) -> None:
    verdict = client.post("/predict", files=upload(encode(photo(40, 20)))).json()
    assert verdict["tiles"] == 1
    assert any("zero-padded" in note for note in verdict["notes"])


def test_animated_images_score_their_first_frame(client: TestClient) -> None:
    frames = [Image.fromarray(photo(48, 48, seed)) for seed in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    verdict = client.post("/predict", files=upload(buffer.getvalue(), "a.gif", "image/gif")).json()
    assert verdict["frames"] == 3
    assert any("first frame" in note for note in verdict["notes"])


def test_bad_uploads_get_clear_4xx_errors_and_the_service_keeps_serving(client: TestClient) -> None:
    jpeg = encode(photo(120, 120))
    ppm = io.BytesIO()
    Image.fromarray(photo(64, 64)).save(ppm, format="PPM")
    bomb = io.BytesIO()
    Image.new("L", (2100, 2100)).save(bomb, format="PNG")  # 4.4 Mpx, a few kB on disk

    assert_error(client.post("/predict", files=upload(b"%PDF-1.7 not a picture")), 415, "not_an_image")
    assert_error(client.post("/predict", files=upload(b"")), 400, "empty")
    assert_error(client.post("/predict", files=upload(jpeg[: len(jpeg) // 2])), 422, "corrupt")
    assert_error(client.post("/predict", files=upload(ppm.getvalue())), 415, "unsupported_format")
    assert_error(client.post("/predict", files=upload(bomb.getvalue())), 413, "too_many_pixels")
    assert_error(client.post("/predict", files=upload(encode(photo(12, 12)))), 422, "too_small")
    assert_error(client.post("/predict", files=upload(b"\xff" * 3_100_000)), 413, "payload_too_large")

    wrong_field = client.post("/predict", files={"picture": ("a.jpg", jpeg, "image/jpeg")})
    assert_error(wrong_field, 400, "unexpected_field")
    assert "'image'" in wrong_field.json()["error"]["message"]
    assert_error(client.post("/predict", files={"note": (None, "no file")}), 400, "unexpected_field")
    assert_error(client.post("/predict", data={"image": "not a file"}), 415, "not_multipart")
    assert_error(
        client.post("/predict", content=b"raw", headers={"content-type": "text/plain"}), 415, "not_multipart"
    )
    assert_error(client.post("/predict_batch", json={"images": []}), 415, "not_multipart")

    assert client.post("/predict", files=upload(jpeg)).status_code == 200


def test_predict_batch_answers_each_verdict_in_order(
    client: TestClient, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    labels: list[Verdict] = ["ai", "inconclusive", "human"]
    files = [("images", (f"{label}.png", verdict_images[label][0], "image/png")) for label in labels]
    batch = client.post("/predict_batch", files=files)
    assert batch.status_code == 200, batch.text
    assert [answer["label"] for answer in batch.json()] == labels
    assert [answer["confidence"] is None for answer in batch.json()] == [False, True, False]


def test_predict_batch_keeps_the_order(client: TestClient) -> None:
    images = [encode(photo(64 + 8 * i, 64, seed=i)) for i in range(3)]
    batch = client.post(
        "/predict_batch", files=[("images", (f"{i}.jpg", data)) for i, data in enumerate(images)]
    )
    assert batch.status_code == 200, batch.text
    singles = [client.post("/predict", files=upload(data)).json() for data in images]
    assert [v["width"] for v in batch.json()] == [64, 72, 80]
    assert [v["probability_ai"] for v in batch.json()] == pytest.approx(
        [v["probability_ai"] for v in singles]
    )


def test_predict_batch_refuses_too_many_files_and_names_a_bad_one(client: TestClient) -> None:
    jpeg = encode(photo(64, 64))
    too_many = client.post("/predict_batch", files=[("images", (f"{i}.jpg", jpeg)) for i in range(5)])
    assert_error(too_many, 400, "too_many_files")
    one_bad = client.post(
        "/predict_batch", files=[("images", ("a.jpg", jpeg)), ("images", ("b.jpg", b"nope"))]
    )
    assert_error(one_bad, 415, "not_an_image")
    assert "file #1" in one_bad.json()["error"]["message"]


def test_annotate_returns_the_image_with_its_verdict(client: TestClient) -> None:
    response = client.post("/annotate", files=upload(encode(photo(160, 90))))
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    annotated = Image.open(io.BytesIO(response.content))
    assert (annotated.format, annotated.size) == ("JPEG", (160, 90))
    assert '"label"' in response.headers["x-verdict"]
    assert json.loads(response.headers["x-verdict"])["closest_family"] in FAMILIES
    assert_error(client.post("/annotate", files=upload(b"")), 400, "empty")


def test_annotate_says_inconclusive_without_a_confidence(
    client: TestClient, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    png, score = verdict_images["inconclusive"]
    response = client.post("/annotate", files=upload(png, "band.png", "image/png"))
    assert response.status_code == 200, response.text
    header = json.loads(response.headers["x-verdict"])
    assert header["label"] == "inconclusive" and header["confidence"] is None
    assert header["probability_ai"] == pytest.approx(score, abs=1e-5)
    assert (header["thresholds"], header["threshold"], header["model_version"]) == (BAND, THRESHOLD, "7")
    banner = np.asarray(Image.open(io.BytesIO(response.content))).astype(int)[:24]
    red, green, blue = banner[..., 0], banner[..., 1], banner[..., 2]
    assert ((red > 150) & (green > 90) & (green < 200) & (blue < 90)).sum() > 10, "drawn in amber"


def test_explain_returns_a_grid_and_a_heatmap_of_the_image_shape(client: TestClient) -> None:
    response = client.post("/explain", files=upload(encode(photo(128, 64))))
    assert response.status_code == 200
    explanation = response.json()
    grid = np.asarray(explanation["grid"])
    assert explanation["method"] == "patches"
    assert grid.shape == (explanation["rows"], explanation["cols"]) == (4, 8)
    assert np.all((grid >= 0) & (grid <= 1))
    prefix = "data:image/png;base64,"
    assert explanation["heatmap_png"].startswith(prefix)
    heatmap = Image.open(io.BytesIO(base64.b64decode(explanation["heatmap_png"][len(prefix) :])))
    assert heatmap.mode == "RGBA"
    assert heatmap.size[0] == 2 * heatmap.size[1]


def test_explain_probes_an_image_no_larger_than_the_input_by_occlusion(
    client: TestClient, detector_onnx: bytes
) -> None:
    pixels = photo(INPUT_SIZE, INPUT_SIZE - 8, seed=4)  # 32 wide, 24 high
    explanation = client.post("/explain", files=upload(encode(pixels, "PNG"), "x.png", "image/png")).json()
    assert explanation["method"] == "occlusion"
    assert (explanation["rows"], explanation["cols"]) == (6, 8)
    session = onnx_session(detector_onnx)
    mean = pixels.reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    hidden = pixels.copy()
    hidden[:4, :4] = mean  # the top-left cell (24 rows / 6, 32 columns / 8)
    padded = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    padded[4:-4] = hidden  # the short side zero-padded, centred
    (p_hidden,) = session.run([OUTPUT_NAME], {INPUT_NAME: padded[None].astype(np.float32)})
    expected = explanation["probability_ai"] - float(p_hidden[0, 0])
    assert explanation["grid"][0][0] == pytest.approx(expected, abs=1e-4)


def test_info_and_health(client: TestClient) -> None:
    info = client.post("/info", json={}).json()
    assert info["model_version"] == "7"
    assert (info["input_size"], info["max_files"], info["max_bytes"]) == (INPUT_SIZE, 4, 3_000_000)
    assert (info["batching"], info["max_batch_size"]) == (True, 64), "AIID_MAX_BATCH_SIZE, as set"
    assert (info["threshold"], info["thresholds"], info["max_tiles"]) == (THRESHOLD, BAND, MODEL_MAX_TILES)
    assert (info["calibration"], info["metadata_fallbacks"]) == (CALIBRATION, [])
    assert info["families"] == FAMILIES
    assert "JPEG" in info["formats"]
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200


def test_without_a_set_call_size_the_service_measures_the_fastest_when_it_starts(
    service_module: ModuleType, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    unset = service_module.SETTINGS.model_copy(update={"max_batch_size": None})
    monkeypatch.setattr(service_module, "SETTINGS", unset)
    with caplog.at_level(logging.INFO, logger=service_module.__name__):
        detector = service_module.Detector.inner()
    size = detector.batcher.max_batch_size
    assert size in {2**power for power in range(7)}
    assert (
        f"model calls carry up to {size} crops: the fastest per crop here (crops/s by call size: 1:"
        in caplog.text
    )
    assert f"batching up to {size} crops a call" in caplog.text


def test_requests_queue_up_to_the_depth_and_one_more_is_told_when_to_retry(
    service_module: ModuleType,
) -> None:
    depth = 3
    release = threading.Event()

    def held_model(crops: np.ndarray) -> np.ndarray:
        """0.25 per crop, once the test lets the calls through."""
        assert release.wait(timeout=30), "the test never released the model"
        return np.full((len(crops), 1), 0.25, dtype=np.float32)

    detector = service_module.Detector.inner()
    detector.batcher = CropBatcher(held_model, batching=True, max_batch_size=64, max_queued_requests=depth)
    crops = np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)

    async def burst() -> tuple[list[np.ndarray], ClientError]:
        queued = [asyncio.create_task(detector._scores(crops)) for _ in range(depth)]
        await asyncio.sleep(0)  # all of them now wait for the model
        with pytest.raises(ClientError) as refused:
            await detector._scores(crops)
        release.set()
        return await asyncio.gather(*queued), refused.value

    answered, refused = asyncio.run(burst())
    assert [scores.tolist() for scores in answered] == [[[0.25]]] * depth, "the queued requests are answered"
    assert (refused.code, refused.status, refused.retry_after_s) == ("overloaded", 503, 2)
    assert f"{depth} requests already wait" in refused.message
    assert detector.batcher.requests == 0
    response = error_response(refused.code, refused.message, refused.status, refused.retry_after_s)
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_scores(
    service_module: ModuleType,
) -> None:
    detector = service_module.Detector.inner()
    calls: list[int] = []
    score = detector.scorer.score

    def counted(crops: np.ndarray) -> np.ndarray:
        calls.append(len(crops))
        return score(crops)

    detector.batcher = CropBatcher(counted, batching=True, max_batch_size=64, max_queued_requests=16)
    images = [
        np.stack([photo(INPUT_SIZE, INPUT_SIZE, 3 * seed + tile) for tile in range(3)]) for seed in range(6)
    ]

    async def together() -> list[np.ndarray]:
        return list(await asyncio.gather(*(detector._scores(crops) for crops in images)))

    answers = asyncio.run(together())
    assert sum(calls) == 18 and len(calls) < len(images), f"calls of {calls} crops"
    for crops, rows in zip(images, answers, strict=True):
        assert rows == pytest.approx(detector.scorer.score(crops), abs=1e-6)


def scorer_of(tag: str, service_module: ModuleType) -> Scorer:
    return Scorer(bentoml.models.get(tag), service_module.SETTINGS)


def test_the_scorer_answers_each_crops_probability_and_family_probabilities(
    service_module: ModuleType, served_model: str, detector_onnx: bytes
) -> None:
    scorer = scorer_of(served_model, service_module)
    crops = np.stack([photo(INPUT_SIZE, INPUT_SIZE, seed) for seed in range(3)])
    rows = scorer.score(crops)
    session = onnx_session(detector_onnx)
    (probabilities,) = session.run([OUTPUT_NAME], {INPUT_NAME: crops.astype(np.float32)})
    assert rows.shape == (3, 1 + len(FAMILIES))
    assert rows[:, 0] == pytest.approx(probabilities[:, 0], abs=1e-6)
    assert rows[:, 1:] == pytest.approx(family_rows(crops), abs=1e-5)
    assert scorer.model.families == FAMILIES


def test_the_scorer_refuses_crops_of_another_size(service_module: ModuleType, served_model: str) -> None:
    scorer = scorer_of(served_model, service_module)
    assert scorer.score(np.zeros((2, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)).shape == (
        2,
        1 + len(FAMILIES),
    )
    for shape in ((2, INPUT_SIZE + 1, INPUT_SIZE, 3), (INPUT_SIZE, INPUT_SIZE, 3)):
        with pytest.raises(ValueError, match=rf"\[N, {INPUT_SIZE}, {INPUT_SIZE}, 3\]"):
            scorer.score(np.zeros(shape, dtype=np.uint8))


def multipart(parts: list[tuple[str, str | None, bytes]], content_type: str) -> tuple[bytes, dict[str, str]]:
    """A multipart body of ``(field, file name or None for a text field, content)`` parts, by hand."""
    lines = []
    for field, file_name, content in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{file_name}"' if file_name else "")
        lines.append(
            b"--XyZ\r\nContent-Disposition: " + disposition.encode() + b"\r\n\r\n" + content + b"\r\n"
        )
    return b"".join(lines) + b"--XyZ--\r\n", {"content-type": content_type}


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=XyZ",
        "multipart/form-data; charset=UTF-8; boundary=XyZ",
        "multipart/form-data; boundary=XyZ; charset=UTF-8",
        'Multipart/Form-Data; BOUNDARY="XyZ"',
    ],
)
def test_any_valid_multipart_header_is_accepted(client: TestClient, content_type: str) -> None:
    body, headers = multipart([("image", "a.jpg", encode(photo(64, 64)))], content_type)
    response = client.post("/predict", content=body, headers=headers)
    assert response.status_code == 200, response.text


def test_a_form_without_the_file_or_with_text_in_its_place_is_a_400(client: TestClient) -> None:
    content_type = "multipart/form-data; boundary=XyZ"
    body, headers = multipart([], content_type)
    assert_error(client.post("/predict", content=body, headers=headers), 400, "missing_field")
    body, headers = multipart([("image", None, b"not a file")], content_type)
    assert_error(client.post("/predict", content=body, headers=headers), 400, "not_a_file")
    jpeg = encode(photo(64, 64))
    assert_error(client.post("/explain", files=upload(jpeg[: len(jpeg) // 2])), 422, "corrupt")
    assert_error(client.post("/annotate", files=upload(b"plain text")), 415, "not_an_image")


def test_explain_carries_the_verdict_with_its_band(
    client: TestClient, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    png, _ = verdict_images["inconclusive"]
    explanation = client.post("/explain", files=upload(png, "band.png", "image/png")).json()
    assert (explanation["label"], explanation["confidence"], explanation["thresholds"]) == (
        "inconclusive",
        None,
        BAND,
    )
    assert explanation["method"] == "patches"


def test_the_openapi_document_describes_the_three_verdicts(service_module: ModuleType) -> None:
    document = service_module.Detector.openapi_spec.asdict()
    schemas = document["components"]["schemas"]
    verdict_schema = schemas["ImageVerdict"]["properties"]
    assert verdict_schema["label"]["enum"] == ["human", "inconclusive", "ai"]
    assert verdict_schema["confidence"]["nullable"] is True, "confidence may be null"
    assert "inconclusive" in verdict_schema["confidence"]["description"]
    assert set(schemas["Thresholds"]["properties"]) == {"human", "ai"}
    for field in ("closest_family", "closest_family_probability", "family_probabilities"):
        assert verdict_schema[field]["nullable"] is True, f"{field} is null without attribution"
    assert "not which generator made it" in verdict_schema["closest_family"]["description"]
    predict = document["paths"]["/predict"]["post"]
    answer = predict["responses"][200]["content"]["application/json"]["schema"]
    assert answer["properties"]["label"]["enum"] == ["human", "inconclusive", "ai"]
    assert answer["properties"]["confidence"]["nullable"] is True
    assert "inconclusive" in predict["description"]


def test_a_model_exported_before_the_band_still_serves(
    service_module: ModuleType, legacy_model: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class LegacyDetector(service_module.Detector.inner):  # type: ignore[name-defined,misc]
        bento_model = bentoml.models.BentoModel(legacy_model)

    with caplog.at_level(logging.WARNING):
        detector = LegacyDetector()
    assert (
        "no 'threshold_human'/'threshold_ai'" in caplog.text
        and f"AIID_MAX_TILES={SETTING_MAX_TILES}" in caplog.text
    )
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode(photo(200, 120)))

    answer = asyncio.run(detector.predict(image)).model_dump()  # type: ignore[attr-defined]
    assert answer["model_version"] == "6"
    assert answer["thresholds"] == {"human": THRESHOLD, "ai": THRESHOLD}, "both edges at the threshold"
    assert answer["label"] == ("ai" if answer["probability_ai"] >= THRESHOLD else "human")
    assert answer["confidence"] == pytest.approx(max(answer["probability_ai"], 1 - answer["probability_ai"]))
    assert answer["tiles"] == SETTING_MAX_TILES, "no max_tiles in its metadata: AIID_MAX_TILES applies"
    assert answer["calibrated"] is False
    assert any("no calibration" in note for note in answer["notes"])
    assert (answer["closest_family"], answer["closest_family_probability"]) == (None, None), "no attribution"
    assert answer["family_probabilities"] is None
    info = asyncio.run(detector.info()).model_dump()  # type: ignore[attr-defined]
    assert (info["max_tiles"], info["calibration"], info["families"]) == (SETTING_MAX_TILES, None, None)
    assert len(info["metadata_fallbacks"]) == 3


def test_a_model_whose_metadata_does_not_name_its_families_serves_without_attribution(
    service_module: ModuleType, detector_onnx: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proto = onnx.load_from_string(detector_onnx)
    kept = {prop.key: prop.value for prop in proto.metadata_props if prop.key != FAMILIES_KEY}
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, kept)
    unnamed = store("test-detector-unnamed", proto.SerializeToString(), "8")

    class UnnamedDetector(service_module.Detector.inner):  # type: ignore[name-defined,misc]
        bento_model = bentoml.models.BentoModel(unnamed)

    with caplog.at_level(logging.WARNING):
        detector = UnnamedDetector()
    assert "has the output 'family_probabilities' but not the metadata 'families'" in caplog.text
    assert detector.scorer.score(np.zeros((2, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)).shape == (2, 1)
    image = tmp_path / "photo.jpg"
    image.write_bytes(encode(photo(200, 120)))
    answer = asyncio.run(detector.predict(image)).model_dump()  # type: ignore[attr-defined]
    assert (answer["model_version"], answer["closest_family"], answer["family_probabilities"]) == (
        "8",
        None,
        None,
    )


@pytest.mark.parametrize(
    ("fmt", "options", "mime"),
    [("JPEG", {"quality": 90, "subsampling": "4:2:0"}, "image/jpeg"), ("PNG", {}, "image/png")],
)
def test_the_service_scores_a_file_exactly_as_evaluation_does(
    client: TestClient,
    detector_onnx: bytes,
    tmp_path: Path,
    fmt: str,
    options: dict[str, object],
    mime: str,
) -> None:
    path = tmp_path / f"upload.{fmt.lower()}"
    path.write_bytes(encode(photo(150, 110, seed=5), fmt, **options))
    session = onnx_session(detector_onnx)

    def model(crops: np.ndarray) -> np.ndarray:
        return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: crops})[0])[:, 0]

    (tiles,) = score_files(model, [str(path)], INPUT_SIZE, MODEL_MAX_TILES, batch_size=64)
    answer = client.post("/predict", files=upload(path.read_bytes(), path.name, mime)).json()

    assert answer["tiles"] == len(tiles) > 1, "the same tiles, several of them"
    assert answer["probability_ai"] == pytest.approx(float(np.mean(tiles)), abs=1e-6)
