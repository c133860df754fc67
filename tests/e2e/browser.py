"""Debian's chromium driven by Playwright, for the journeys through the web UI in real processes.

Screenshots go to the test's tmp folder, or to docs/screenshots/ when SHOUMI_UPDATE_SCREENSHOTS=1
(how the README's pictures are refreshed: see docs/screenshots/README.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def browser() -> Iterator["playwright_api.Browser"]:
    """One chromium for a module's journeys (each journey opens its own contexts: one per person)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium, as .ci/run does)")
    with playwright_api.sync_playwright() as p:
        found = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield found
        finally:
            found.close()


def person(browser: "playwright_api.Browser", *, lang: str = "zh-CN") -> "playwright_api.Page":
    """A fresh browser profile (its own cookies) showing pages in the given locale."""
    context = browser.new_context(locale=lang, viewport={"width": 1360, "height": 900},
                                  extra_http_headers={"Accept-Language": lang})
    context.set_default_timeout(15_000)
    return context.new_page()


def screenshot(page: "playwright_api.Page", name: str, tmp_path: Path) -> Path:
    """Saves a full-page screenshot; into docs/screenshots/ when asked to refresh the README's."""
    folder = SCREENSHOTS if os.environ.get("SHOUMI_UPDATE_SCREENSHOTS") == "1" else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
