"""The Evaluate page in Chromium: 30 locations on 3 choices (the real vLLM CPU server, the
embedded model and the test Ollama) run to the end through a Stop and a SIGKILL of the app,
each resumed, no cell answered twice; the scorecard, the matrix and the four downloads."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from studio.pv.library import load_locations
from tests.browser.conftest import IDLE, download, open_page, wait_for
from tests.servers import vllm_real
from tests.servers.latency import LatencyServer
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm_real import VLLMServer

ServeApp = Callable[..., AppServer]
pytestmark = pytest.mark.timeout(2700)

ROWS = len(load_locations())  # the 30 presets
CHOICES = 3
CELLS = ROWS * CHOICES
WINDOW = 4096  # --max-model-len: the PV prompts are ~2,900 SmolLM2 tokens
MAX_TOKENS = 16  # a short answer per cell: 90 of them on two CPU cores
ANSWERED = re.compile(r"(\d+) of (\d+) cells answered")


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[VLLMServer]:
    if (reason := vllm_real.not_ready_reason()) is not None:
        pytest.skip(f"real vLLM: {reason}")
    with VLLMServer(served_name="smollm2", api_key=None, max_model_len=WINDOW,
                    startup_timeout=900) as server:  # a busy machine starts it slowly
        yield server


@pytest.fixture(scope="module")
def ollama_server() -> Iterator[FakeOllama]:
    answer = "## Recommendation\n\nInstall **12 panels** (4.8 kW) for this household.\n"
    with FakeOllama(script=Script(tokens=tokenize(answer), delay=0.02)) as server:
        yield server


def config(vllm: VLLMServer, ollama: FakeOllama) -> str:
    return (f"llm:\n  backend: vllm\n  host: {vllm.url}\n  model: {vllm.served_name}\n"
            f"  max_tokens: {MAX_TOKENS}\n"
            f"backends:\n  ollama:\n    host: {ollama.url}\n    model: llama3.1:8b\n"
            "app:\n  fallback_to_embedded: false\n")


def answered(page: Page) -> int:
    """The header's 'n of 90 cells answered' (0 before it shows)."""
    text = page.locator("[data-testid='stMain']").inner_text()
    found = ANSWERED.search(text)
    return int(found.group(1)) if found else 0


def set_number(page: Page, label: str, value: int, nth: int = 0) -> None:
    box = page.locator(f"input[aria-label='{label}']").nth(nth)
    box.fill(str(value))
    box.press("Enter")
    page.wait_for_selector(IDLE, timeout=30_000)


def answers_by_position(db: Path) -> Counter[int]:
    """How many answered runs the history holds at each position of the evaluation."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT runs.position FROM runs JOIN groups ON runs.group_id = groups.id "
            "WHERE groups.kind = 'evaluation' AND runs.status IN ('finished', 'length', "
            "'repetition')").fetchall()
    return Counter(position for (position,) in rows)


@pytest.mark.vllm
def test_thirty_locations_on_three_choices_survive_stop_and_a_kill_and_export(
        page: Page, serve_app: ServeApp, vllm_server: VLLMServer,
        ollama_server: FakeOllama) -> None:
    started = time.monotonic()
    settings = config(vllm_server, ollama_server)
    app = serve_app(settings)
    open_page(page, app, "evaluate", "Start evaluation")
    set_number(page, "Choices", CHOICES)
    main = page.locator("[data-testid='stMain']")
    # The defaults of three choices: the sidebar's vLLM, then the embedded model, then Ollama;
    # each on its own server, at the same time.
    wait_for(lambda: "Choice 3 (Ollama at" in main.inner_text())
    text = main.inner_text()
    assert "Choice 1 (vLLM at" in text and "Choice 2 (Embedded" in text
    assert f"{CELLS} cells: {ROWS} locations on {CHOICES} choices." in text
    set_number(page, "Concurrency", 4, nth=0)  # vLLM batches requests

    page.get_by_role("button", name="Start evaluation").click()
    wait_for(lambda: answered(page) >= 35, timeout=240)
    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_selector("text=Stopped: the answered cells are kept", timeout=60_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    stopped_at = answered(page)
    assert stopped_at < CELLS
    assert max(answers_by_position(app.history_db).values()) == 1

    # Resume from Earlier evaluations; then the app dies (SIGKILL) while it runs.
    page.get_by_role("button", name="Resume").click()
    wait_for(lambda: answered(page) >= stopped_at + 4, timeout=240)
    app.kill()
    before_kill = answers_by_position(app.history_db)
    assert max(before_kill.values()) == 1 and sum(before_kill.values()) < CELLS

    restarted = serve_app(settings, history_db=app.history_db)
    open_page(page, restarted, "evaluate", "Start evaluation")
    page.wait_for_selector("text=Interrupted: #1", timeout=30_000)
    page.get_by_role("button", name="Resume").click()
    # The embedded model answers its 30 cells one at a time, on the app's CPU.
    page.wait_for_selector("text=· ended", timeout=1_200_000)
    page.wait_for_selector(IDLE, timeout=30_000)
    assert answered(page) == CELLS
    assert "Scorecard" in main.inner_text() and "Locations" in main.inner_text()
    assert page.locator("[data-testid='stDataFrame']").count() >= 2
    assert page.get_by_text("How the figures are defined").count() == 1

    # Every cell answered exactly once, whatever stopped or killed it before.
    by_position = answers_by_position(restarted.history_db)
    assert sorted(by_position) == list(range(CELLS))
    assert set(by_position.values()) == {1}

    name, cells = download(page, "⬇ Cells (CSV)")
    assert name.endswith(".csv")
    lines = [line for line in cells.splitlines() if line.strip()]
    assert len(lines) == CELLS + 1  # the header and a line per cell
    _, card = download(page, "⬇ Scorecard (CSV)")
    assert card.splitlines()[0].startswith("figure,")
    _, report = download(page, "⬇ Report (JSON)")
    data = json.loads(report)
    assert len(data["cells"]) == CELLS and len(data["scorecard"]["choices"]) == CHOICES
    assert all(cell["status"] in ("finished", "length", "repetition") for cell in data["cells"])
    _, html = download(page, "⬇ Report (HTML)")
    assert "Content-Security-Policy" in html and "<script" not in html.lower()
    print(f"evaluation browser test: {time.monotonic() - started:.0f} s, after the vLLM "
          f"server's start ({vllm_server.startup_s:.0f} s, once per module)")


def choice_box(page: Page, number: int) -> Locator:
    """The bordered settings box of choice ``number`` (1-based)."""
    boxes = page.locator("[data-testid='stMain'] [data-testid='stVerticalBlock']").filter(
        has=page.get_by_text(f"Choice {number}", exact=True))
    for other in range(1, 5):
        if other != number:
            boxes = boxes.filter(has_not=page.get_by_text(f"Choice {other}", exact=True))
    return boxes.last


def vllm_and_ollama(page: Page, app: AppServer) -> None:
    """The Evaluate page with choice 1 on the latency server (vLLM's API, in one piece) and
    choice 2 on the test Ollama."""
    open_page(page, app, "evaluate", "Start evaluation")
    page.get_by_text("Stream vLLM").click()  # the latency server answers whole
    page.wait_for_selector(IDLE, timeout=30_000)
    backend = choice_box(page, 2).get_by_role("combobox", name="Backend")
    backend.click()
    page.get_by_role("option", name="Ollama", exact=True).click()
    expect(choice_box(page, 2).get_by_text("Reachable", exact=False)).to_be_visible(
        timeout=15_000)
    page.wait_for_selector(IDLE, timeout=30_000)


def quick_config(latency: LatencyServer, ollama: FakeOllama) -> str:
    return (f"llm:\n  backend: vllm\n  host: {latency.url}\n  model: smollm2\n"
            f"backends:\n  ollama:\n    host: {ollama.url}\n    model: llama3.1:8b\n"
            "app:\n  fallback_to_embedded: false\n")


def test_a_new_evaluation_replaces_the_last_ones_figures_as_it_starts(
        page: Page, serve_app: ServeApp, ollama_server: FakeOllama) -> None:
    with LatencyServer(latency=0.3) as latency:
        app = serve_app(quick_config(latency, ollama_server))
        vllm_and_ollama(page, app)
        main = page.locator("[data-testid='stMain']")
        page.get_by_role("button", name="Start evaluation").click()
        page.wait_for_selector("text=· ended", timeout=120_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        assert "Evaluation #1" in main.inner_text()
        assert page.get_by_role("button", name="⬇ Cells (CSV)").count() == 1
        first = latency.total_requests()

        page.get_by_role("button", name="Start evaluation").click()
        wait_for(lambda: latency.total_requests() > first and "Evaluation #2" in
                 main.inner_text())
        text = main.inner_text()
        assert latency.total_requests() < 2 * first  # still running
        assert "Evaluation #1" not in text and "· ended" not in text
        assert "60 of 60 cells answered" not in text
        assert page.get_by_role("button", name="⬇ Cells (CSV)").count() == 0
        assert page.get_by_text("Open a cell").count() == 0
        assert page.get_by_text("Earlier evaluations").count() == 0
        page.wait_for_selector("text=· ended", timeout=120_000)
        page.wait_for_selector(IDLE, timeout=30_000)


def test_a_closed_tabs_evaluation_goes_on_and_is_watched_from_another_tab(
        page: Page, serve_app: ServeApp, ollama_server: FakeOllama) -> None:
    with LatencyServer(latency=0.5) as latency:
        app = serve_app(quick_config(latency, ollama_server))
        vllm_and_ollama(page, app)
        page.get_by_role("button", name="Start evaluation").click()
        wait_for(lambda: latency.total_requests() >= 2)
        page.close()  # tab A goes; its evaluation does not

        browser = page.context.browser
        assert browser is not None
        other = browser.new_page(viewport={"width": 1400, "height": 1000})
        open_page(other, app, "evaluate", "Start evaluation")
        other.wait_for_selector("text=Running: #1", timeout=10_000)
        seen = latency.total_requests()
        other.get_by_role("button", name="Watch").click()
        other.wait_for_selector("text=Evaluation #1", timeout=10_000)
        assert latency.total_requests() < 60  # still running, watched
        other.wait_for_selector("text=· ended", timeout=120_000)
        other.wait_for_selector(IDLE, timeout=30_000)
        assert "60 of 60 cells answered" in other.locator("[data-testid='stMain']").inner_text()
        assert latency.requests == Counter({name: 1 for name in latency.requests})
        assert len(latency.requests) == ROWS and seen >= 2
        other.close()
