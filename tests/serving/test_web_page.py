"""The web page in Debian's Chromium (Playwright), against a real ``bentoml serve``.

Upload an image, see the verdict, download the annotated image, reload, find it in the history.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import encode, photo
from PIL import Image
from playwright.sync_api import Browser, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
_VERDICT = re.compile("AI-generated|human-made")
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
def test_upload_verdict_download_and_history_survives_a_reload(page: Page, tmp_path: Path) -> None:
    image = tmp_path / "holiday.jpg"
    image.write_bytes(encode(photo(96, 64)))
    expect(page.locator("#model-info")).to_contain_text("7")

    page.set_input_files("#file-input", str(image))
    card = page.locator('.result-card[data-filename="holiday.jpg"]')
    expect(card.locator(".verdict")).to_have_text(_VERDICT, timeout=30_000)
    expect(card.locator(".probability")).to_contain_text("%")

    with page.expect_download() as download_info:
        card.locator("button.download-annotated").click()
    downloaded = tmp_path / "annotated.jpg"
    download_info.value.save_as(downloaded)
    annotated = Image.open(io.BytesIO(downloaded.read_bytes()))
    assert (annotated.format, annotated.size) == ("JPEG", (96, 64))

    card.locator("button.explain-toggle").click()
    expect(card.locator("img.heatmap-overlay")).to_be_visible(timeout=30_000)

    page.reload()
    entry = page.locator('#history li.history-item[data-filename="holiday.jpg"]')
    expect(entry).to_have_count(1)
    with page.expect_download() as export_info:
        page.locator("#history-export").click()
    exported = json.dumps(json.loads(Path(export_info.value.path()).read_text()))
    assert "holiday.jpg" in exported
    entry.locator("button.history-delete").click()
    expect(entry).to_have_count(0)


@pytest.mark.slow
def test_a_bad_file_shows_the_services_message(page: Page, tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not an image")
    page.set_input_files("#file-input", str(bad))
    card = page.locator('.result-card[data-filename="notes.jpg"]')
    expect(card.locator(".error")).to_contain_text("not a recognised image", timeout=30_000)
