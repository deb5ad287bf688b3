"""The Compare page in Chromium: a streaming Ollama pane and a one-piece vLLM pane at once."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import IDLE, download
from tests.conftest import wait_until
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import UNAUTHORIZED, FakeVLLM, completion

ServeApp = Callable[[str], AppServer]

# 40 tokens, 0.08 s apart: about 3.1 s of streaming, ending on a marker. The vLLM pane
# answers whole after 2.5 s. Run one after the other they would take 5.6 s.
OLLAMA_ANSWER = "## OLLAMA PANE\n\n" + " ".join(f"word{i}" for i in range(36)) + " OLLAMA-END."
TOKEN_DELAY_S = 0.08
OLLAMA_TIME_S = 39 * TOKEN_DELAY_S
VLLM_ANSWER = "## VLLM PANE\n\nInstall **31 panels** within the $15,000 budget. VLLM-END."
VLLM_DELAY_S = 2.5
# Click -> the rerun starts the comparison (0.2-0.5 s measured, more on a loaded machine);
# last token -> final repaint -> this test's poll sees it.
UI_MARGIN_S = 1.0


def config(ollama_url: str, vllm_url: str) -> str:
    return (f"llm:\n  backend: ollama\n  host: {ollama_url}\n  model: llama3.1:8b\n"
            f"backends:\n  vllm:\n    host: {vllm_url}\n    model: smollm2\n"
            "app:\n  fallback_to_embedded: false\n")


@pytest.fixture
def ollama_server() -> Iterator[FakeOllama]:
    tokens = tokenize(OLLAMA_ANSWER)
    assert len(tokens) == 40
    with FakeOllama(script=Script(tokens=tokens, delay=TOKEN_DELAY_S)) as server:
        yield server


def open_compare(page: Page, app: AppServer) -> None:
    page.goto(f"{app.url}/compare")
    page.wait_for_selector("text=Compare backends", timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)


def pane(page: Page, number: int) -> Locator:
    """The bordered settings box of pane ``number`` (1-based)."""
    others = [f"Pane {n}" for n in range(1, 5) if n != number]
    boxes = page.locator("[data-testid='stMain'] [data-testid='stVerticalBlock']").filter(
        has=page.get_by_text(f"Pane {number}", exact=True))
    for other in others:
        boxes = boxes.filter(has_not=page.get_by_text(other, exact=True))
    return boxes.last


def pick_backend(page: Page, number: int, label: str) -> None:
    backend = pane(page, number).get_by_role("combobox", name="Backend")
    if backend.input_value() != label:
        backend.click()
        page.get_by_role("option", name=label, exact=True).click()
    expect(pane(page, number).get_by_role("combobox", name="Backend")).to_have_value(label)


def set_up_panes(page: Page, hosts: tuple[str, str]) -> None:
    """Pane 1 on Ollama (the sidebar's backend, its default), pane 2 switched to vLLM."""
    expect(pane(page, 1).get_by_role("combobox", name="Backend")).to_have_value("Ollama")
    pick_backend(page, 1, "Ollama")
    pick_backend(page, 2, "vLLM")
    # Each pane reached its server: host from config.yaml, the served model picked.
    for number, host, model in ((1, hosts[0], "llama3.1:8b"), (2, hosts[1], "smollm2")):
        box = pane(page, number)
        expect(box.get_by_role("textbox", name="Host")).to_have_value(host, timeout=15_000)
        expect(box.get_by_role("combobox", name="Model")).to_have_value(model, timeout=15_000)
        expect(box.get_by_text("Reachable", exact=False)).to_be_visible(timeout=15_000)
    page.wait_for_selector(IDLE, timeout=30_000)


def answer(page: Page, index: int) -> str:
    locator = page.locator(f".st-key-pane_answer_{index}")
    return locator.inner_text() if locator.count() else ""



def test_both_answers_side_by_side_in_the_slowest_panes_time(
        page: Page, serve_app: ServeApp, ollama_server: FakeOllama) -> None:
    with FakeVLLM(200, completion(VLLM_ANSWER, completion_tokens=17),
                  delay=VLLM_DELAY_S) as vllm:
        open_compare(page, serve_app(config(ollama_server.url, vllm.url)))
        set_up_panes(page, (ollama_server.url, vllm.url))
        clicked = time.monotonic()
        page.get_by_role("button", name="Compare", exact=True).click()
        seen: dict[int, float] = {}
        vllm_partial: set[str] = set()
        deadline = clicked + 20
        requested: dict[str, float] = {}  # when each server got its request, as polled
        while len(seen) < 2 and time.monotonic() < deadline:
            now = time.monotonic()
            if ollama_server.chat_requests:
                requested.setdefault("ollama", now)
            if vllm.chat_calls:
                requested.setdefault("vllm", now)
            if 0 not in seen and "OLLAMA-END" in answer(page, 0):
                seen[0] = now
            current = answer(page, 1).strip()
            if 1 not in seen and "VLLM-END" in current:
                seen[1] = now
            elif current:
                vllm_partial.add(current)
            time.sleep(0.02)
        assert len(seen) == 2, (f"answers seen: {seen}; pane 1: {answer(page, 0)[:200]!r}; "
                                f"Ollama chats: {len(ollama_server.chat_requests)}")
        both_visible = max(seen.values()) - clicked
        page.wait_for_selector("text=Wall time of the last round", timeout=20_000)
        page.wait_for_selector(IDLE, timeout=20_000)
        assert len(ollama_server.chat_requests) == 1 and vllm.chat_calls == 1

    # Each answer in its own column, next to each other.
    first, second = answer(page, 0), answer(page, 1)
    assert "OLLAMA-END" in first and "VLLM" not in first
    assert "VLLM-END" in second and "OLLAMA" not in second
    assert "$15,000 budget" in second  # a dollar amount, not LaTeX
    assert not any("VLLM-END" not in s and "VLLM PANE" in s for s in vllm_partial), \
        "the one-piece answer was shown in parts"
    left = page.locator(".st-key-pane_answer_0").bounding_box()
    right = page.locator(".st-key-pane_answer_1").bounding_box()
    assert left is not None and right is not None
    assert left["x"] + left["width"] <= right["x"] + 1
    assert abs(left["y"] - right["y"]) < 5

    # The page's own figures: the round took the slowest pane's time, not the sum.
    caption = page.get_by_text("Wall time of the last round").inner_text()
    match = re.search(r"Wall time of the last round: ([\d.]+) s \(slowest pane ([\d.]+) s\)",
                      caption)
    assert match, caption
    wall, slowest = float(match.group(1)), float(match.group(2))
    assert slowest >= max(OLLAMA_TIME_S, VLLM_DELAY_S)
    assert wall < 1.2 * slowest, caption
    assert wall < OLLAMA_TIME_S + VLLM_DELAY_S
    # And as the analyst waits for it: click to both answers on screen.
    assert both_visible < 1.2 * slowest + UI_MARGIN_S, (both_visible, slowest)
    assert both_visible < OLLAMA_TIME_S + VLLM_DELAY_S
    # Both servers were asked together, not one after the other.
    assert abs(requested["ollama"] - requested["vllm"]) < 0.5, requested


def test_stop_cancels_both_server_connections(page: Page, serve_app: ServeApp) -> None:
    tokens = tokenize(" ".join(f"word{i}" for i in range(300)))
    with FakeOllama(script=Script(tokens=tokens, delay=0.1)) as ollama, \
            FakeVLLM(200, completion(VLLM_ANSWER), delay=5) as vllm:
        open_compare(page, serve_app(config(ollama.url, vllm.url)))
        set_up_panes(page, (ollama.url, vllm.url))
        page.get_by_role("button", name="Compare", exact=True).click()
        assert wait_until(lambda: "word3" in answer(page, 0) and vllm.chat_calls == 1, 15,
                          poll_s=0.02), \
            "the comparison did not start on both servers"
        assert not ollama.client_closed.is_set() and vllm.hangups == 0
        clicked = time.monotonic()
        page.get_by_role("button", name="Stop all", exact=True).click()
        assert ollama.client_closed.wait(5), "Ollama never saw the connection close"
        assert ollama.hangups[0] - clicked < 3
        assert wait_until(lambda: vllm.hangups >= 1, 5), "vLLM never saw the connection close"
        assert time.monotonic() - clicked < 5  # vLLM was still in its 5 s "generation"
        page.wait_for_selector("text=Wall time of the last round", timeout=15_000)
        page.wait_for_selector(IDLE, timeout=15_000)
        caption = page.get_by_text("Wall time of the last round").inner_text()
        assert "stopped" in caption
        # The streamed pane keeps its partial text; the one-piece pane has none.
        partial = answer(page, 0)
        assert "word3" in partial and "word299" not in partial
        assert "VLLM-END" not in answer(page, 1)
        assert page.get_by_text(re.compile(r"^Stopped · ")).count() == 2
        assert len(ollama.chat_requests) == 1 and vllm.chat_calls == 1



def set_repeats(page: Page, repeats: int) -> None:
    box = page.locator("input[aria-label='Repeat']")
    box.fill(str(repeats))
    box.press("Enter")
    page.wait_for_selector(IDLE, timeout=30_000)


def test_a_pane_that_only_thought_is_counted_apart_and_the_report_covers_every_round(
        page: Page, serve_app: ServeApp, ollama_server: FakeOllama) -> None:
    """A thinking model spent all its tokens thinking (no answer, cut at max tokens): the
    table says so instead of 'measured', its figures stay empty; the report's wall time is
    the whole comparison's, both rounds."""
    body = completion("", finish_reason="length", completion_tokens=150)
    body["choices"][0]["message"].update(content=None,
                                         reasoning="Let me think about the panels. " * 30)
    with FakeVLLM(200, body, delay=0.5) as vllm:
        open_compare(page, serve_app(config(ollama_server.url, vllm.url)))
        set_up_panes(page, (ollama_server.url, vllm.url))
        set_repeats(page, 2)
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("text=Wall time of the last round", timeout=40_000)
        page.wait_for_selector(IDLE, timeout=20_000)
        assert vllm.chat_calls == 2
    caption = page.get_by_text("Wall time of the last round").inner_text()
    assert re.search(r"all rounds: [\d.]+ s over 2 rounds \([\d.]+ s, [\d.]+ s\)", caption)
    _, report = download(page, "⬇ Report (HTML)")
    header = re.search(r"<header>.*?</header>", report, re.DOTALL)
    assert header is not None
    walls = re.search(r"wall time ([\d.]+) s over 2 rounds \(([\d.]+) s, ([\d.]+) s\)",
                      header.group(0))
    assert walls, header.group(0)
    total, first, second = (float(value) for value in walls.groups())
    assert total >= first + second - 0.02 and total > max(first, second)
    rows = re.findall(r"<tr>(.*?)</tr>", report.split("<h2>Measurements</h2>")[1])
    ollama_row = next(row for row in rows if "Ollama" in row)
    vllm_row = next(row for row in rows if "vLLM" in row)
    assert "<td>2 measured</td>" in ollama_row
    assert "<td>0 measured · 2 hit max tokens before any answer</td>" in vllm_row
    assert "<td>–</td><td>–</td><td>–</td>" in vllm_row  # no time, no tokens/s


def test_one_pane_is_stopped_on_its_own_and_the_other_answers(
        page: Page, serve_app: ServeApp) -> None:
    tokens = tokenize(" ".join(f"word{i}" for i in range(300)))
    with FakeOllama(script=Script(tokens=tokens, delay=0.1)) as ollama, \
            FakeVLLM(200, completion(VLLM_ANSWER), delay=4) as vllm:
        open_compare(page, serve_app(config(ollama.url, vllm.url)))
        set_up_panes(page, (ollama.url, vllm.url))
        page.get_by_role("button", name="Compare", exact=True).click()
        assert wait_until(lambda: "word3" in answer(page, 0) and vllm.chat_calls == 1, 15,
                          poll_s=0.02)
        assert page.get_by_role("button", name="Stop all", exact=True).count() == 1
        page.get_by_role("button", name="Stop pane 1", exact=True).click()
        assert ollama.client_closed.wait(5), "Ollama never saw the connection close"
        assert vllm.hangups == 0  # the other pane goes on
        page.wait_for_selector("text=Wall time of the last round", timeout=15_000)
        page.wait_for_selector(IDLE, timeout=15_000)
        assert vllm.hangups == 0 and vllm.chat_calls == 1
    partial = answer(page, 0)
    assert "word3" in partial and "word299" not in partial
    assert "VLLM-END" in answer(page, 1)
    assert page.get_by_text(re.compile(r"^Stopped · ")).count() == 1
    assert page.get_by_text(re.compile(r"^Finished · ")).count() == 1
    assert page.get_by_role("button", name=re.compile("^Stop")).count() == 0


def test_a_failed_pane_shows_its_error_and_the_fix(page: Page, serve_app: ServeApp,
                                                   ollama_server: FakeOllama) -> None:
    with FakeVLLM(401, UNAUTHORIZED) as vllm:
        open_compare(page, serve_app(config(ollama_server.url, vllm.url)))
        set_up_panes(page, (ollama_server.url, vllm.url))
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("text=Wall time of the last round", timeout=30_000)
        page.wait_for_selector(IDLE, timeout=20_000)
    box = page.locator("[data-testid='stColumn']").filter(
        has=page.locator(".st-key-pane_answer_1")).locator("[data-testid='stAlert']")
    assert box.count() == 1
    text = box.inner_text()
    assert "refused the API key (HTTP 401: Unauthorized)" in text
    assert "Set the key in the environment variable named by backends.vllm.api_key_env" in text
    _, report = download(page, "⬇ Report (HTML)")
    assert "refused the API key" in report and "api_key_env" in report


def test_a_new_comparison_clears_the_window_warning_and_the_last_figures_at_once(
        page: Page, serve_app: ServeApp) -> None:
    """Run anyway starts the comparison: the warning and its buttons go at once, and a
    second comparison does not run under the first one's measurements."""
    tokens = tokenize(" ".join(f"word{i}" for i in range(60)))
    with FakeOllama(script=Script(tokens=tokens, delay=0.05),
                    trained_context={"llama3.1:8b": 2048}) as ollama, \
            FakeVLLM(200, completion(VLLM_ANSWER)) as vllm:
        open_compare(page, serve_app(config(ollama.url, vllm.url)))
        set_up_panes(page, (ollama.url, vllm.url))
        main = page.locator("[data-testid='stMain']")
        for attempt in (1, 2):
            page.get_by_role("button", name="Compare", exact=True).click()
            page.wait_for_selector("text=The context window is too small", timeout=20_000)
            page.wait_for_selector(IDLE, timeout=20_000)
            page.get_by_role("button", name="Run anyway").click()
            assert wait_until(lambda: len(ollama.chat_requests) == attempt  # noqa: B023
                              and "word3" in answer(page, 0), 15, poll_s=0.02)
            assert "word59" not in answer(page, 0)  # still streaming
            assert "The context window is too small" not in main.inner_text()
            assert page.get_by_role("button", name="Run anyway").count() == 0
            assert page.get_by_role("button", name="Cancel").count() == 0
            assert "Measurements" not in main.inner_text()
            assert page.get_by_role("button", name="⬇ Report (HTML)").count() == 0
            page.wait_for_selector("text=Wall time of the last round", timeout=20_000)
            page.wait_for_selector(IDLE, timeout=20_000)
