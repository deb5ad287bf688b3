"""Context windows and the model lifecycle in Chromium: the warning before a run, the mark of
a prompt the server cut, the model's state in the status line, and a pull with progress."""

from __future__ import annotations

import time
from collections.abc import Callable

from playwright.sync_api import Page

from tests.browser.conftest import IDLE, answer_text, open_app
from tests.servers.ollama import FakeOllama, Script
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[[str], AppServer]
ANSWER = Script(tokens=["Install", " 12", " panels", "."])


def ollama_config(url: str) -> str:
    return (f"llm:\n  backend: ollama\n  host: {url}\n  model: llama3.1:8b\n"
            "app:\n  fallback_to_embedded: false\n")


def sidebar_text(page: Page) -> str:
    return page.locator("[data-testid='stSidebar']").inner_text()


def test_the_window_warning_comes_before_the_run_and_the_cut_is_marked_after(
        page: Page, serve_app: ServeApp) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 2048}, script=ANSWER) as server:
        open_app(page, serve_app(ollama_config(server.url)))
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=The context window is too small.", timeout=20_000)
        assert "2,048-token window (the most it was trained for)" in page.inner_text("body")
        assert server.chat_requests == []
        page.get_by_role("button", name="Run anyway").click()
        page.wait_for_selector("text=Prompt truncated by the server.", timeout=20_000)
        page.wait_for_selector(IDLE)
        assert "Install 12 panels." in answer_text(page)
        assert page.get_by_text("The context window is too small.").count() == 0
        prompt_metric = page.locator("[data-testid='stMetric']", has_text="Prompt tokens")
        assert "(cut)" in prompt_metric.inner_text()
        assert len(server.cuts) == 1


def test_the_status_line_says_loaded_or_cold_and_partly_on_cpu(page: Page,
                                                              serve_app: ServeApp) -> None:
    with FakeOllama(version="0.12.3", vram_fraction=0.5, script=ANSWER) as server:
        open_app(page, serve_app(ollama_config(server.url)))
        status = sidebar_text(page)
        assert "v0.12.3" in status and "model not loaded: the next run starts cold" in status
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Time to first token", timeout=20_000)
        page.wait_for_selector(IDLE)
        status = sidebar_text(page)  # no Refresh: the run's end has the state asked again
        assert "model loaded (8,192-token window)" in status
        assert "partly on CPU (50%)" in status


def test_a_missing_model_is_pulled_with_progress_and_joins_the_list(
        page: Page, serve_app: ServeApp) -> None:
    with FakeOllama(models=["mistral:7b"], pull_delay=0.25,
                    pullable={"llama3.1:8b": [4_000_000_000, 1_000_000]}) as server:
        open_app(page, serve_app(ollama_config(server.url)))
        page.wait_for_selector("text=llama3.1:8b is not on the server.")
        page.get_by_role("button", name="⬇ Pull llama3.1:8b").click()
        bar = page.locator("[data-testid='stSidebar'] [data-testid='stProgress']")
        bar.wait_for(timeout=10_000)
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "llama3.1:8b" not in server.models:
            if bar.count():
                seen.add(bar.inner_text())
            time.sleep(0.1)
        assert any("GB of 4.0 GB" in text and "%" in text for text in seen), seen
        page.wait_for_function(  # the pull's end reruns the app: the list is fetched again
            "document.querySelector('[data-testid=stSidebar]').innerText"
            ".includes('Reachable · 2 models')", timeout=20_000)
        page.wait_for_selector(IDLE)
        assert "not on the server" not in sidebar_text(page)
        assert page.locator("[data-testid='stSidebar'] [data-testid='stProgress']").count() == 0
        model = page.get_by_role("combobox", name="Model")
        assert model.input_value() == "llama3.1:8b"
        assert server.pulls == ["llama3.1:8b"]


def test_a_pull_can_be_cancelled_and_its_errors_are_shown(page: Page,
                                                          serve_app: ServeApp) -> None:
    with FakeOllama(models=["mistral:7b"], pull_delay=0.5,
                    pullable={"llama3.1:8b": [4_000_000_000]}) as server:
        open_app(page, serve_app(ollama_config(server.url)))
        page.get_by_role("button", name="⬇ Pull llama3.1:8b").click()
        page.get_by_role("button", name="Cancel pull").click(timeout=10_000)
        page.wait_for_selector("text=Pull of llama3.1:8b cancelled.", timeout=10_000)
        deadline = time.monotonic() + 5
        while server.pull_cancels == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.pull_cancels == 1 and "llama3.1:8b" not in server.models

        # A name the registry does not know: Ollama's own error line, under HTTP 200.
        model = page.get_by_role("combobox", name="Model")
        model.click()
        model.fill("no-such-model:1b")
        model.press("Enter")
        page.get_by_role("button", name="⬇ Pull no-such-model:1b").click(timeout=10_000)
        page.wait_for_selector("text=pull model manifest: file does not exist",
                               timeout=10_000)
        assert "Traceback" not in page.inner_text("body")
