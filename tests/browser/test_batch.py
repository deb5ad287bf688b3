"""The Batch page in Chromium: what is on screen while a new batch runs."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Page

from tests.browser.conftest import IDLE, progress_text, wait_for
from tests.servers.latency import Fail, LatencyServer
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[..., AppServer]




def test_a_new_batch_replaces_the_last_ones_figures_and_downloads_as_it_starts(
        page: Page, serve_app: ServeApp) -> None:
    """The last batch's summary (failures, wall time) and its CSV are gone while the next
    one runs; only its own progress is on the page."""
    with LatencyServer(latency=0.3, failures={"San Diego, CA": Fail(400)}) as server:
        app = serve_app(f"llm:\n  backend: vllm\n  host: {server.url}\n  model: smollm2\n")
        page.goto(f"{app.url}/batch")
        page.wait_for_selector("text=Run batch", timeout=30_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        page.get_by_role("button", name="Run batch").click()
        page.wait_for_selector("text=Wall time", timeout=60_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        assert "29 done · 1 failed" in progress_text(page)
        assert page.get_by_role("button", name="⬇ Table (CSV)").count() == 1
        first = server.total_requests()

        page.get_by_role("button", name="Run batch").click()
        wait_for(lambda: server.total_requests() > first
                 and re.search(r"\b[1-9]\d* running", progress_text(page)) is not None)
        assert "29 done" not in progress_text(page)  # this batch's progress, not the last's
        assert server.total_requests() < 2 * first  # still running
        main = page.locator("[data-testid='stMain']")
        assert page.locator("[data-testid='stMetric']").count() == 0
        assert "Failures" not in main.inner_text() and "Wall time" not in main.inner_text()
        assert page.get_by_role("button", name="⬇ Table (CSV)").count() == 0
        assert page.get_by_role("button", name="⬇ Answers (ZIP)").count() == 0
        assert page.get_by_text("Resume an earlier batch").count() == 0
        page.wait_for_selector("text=Wall time", timeout=60_000)
        page.wait_for_selector(IDLE, timeout=30_000)
