"""Browser tests: Debian's Chromium, driven by Playwright, against the real app served by
``streamlit run`` in a subprocess, talking to wire-faithful test servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
import yaml
from playwright.sync_api import Browser, Page, sync_playwright

from tests.servers.llama_server import free_port

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


class StreamlitApp:
    """``streamlit run app.py`` with its own config.yaml, on a free port."""

    def __init__(self, config: str, tmp_path: Path) -> None:
        self.config_path = tmp_path / "config.yaml"
        data = yaml.safe_load(config) or {}
        self.history_db = tmp_path / "history.sqlite3"  # each test's history of its own
        data.setdefault("app", {})["history_db"] = str(self.history_db)
        self.config_path.write_text(yaml.safe_dump(data))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PV_STUDIO_CONFIG": str(self.config_path)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port",
             str(self.port), "--server.headless", "true", "--browser.gatherUsageStats",
             "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/_stcore/health", timeout=1).text == "ok":
                    return
            except requests.ConnectionError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("streamlit did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


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
def serve_app(tmp_path: Path) -> Iterator[Callable[[str], StreamlitApp]]:
    """``serve_app(config_yaml)`` starts the app; stopped after the test."""
    apps: list[StreamlitApp] = []

    def start(config: str) -> StreamlitApp:
        app = StreamlitApp(config, tmp_path)
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


def open_app(page: Page, app: StreamlitApp) -> Page:
    page.goto(app.url)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.wait_for_selector("text=Generate", timeout=30_000)
    return page


def answer_text(page: Page) -> str:
    locator = page.locator(".st-key-answer")
    return locator.inner_text() if locator.count() else ""
