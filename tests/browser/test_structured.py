"""A structured answer in Chromium: the test Ollama streams JSON that holds to the report's
schema, and the Playground draws it as the markdown report while it arrives: a partial report
(the sizing figures, no risks yet) before the run ends, then the whole report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import answer_text, open_app
from tests.servers.ollama import FakeOllama, Script
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[[str], AppServer]

REPORT = {
    "key_trends": "- Average daily consumption: 53.76 kWh.\n- Winter use is 1.3x summer use.",
    "offset_panels": 30, "offset_system_kw": 12.0, "ev_panels": None, "ev_system_kw": None,
    "budget_max_panels": 31,
    "sizing_notes": "A south-facing roof holds the **31 panels** the budget allows.",
    "annual_savings_usd": 6543.2, "break_even_years": 2.29, "roi_25y_pct": 990.0,
    "payback_notes": "The budget-constrained system pays back quickly.",
    "risks": "- Nighttime load needs the grid or a battery.\n- Cloudy winters lower output.",
}


@pytest.fixture
def json_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(version="0.12.3", script=Script(structured=REPORT, delay=0.04)) as server:
        yield server


def test_a_structured_answer_streams_into_the_report(page: Page, serve_app: ServeApp,
                                                     json_ollama: FakeOllama) -> None:
    config = f"llm:\n  backend: ollama\n  host: {json_ollama.url}\n  model: llama3.1:8b\n"
    open_app(page, serve_app(config))
    page.get_by_text("Structured (JSON schema)").click()
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Generate").click()
    partial_seen, raw_seen = False, False
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        text = answer_text(page)
        raw_seen = raw_seen or '{"' in text or '"key_trends"' in text
        if "30 panels" in text and "Risks and caveats" not in text:
            partial_seen = True  # the sizing figures drawn, the risks not yet arrived
        if "Cloudy winters" in text and "▌" not in text:
            break
        time.sleep(0.05)
    assert partial_seen, "no partial report was drawn before the run ended"
    assert not raw_seen, "the panel showed raw JSON while it streamed"
    text = answer_text(page)
    for part in ("Key trends and seasonal patterns", "Panels to offset 100%: 30 panels",
                 "Annual savings: $6,543.2", "Risks and caveats", "Cloudy winters"):
        assert part in text, (part, text)
    page.wait_for_selector("text=Structured answer: valid JSON of the report's schema.",
                           timeout=10_000)
    assert json_ollama.chat_requests[-1]["format"]["type"] == "object"
