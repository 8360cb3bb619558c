"""The web page in Debian's Chromium (Playwright), against a real ``bentoml serve``.

Upload an image, see the verdict and the closest training family, download the annotated image,
reload, find it in the history; a score inside the model's band is shown as inconclusive, with the
band on the bar; an answer without attribution shows no family.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import FAMILIES, INPUT_SIZE, MODEL_MAX_TILES, THRESHOLD_AI, THRESHOLD_HUMAN, family_rows
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ai_image_detection.contract import Verdict
from ai_image_detection.tiling import tile_crops

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
    tab.goto(f"{live_server}/ui/")
    yield tab
    context.close()


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


@pytest.mark.parametrize("attribution", ["null", "absent"])
@pytest.mark.slow
def test_an_answer_without_attribution_shows_no_family(
    page: Page,
    live_server: str,
    tmp_path: Path,
    verdict_images: dict[Verdict, tuple[bytes, float]],
    attribution: str,
) -> None:
    """A model without attribution answers nulls; a service from before attribution, no such fields.

    The page is given the service's real answer with the fields changed (Chromium does not let an
    intercepted upload be sent on, so the answer is asked for here).
    """
    png = verdict_images["human"][0]
    real = httpx.post(f"{live_server}/predict", files={"image": ("plain.png", png)}, timeout=60).json()
    fields = ("closest_family", "closest_family_probability", "family_probabilities")
    answer = {key: value for key, value in real.items() if key not in fields}
    if attribution == "null":
        answer.update(dict.fromkeys(fields))
    page.route("**/predict", lambda route: route.fulfill(json=answer))

    image = tmp_path / "plain.png"
    image.write_bytes(png)
    page.set_input_files("#file-input", str(image))
    card = page.locator('.result-card[data-filename="plain.png"]')
    expect(card.locator(".verdict")).to_contain_text("Likely human-made", timeout=30_000)
    expect(card.locator(".closest-family")).to_have_count(0)
    assert "closest family" not in card.inner_text()
