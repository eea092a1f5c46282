"""Drive a report page in headless Chromium through Playwright: open it, mark images, export the review file.

Shared by the report's browser test and the end-to-end review -> apply -> undo test. Playwright's own browser
download is not used (it needs the network): the system Chromium runs it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """Return the path of a Chromium on PATH (Debian's package 'chromium'), or None."""
    return next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)


@contextmanager
def report_page(report: Path, browser: str) -> Iterator[Any]:
    """Open ``report`` in headless ``browser``; yield the Playwright page once its script is ready.

    Every console message and page error is collected in ``page.problems`` (a list of str).
    """
    from playwright.sync_api import sync_playwright  # the dev extra's dependency

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = chromium.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            problems: list[str] = []
            page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}"))
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.problems = problems
            page.goto(report.as_uri())
            page.wait_for_selector("body[data-review-ready=true]", state="attached", timeout=30_000)
            yield page
        finally:
            chromium.close()


def card_of(page: Any, file_name: str, within: str = "#grid") -> Any:
    """Return the card (in the grid by default) whose caption names ``file_name``."""
    return page.locator(f"{within} .card").filter(has=page.locator(".name", has_text=file_name)).first


def mark(page: Any, file_name: str, decision: str) -> None:
    """Mark the image ``file_name`` "keep" or "drop" with its button."""
    card_of(page, file_name).locator(f'button[data-mark="{decision}"]').click()


def export_review(page: Any, to: Path) -> dict[str, Any]:
    """Click "Export review", save the download at ``to`` and return its JSON."""
    with page.expect_download() as download:
        page.click("#export")
    download.value.save_as(to)
    return json.loads(to.read_text())
