"""A stopped Playground run shows up on the History page with its partial answer."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from playwright.sync_api import Page

from studio.store import STALE_AFTER_S, RunStore
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


def test_a_run_of_a_killed_app_reads_interrupted_after_a_restart(
        page: Page, serve_app: Callable[..., AppServer]) -> None:
    """kill -9 the app mid-stream, start it again on the same history: the run is not
    'Running' (nothing of the dead process runs), at once, with its partial answer."""
    with FakeOllama(script=Script(tokens=tokenize(ANSWER), delay=0.05)) as server:
        config = f"llm:\n  backend: ollama\n  host: {server.url}\n  model: llama3.1:8b\n"
        app = serve_app(config)
        open_app(page, app)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('Step 4')",
            timeout=20_000)
        time.sleep(0.7)  # a progress save
        app.kill()
        restarted = serve_app(config, history_db=app.history_db)
        page.goto(f"{restarted.url}/history")
        page.wait_for_selector("text=Run history", timeout=30_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        table = page.locator("[data-testid='stDataFrame']").first
        table.wait_for(timeout=10_000)
        page.get_by_role("combobox", name="Open runs").click()
        page.get_by_role("option").first.click()
        page.keyboard.press("Escape")
        page.wait_for_selector(".st-key-history_answer", timeout=10_000)
        assert "Step 4" in page.locator(".st-key-history_answer").inner_text()
        assert page.get_by_text("Interrupted: the app stopped while this run was going").count()
    (stored,) = RunStore(app.history_db).list_runs()
    assert stored.status == "interrupted" and "Step 4" in stored.text
    # Read interrupted while its last save was still fresh: the dead owner told, not the
    # heartbeat's staleness.
    age = datetime.now(UTC) - datetime.fromisoformat(stored.updated_at)
    assert age.total_seconds() < STALE_AFTER_S
