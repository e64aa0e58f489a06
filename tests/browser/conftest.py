"""Playwright driving Debian's Chromium against a live server of the platform.

Playwright's own browser download needs the network, so the tests launch ``/usr/bin/chromium``
(``apt-get install chromium``) headless. Every test gets a laptop-sized page; ``screenshot``
saves a page under ``TENANTML_SCREENSHOT_DIR`` (``var/test-artifacts/screenshots`` by default;
``docs/screenshots`` refreshes the committed ones).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import CHROMIUM
from tests.deployments.dashboard.conftest import fleet, staff_user  # noqa: F401  (the dashboard's fixtures)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LAPTOP = {"width": 1366, "height": 860}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def browser():
    """Chromium for one test module. Playwright's sync API runs an event loop in this thread
    while it lives, so it must not outlive the module (other tests start their own loops), and
    the ORM calls these tests make between page actions, synchronous ones, are allowed."""
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


@pytest.fixture(scope="session")
def screenshot_dir() -> Path:
    folder = Path(
        os.environ.get("TENANTML_SCREENSHOT_DIR") or REPO / "var" / "test-artifacts" / "screenshots"
    )
    if not folder.is_absolute():
        folder = REPO / folder
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def screenshot(screenshot_dir):
    def save(page, name: str) -> Path:
        path = screenshot_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
