"""Headless Chromium for the UI tests: Debian's package driven by Playwright's own driver (never
a downloaded browser: scripts/setup.sh installs the `chromium` package), and numbered
screenshots of each step in the test's tmp_path and in artifacts/browser/ for CI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "browser"
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1400, "height": 900}


@contextmanager
def chromium() -> Iterator[Any]:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/setup.sh"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Shots:
    """Numbered screenshots of one test, in its tmp_path and in artifacts/browser/ for CI."""

    def __init__(self, page: Any, folder: Path, prefix: str) -> None:
        self.page, self.folder, self.prefix, self.count = page, folder, prefix, 0

    def __call__(self, step: str) -> Path:
        self.count += 1
        name = f"{self.prefix}-{self.count:02d}-{step}.png"
        path = self.folder / name
        self.page.screenshot(path=str(path))
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, ARTIFACTS / name)
        return path


def skip_newsletter(page: Any, timeout_ms: float = 20_000) -> None:
    """A new instance's webserver greets the first visit with a newsletter dialog, at a moment
    of its own and possibly on top of another dialog: skipped by an event, not a pointer click,
    whenever it shows; waited for up to `timeout_ms` here (0: not waited for)."""
    skip = page.get_by_role("button", name="Skip")
    page.add_locator_handler(skip, lambda: skip.dispatch_event("click"))
    if not timeout_ms:
        return
    try:
        skip.wait_for(timeout=timeout_ms)
        skip.dispatch_event("click")
    except PlaywrightTimeout:
        pass
