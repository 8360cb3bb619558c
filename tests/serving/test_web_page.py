"""The web page in Debian's Chromium (Playwright), against a real ``bentoml serve``.

Upload an image, see the verdict and the closest training family, download the annotated image,
reload, find it in the history; a score inside the model's band is shown as inconclusive, with the
band on the bar; an answer without attribution shows no family. The provenance panel shows what a
generator's PNG text declares (the verdict then "AI (declared)") and says when nothing was found;
"Is this verdict wrong?" sends the true label to ``/feedback`` (the image only with consent), which
the test service keeps in the session's local S3. The page's script must raise no error.
"""

from __future__ import annotations

import email.policy
import hashlib
import io
import json
import re
from collections.abc import Callable, Iterator
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import boto3
import httpx
import numpy as np
import pytest
from conftest import (
    FAMILIES,
    FEEDBACK_PREFIX,
    INPUT_SIZE,
    MODEL_MAX_TILES,
    THRESHOLD_AI,
    THRESHOLD_HUMAN,
    family_rows,
)
from PIL import Image
from playwright.sync_api import Browser, Locator, Page, Request, Route, expect, sync_playwright

from ai_image_detection.contract import NEVER_CUT, Verdict
from ai_image_detection.tiling import tile_crops
from tests.conftest import LocalS3
from tests.serving.provenance_fixtures import A1111_PARAMETERS, png_with_parameters

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium (never `playwright install`)"
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, live_server: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(f"{live_server}/ui/")
    yield tab
    context.close()
    assert not errors, f"the page's script raised: {errors}"


@pytest.mark.slow
def test_upload_verdict_download_and_history_survives_a_reload(
    page: Page, tmp_path: Path, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    image = tmp_path / "holiday.png"
    image.write_bytes(verdict_images["ai"][0])
    expect(page.locator("#model-info")).to_contain_text("7")

    page.set_input_files("#file-input", str(image))
    card = page.locator('.result-card[data-filename="holiday.png"]')
    expect(card.locator(".verdict")).to_contain_text("Likely AI-generated", timeout=30_000)
    expect(card.locator(".probability")).to_contain_text("%")
    expect(card.locator(".details")).to_contain_text(re.compile(r"Confidence\s*\d+\.\d%"))
    pixels = np.asarray(Image.open(io.BytesIO(verdict_images["ai"][0])).convert("RGB"))
    rows = family_rows(tile_crops(pixels, INPUT_SIZE, MODEL_MAX_TILES))
    closest = FAMILIES[int(rows.mean(axis=0).argmax())]
    family = card.locator(".closest-family")
    expect(family).to_contain_text(re.compile(rf"closest family: {closest} \(\d+\.\d%\)"))
    expect(family).to_contain_text("not proof of which generator made it")
    expect(family).to_have_attribute("title", re.compile("not a finding of which generator made it"))

    with page.expect_download() as download_info:
        card.locator("button.download-annotated").click()
    downloaded = tmp_path / "annotated.jpg"
    download_info.value.save_as(downloaded)
    annotated = Image.open(io.BytesIO(downloaded.read_bytes()))
    assert (annotated.format, annotated.size) == ("JPEG", (96, 64))

    card.locator("button.explain-toggle").click()
    expect(card.locator("img.heatmap-overlay")).to_be_visible(timeout=30_000)

    page.reload()
    entry = page.locator('#history li.history-item[data-filename="holiday.png"]')
    expect(entry).to_have_count(1)
    with page.expect_download() as export_info:
        page.locator("#history-export").click()
    exported = json.dumps(json.loads(Path(export_info.value.path()).read_text()))
    assert "holiday.png" in exported
    entry.locator("button.history-delete").click()
    expect(entry).to_have_count(0)


@pytest.mark.slow
def test_a_bad_file_shows_the_services_message(page: Page, tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not an image")
    page.set_input_files("#file-input", str(bad))
    card = page.locator('.result-card[data-filename="notes.jpg"]')
    expect(card.locator(".error")).to_contain_text("not a recognised image", timeout=30_000)


@pytest.mark.slow
def test_a_score_in_the_band_is_shown_as_inconclusive_with_the_band_on_the_bar(
    page: Page, tmp_path: Path, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    image = tmp_path / "unsure.png"
    image.write_bytes(verdict_images["inconclusive"][0])
    expect(page.locator("#model-info")).to_contain_text("inconclusive in between")
    page.set_input_files("#file-input", str(image))
    card = page.locator('.result-card[data-filename="unsure.png"]')
    verdict = card.locator(".verdict")
    expect(verdict).to_contain_text("Inconclusive", timeout=30_000)
    expect(card).to_have_attribute("data-label", "inconclusive")
    expect(verdict).to_have_css("color", "rgb(146, 64, 14)")  # amber, neither red nor green

    details = card.locator(".details")
    expect(details).to_contain_text("none: the score lies in the inconclusive band")
    confidence = details.locator("dt:text-is('Confidence') + dd")
    expect(confidence).not_to_contain_text("%")
    assert "human-made" not in card.inner_text(), "no class is named (the hidden legend aside)"
    expect(card.locator(".notes")).to_contain_text("unreliable")

    edges = card.locator(".meter-threshold")
    expect(edges).to_have_count(2)
    for edge, value in (("human", THRESHOLD_HUMAN), ("ai", THRESHOLD_AI)):
        expect(card.locator(f'.meter-threshold[data-edge="{edge}"]')).to_have_attribute(
            "style", f"left: {value * 100:.2f}%"
        )
    band = card.locator(".meter-band")
    expect(band).to_be_visible()
    bar, shaded = card.locator(".meter").bounding_box(), band.bounding_box()
    assert bar is not None and shaded is not None
    assert shaded["x"] - bar["x"] == pytest.approx(THRESHOLD_HUMAN * bar["width"], abs=2)
    assert shaded["width"] == pytest.approx((THRESHOLD_AI - THRESHOLD_HUMAN) * bar["width"], abs=2)

    page.reload()
    entry = page.locator('#history li.history-item[data-filename="unsure.png"]')
    expect(entry).to_have_attribute("data-label", "inconclusive")
    expect(entry.locator(".history-verdict")).to_have_text("Inconclusive")


def upload_with_changed_answer(
    page: Page,
    live_server: str,
    path: Path,
    data: bytes,
    change: Callable[[dict[str, Any]], dict[str, Any]],
) -> Locator:
    """Upload ``data`` as ``path`` with the page given the service's real answer after ``change``.

    Chromium does not let an intercepted upload be sent on, so the real answer is asked for here.

    Returns:
        The file's result card.
    """
    real = httpx.post(f"{live_server}/predict", files={"image": (path.name, data)}, timeout=60).json()
    changed = change(real)
    page.route("**/predict", lambda route: route.fulfill(json=changed))
    path.write_bytes(data)
    page.set_input_files("#file-input", str(path))
    return page.locator(f'.result-card[data-filename="{path.name}"]')


@pytest.mark.slow
def test_a_band_that_never_answers_ai_says_so_and_stays_on_the_bar(
    page: Page, live_server: str, tmp_path: Path, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    """A model whose band found no cut within its false-accusation target has ``threshold_ai`` above 1."""
    card = upload_with_changed_answer(
        page,
        live_server,
        tmp_path / "never.png",
        verdict_images["inconclusive"][0],
        lambda real: {**real, "thresholds": {"human": THRESHOLD_HUMAN, "ai": NEVER_CUT}},
    )
    expect(card.locator(".verdict")).to_contain_text("Inconclusive", timeout=30_000)
    expect(card.locator(".details dt:text-is('Thresholds') + dd")).to_have_text(
        f"human below {THRESHOLD_HUMAN * 100:.1f}% · never AI"
    )
    expect(card.locator('.meter-threshold[data-edge="ai"]')).to_have_attribute("style", "left: 100.00%")
    expect(card.locator(".meter-scale .edge-ai")).to_have_text("never AI")
    expect(card.locator(".meter")).to_have_attribute("aria-valuetext", re.compile(r"never AI, inconclusive"))
    bar, shaded = card.locator(".meter").bounding_box(), card.locator(".meter-band").bounding_box()
    assert bar is not None and shaded is not None
    band_end, bar_end = shaded["x"] + shaded["width"], bar["x"] + bar["width"]
    assert band_end == pytest.approx(bar_end, abs=2), "the band ends at 100 %"


@pytest.mark.parametrize("attribution", ["null", "absent"])
@pytest.mark.slow
def test_an_answer_without_attribution_shows_no_family(
    page: Page,
    live_server: str,
    tmp_path: Path,
    verdict_images: dict[Verdict, tuple[bytes, float]],
    attribution: str,
) -> None:
    """A model without attribution answers nulls; a service from before attribution, no such fields."""
    fields = ("closest_family", "closest_family_probability", "family_probabilities")

    def without_attribution(real: dict[str, Any]) -> dict[str, Any]:
        answer = {key: value for key, value in real.items() if key not in fields}
        return {**answer, **dict.fromkeys(fields)} if attribution == "null" else answer

    card = upload_with_changed_answer(
        page, live_server, tmp_path / "plain.png", verdict_images["human"][0], without_attribution
    )
    expect(card.locator(".verdict")).to_contain_text("Likely human-made", timeout=30_000)
    expect(card.locator(".closest-family")).to_have_count(0)
    assert "closest family" not in card.inner_text()


CAVEAT = "Metadata is easy to forge and to strip"


def upload(page: Page, path: Path, data: bytes) -> dict[str, Any]:
    """Choose ``data`` as the file ``path`` on the page; the service's answer to its ``/predict``."""
    path.write_bytes(data)
    with page.expect_response("**/predict") as predicted:
        page.set_input_files("#file-input", str(path))
    answer: dict[str, Any] = predicted.value.json()
    return answer


def multipart(request: Request) -> dict[str, tuple[str | None, bytes]]:
    """The fields of a multipart request the page sent: name -> (file name or None, bytes).

    Chromium hands over a file part's headers but not its bytes (they are checked in the store).
    """
    head = f"Content-Type: {request.header_value('content-type')}\r\n\r\n".encode()
    body = BytesParser(policy=email.policy.HTTP).parsebytes(head + (request.post_data_buffer or b""))
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        fields[str(name)] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def stored_feedback(s3_server: LocalS3, feedback_id: str) -> tuple[dict[str, Any], bytes | None]:
    """The record the test service kept for ``feedback_id`` in the session's S3, and its image if any."""
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint_url,
        aws_access_key_id=s3_server.credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=s3_server.credentials["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    listed = s3.list_objects_v2(Bucket=s3_server.bucket, Prefix=f"{FEEDBACK_PREFIX}/")
    keys = [item["Key"] for item in listed.get("Contents", []) if feedback_id in item["Key"]]
    records = [key for key in keys if key.startswith(f"{FEEDBACK_PREFIX}/records/")]
    assert len(records) == 1, f"one record of {feedback_id} expected, found {keys}"
    record = json.loads(s3.get_object(Bucket=s3_server.bucket, Key=records[0])["Body"].read())
    images = [key for key in keys if key.startswith(f"{FEEDBACK_PREFIX}/images/")]
    assert images == ([record["image_key"]] if record["image_key"] else []), keys
    image = s3.get_object(Bucket=s3_server.bucket, Key=images[0])["Body"].read() if images else None
    return record, image


@pytest.mark.slow
def test_the_provenance_panel_shows_a_generators_declaration_which_decides(
    page: Page, tmp_path: Path
) -> None:
    answer = upload(page, tmp_path / "lighthouse.png", png_with_parameters())
    assert (answer["label"], answer["decided_by"]) == ("ai", "provenance")
    card = page.locator('.result-card[data-filename="lighthouse.png"]')
    expect(card.locator(".verdict")).to_have_text(re.compile(r"AI \(declared\)$"), timeout=30_000)
    expect(card).to_have_attribute("data-decided-by", "provenance")
    percent = f"{answer['probability_ai'] * 100:.1f}%"
    expect(card.locator(".probability")).to_have_text(percent)
    expect(card.locator(".probability-line")).to_contain_text("from the pixels alone")
    details = card.locator(".details")
    expect(details.locator("dt:text-is('Decided by') + dd")).to_have_text("the image's provenance (declared)")
    expect(details.locator("dt:text-is('Confidence') + dd")).to_contain_text("provenance decided")

    panel = card.locator("div.provenance")
    expect(panel).to_have_attribute("data-found", "true")
    expect(panel.get_by_role("heading", name="Provenance")).to_be_visible()
    expect(panel.locator(".provenance-decision")).to_have_text(
        "Decided by the image's provenance (Generator text in the PNG): AI (declared). "
        f"The pixels alone give P(AI) {percent}."
    )
    evidence = panel.locator("li.evidence")
    expect(evidence).to_have_count(1)
    expect(evidence).to_have_attribute("data-source", "png_text")
    expect(evidence).to_have_attribute("data-validity", "unverified")
    expect(evidence.locator(".evidence-claim")).to_have_text("claims: AI-generated")
    expect(evidence.locator(".evidence-validity")).to_have_text("unverified: unsigned metadata")
    expect(evidence.locator(".evidence-decisive")).to_be_visible()
    expect(evidence.locator(".evidence-detail")).to_have_text(answer["provenance"]["evidence"][0]["detail"])
    prompt = evidence.locator(".evidence-fields dt:text-is('prompt') + dd")
    expect(prompt).to_be_hidden()
    evidence.locator(".evidence-fields summary").click()
    expect(prompt).to_have_text(A1111_PARAMETERS.split("\n")[0])
    expect(panel.locator(".provenance-caveat")).to_contain_text(CAVEAT)
    expect(panel.locator(".provenance-caveat")).to_contain_text("its absence proves nothing")

    page.reload()
    entry = page.locator('#history li.history-item[data-filename="lighthouse.png"]')
    expect(entry.locator(".history-verdict")).to_have_text("AI (declared)")


@pytest.mark.slow
def test_the_provenance_panel_says_when_nothing_was_found(
    page: Page, tmp_path: Path, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    answer = upload(page, tmp_path / "plain.png", verdict_images["human"][0])
    assert (answer["decided_by"], answer["provenance"]["found"]) == ("pixels", False)
    card = page.locator('.result-card[data-filename="plain.png"]')
    expect(card.locator(".verdict")).to_contain_text("Likely human-made", timeout=30_000)
    expect(card.locator(".details dt:text-is('Decided by') + dd")).to_have_text("the pixels")
    panel = card.locator("div.provenance")
    expect(panel).to_have_attribute("data-found", "false")
    expect(panel.locator(".provenance-found")).to_contain_text("Nothing found")
    expect(panel.locator(".provenance-decision")).to_have_text("Decided by the pixels.")
    expect(panel.locator("li.evidence")).to_have_count(0)
    expect(panel.locator(".provenance-caveat")).to_contain_text(CAVEAT)
    expect(panel.locator(".provenance-caveat")).to_contain_text("its absence proves nothing")


@pytest.mark.slow
def test_an_older_services_answer_shows_no_provenance_and_no_feedback(
    page: Page, live_server: str, tmp_path: Path, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    """A service from before provenance and feedback answers neither: the page leaves both out."""
    newer = {"provenance", "prediction_id", "decided_by"}
    card = upload_with_changed_answer(
        page,
        live_server,
        tmp_path / "old.png",
        verdict_images["human"][0],
        lambda real: {key: value for key, value in real.items() if key not in newer},
    )
    expect(card.locator(".verdict")).to_contain_text("Likely human-made", timeout=30_000)
    expect(card.locator(".download-annotated")).to_be_visible()
    expect(card.locator(".provenance")).to_have_count(0)
    expect(card.locator(".feedback-toggle")).to_have_count(0)
    expect(card.locator(".details dt:text-is('Decided by')")).to_have_count(0)


def fill_feedback(card: Locator, note: str, consent: bool) -> tuple[Locator, Locator]:
    """Open the card's feedback form (checking its defaults), write ``note``, consent or not.

    Returns:
        The "Is this verdict wrong?" button and the form.
    """
    toggle = card.locator("button.feedback-toggle")
    expect(toggle).to_have_text("Is this verdict wrong?")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    form = card.locator("form.feedback-form")
    expect(form).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    human = form.get_by_label("Human-made (camera)", exact=True)
    expect(human).to_be_checked()  # the opposite of the verdict
    expect(human).to_be_focused()
    keep = form.get_by_label("Keep this image to improve the detector")
    expect(keep).not_to_be_checked()
    expect(form.locator(".feedback-privacy")).to_contain_text("Without your consent only the numbers")
    form.get_by_label("Note (optional)").fill(note)
    expect(form.locator(".feedback-count")).to_have_text(f"{len(note)} / 1000 characters")
    if consent:
        keep.check()
    return toggle, form


@pytest.mark.parametrize("consent", [False, True], ids=["numbers-only", "with-image"])
@pytest.mark.slow
def test_feedback_sends_the_true_label_and_the_image_only_with_consent(
    page: Page,
    tmp_path: Path,
    verdict_images: dict[Verdict, tuple[bytes, float]],
    s3_server: LocalS3,
    consent: bool,
) -> None:
    data = verdict_images["ai"][0]
    answer = upload(page, tmp_path / "mine.png", data)
    card = page.locator('.result-card[data-filename="mine.png"]')
    expect(card.locator(".verdict")).to_contain_text("Likely AI-generated", timeout=30_000)

    note = "My own photo, from my phone."
    toggle, form = fill_feedback(card, note, consent)
    sent_requests: list[Request] = []
    page.on("request", lambda request: sent_requests.append(request) if "/feedback" in request.url else None)
    with page.expect_request("**/feedback") as sent, page.expect_response("**/feedback") as answered:
        form.get_by_role("button", name="Send feedback").click()
    if not consent:  # Chromium shows no body of a request that carries a file: that one is checked below
        assert multipart(sent.value) == {
            "prediction_id": (None, answer["prediction_id"].encode()),
            "label": (None, b"human"),
            "note": (None, note.encode()),
            "consent": (None, b"false"),
        }
    assert answered.value.status == 200, answered.value.text()
    receipt = answered.value.json()
    assert receipt["stored_image"] is consent

    result = form.locator(".feedback-result")
    expect(result).to_have_text(receipt["message"])
    expect(result).to_have_attribute("aria-live", "polite")
    expect(result).to_be_focused()
    expect(form.locator(".feedback-submit")).to_be_disabled()
    expect(form.get_by_label("Human-made (camera)", exact=True)).to_be_disabled()
    expect(toggle).to_have_text("Feedback sent")
    expect(card).to_have_attribute("data-feedback", "sent")
    form.evaluate("form => form.requestSubmit()")  # a second submission is refused by the page
    page.wait_for_timeout(300)
    assert len(sent_requests) == 1

    record, image = stored_feedback(s3_server, receipt["feedback_id"])
    assert (record["prediction_id"], record["claimed_label"], record["note"], record["consent"]) == (
        answer["prediction_id"],
        "human",
        note,
        consent,
    )
    if consent:
        assert image == data, "the very file that was predicted is kept"
        assert record["image_sha256"] == hashlib.sha256(data).hexdigest()
    else:
        assert (image, record["image_key"], record["image_sha256"]) == (None, None, None)


@pytest.mark.slow
def test_feedback_by_keyboard_with_its_checks_and_the_services_error(
    page: Page, tmp_path: Path, verdict_images: dict[Verdict, tuple[bytes, float]]
) -> None:
    answer = upload(page, tmp_path / "unsure.png", verdict_images["inconclusive"][0])
    card = page.locator('.result-card[data-filename="unsure.png"]')
    expect(card.locator(".verdict")).to_contain_text("Inconclusive", timeout=30_000)
    toggle = card.locator("button.feedback-toggle")
    form = card.locator("form.feedback-form")
    expect(toggle).to_have_accessible_name("Is this verdict wrong?")
    expect(form).to_have_attribute("id", toggle.get_attribute("aria-controls") or "no aria-controls")

    toggle.focus()
    page.keyboard.press("Enter")
    expect(form).to_be_visible()
    ai = form.get_by_label("AI-generated", exact=True)
    expect(ai).to_be_focused()  # nothing preset for an inconclusive verdict: the first choice
    expect(form.locator("input[type=radio]:checked")).to_have_count(0)
    page.keyboard.press("Escape")
    expect(form).to_be_hidden()
    expect(toggle).to_be_focused()
    expect(toggle).to_have_attribute("aria-expanded", "false")
    page.keyboard.press("Enter")
    expect(ai).to_be_focused()

    sent_requests: list[str] = []
    page.on("request", lambda sent: sent_requests.append(sent.url) if "/feedback" in sent.url else None)
    submit = form.get_by_role("button", name="Send feedback")
    submit.click()
    result = form.locator(".feedback-result")
    expect(result).to_have_text("Choose the true label first.")
    expect(result).to_have_class(re.compile("is-error"))
    assert sent_requests == []

    ai.focus()
    page.keyboard.press("Space")
    expect(ai).to_be_checked()
    note = form.get_by_label("Note (optional)")
    note.fill("x" * 1200)
    expect(note).to_have_value("x" * 1000)
    expect(form.locator(".feedback-count")).to_have_text("1000 / 1000 characters")
    keep = form.get_by_label("Keep this image to improve the detector")
    keep.press("Space")
    expect(keep).to_be_checked()

    # Intercepted, the request shows its fields and the file part's headers (not the file's bytes).
    intercepted: list[dict[str, tuple[str | None, bytes]]] = []
    error = {"error": {"code": "unknown_prediction", "message": "no recent prediction 'p-1' on this service"}}

    def refuse(route: Route) -> None:
        intercepted.append(multipart(route.request))
        route.fulfill(status=404, json=error)

    page.route("**/feedback", refuse)
    submit.press("Enter")
    expect(result).to_have_text(
        "Could not send the feedback: no recent prediction 'p-1' on this service "
        "(HTTP 404, unknown_prediction)"
    )
    expect(submit).to_be_enabled()  # it may be sent again
    expect(toggle).to_have_text("Is this verdict wrong?")
    assert len(sent_requests) == 1
    [fields] = intercepted
    assert fields == {
        "prediction_id": (None, answer["prediction_id"].encode()),
        "label": (None, b"ai"),
        "note": (None, b"x" * 1000),
        "consent": (None, b"true"),
        "image": ("unsure.png", b""),
    }
