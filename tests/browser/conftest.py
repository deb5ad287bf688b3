"""Browser tests: Debian's Chromium, driven by Playwright, against the real app served by
``streamlit run`` in a subprocess, talking to wire-faithful test servers."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.conftest import wait_until
from tests.servers.streamlit_app import AppServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def serve_app() -> Iterator[Callable[..., AppServer]]:
    """``serve_app(config_yaml, **options)`` starts the app (options as ``AppServer``'s);
    stopped after the test."""
    apps: list[AppServer] = []

    def start(config: str, **options: Any) -> AppServer:
        app = AppServer("app.py", config, **options)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def open_app(page: Page, app: AppServer) -> Page:
    page.goto(app.url)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.wait_for_selector("text=Generate", timeout=30_000)
    return page


def answer_text(page: Page) -> str:
    locator = page.locator(".st-key-answer")
    return locator.inner_text() if locator.count() else ""


def open_page(page: Page, app: AppServer, path: str, marker: str) -> Page:
    """Open the app's page at ``path`` and wait for ``marker`` and an idle script."""
    page.goto(f"{app.url}/{path}")
    page.wait_for_selector(f"text={marker}", timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    return page


def progress_text(page: Page) -> str:
    bar = page.locator("[data-testid='stProgress']")
    return bar.inner_text() if bar.count() else ""


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    assert wait_until(condition, timeout, poll_s=0.05), "timed out"


def download(page: Page, label: str | re.Pattern[str]) -> tuple[str, str]:
    """Click a download button; (suggested file name, content). Only on an idle page: a
    rerun draws the button anew, and a click on the old one is lost."""
    for attempt in range(2):
        page.wait_for_selector(IDLE, timeout=30_000)
        time.sleep(0.3)
        try:
            with page.expect_download(timeout=20_000) as info:
                page.get_by_role("button", name=label).click()
        except PlaywrightTimeoutError:
            if attempt:
                raise
            continue  # a rerun drew the button anew under the click: click the new one
        got = info.value
        return got.suggested_filename, Path(got.path()).read_text(encoding="utf-8")
    raise AssertionError("not reached")
