"""A stopped Playground run shows up on the History page with its partial answer."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Page

from studio.store import RunStore
from tests.browser.conftest import IDLE, open_app
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer

ANSWER = "## RECOMMENDATION\n\n" + "".join(f"* Step {i}: 53.76 kWh a day.\n" for i in range(60))


def test_stopped_run_is_in_the_history_with_its_partial_answer(
        page: Page, serve_app: Callable[[str], AppServer]) -> None:
    with FakeOllama(script=Script(tokens=tokenize(ANSWER), delay=0.05)) as server:
        app = serve_app(f"llm:\n  backend: ollama\n  host: {server.url}\n  model: llama3.1:8b\n")
        open_app(page, app)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('Step 4')",
            timeout=20_000)
        page.get_by_role("button", name="Stop").click()
        page.wait_for_selector("text=Stopped. The partial answer above is kept.",
                               timeout=10_000)
    time.sleep(1)  # the recorder's last write
    (stored,) = RunStore(app.history_db).list_runs()
    assert stored.status == "stopped" and "Step 4" in stored.text

    page.goto(f"{app.url}/history")
    page.wait_for_selector("text=Run history", timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.get_by_role("combobox", name="Open runs").click()
    page.get_by_role("option").first.click()
    page.keyboard.press("Escape")
    page.wait_for_selector(".st-key-history_answer", timeout=10_000)
    answer = page.locator(".st-key-history_answer").inner_text()
    assert "Step 4" in answer and "Step 59" not in answer
    assert page.get_by_text("Stopped").count() >= 1
