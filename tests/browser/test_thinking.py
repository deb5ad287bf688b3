"""A reasoning model in Chromium: the thinking streams into its own panel before the answer
starts, never inside the answer, and folds once the answer comes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from playwright.sync_api import Page

from tests.browser.conftest import IDLE, answer_text, open_app
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[[str], AppServer]
QWEN = "qwen3:8b"
THOUGHT = ("First the daily load: 53.76 kWh. A 400 W panel in San Diego gives about "
           "1.7 kWh a day, so about 32 panels cover it. ") * 3
ANSWER = "## RECOMMENDATION\n\nInstall **32 panels** within the budget."


def test_thinking_streams_first_in_its_own_panel_then_folds(page: Page,
                                                            serve_app: ServeApp) -> None:
    gate = threading.Event()
    script = Script(tokens=tokenize(ANSWER), thinking=tokenize(THOUGHT), delay=0.02, gate=gate)
    with FakeOllama(models=[QWEN], version="0.18.0", script=script,
                    capabilities={QWEN: ["completion", "thinking"]}) as server:
        open_app(page, serve_app(f"llm:\n  backend: ollama\n  host: {server.url}\n"
                                 f"  model: {QWEN}\napp:\n  fallback_to_embedded: false\n"))
        page.get_by_role("button", name="Generate").click()
        while server.streams_started == 0:  # the server is sending: its first thinking line
            time.sleep(0.01)
        sent = time.monotonic()
        first = tokenize(THOUGHT)[0].strip()
        page.wait_for_selector("text=💭 Thinking…", timeout=5_000)
        page.wait_for_selector(f"text={first}", timeout=5_000)
        shown_after = time.monotonic() - sent
        assert shown_after < 1.0, f"the first thinking token took {shown_after:.2f} s to show"
        assert answer_text(page).strip() == ""  # no answer yet, and no thinking in its panel
        gate.set()  # the rest of the thinking, then the answer
        page.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('32 panels')",
            timeout=20_000)
        page.wait_for_selector(IDLE)
        page.wait_for_selector("text=Time to first thinking token", timeout=10_000)
        assert "First the daily load" not in answer_text(page)
        fold = page.locator("[data-testid='stExpander']", has_text="💭 Thinking")
        assert fold.count() == 1
        assert not fold.locator("details").first.evaluate("d => d.open")  # folded
        fold.locator("summary").first.click()
        assert "First the daily load" in fold.inner_text()
        assert page.get_by_text("💭 Thinking…").count() == 0  # the live panel is gone
