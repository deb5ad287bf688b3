"""A stopped Playground run shows up on the History page with its partial answer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

from playwright.sync_api import Page

from backends.sampling import Sampling
from backends.status import Status
from studio.pv.library import load_locations
from studio.pv.prompt import build_user_prompt
from studio.records.store import STALE_AFTER_S, RunStore
from studio.runs.request import RunRequest
from tests.browser.conftest import IDLE, answer_text, download, open_app
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import FakeVLLM, completion

LOCATIONS = load_locations()
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


def test_open_in_playground_shows_the_reopened_run_not_the_last_one(
        page: Page, serve_app: Callable[..., AppServer]) -> None:
    """The Playground showed a vLLM answer (262 prompt tokens); a stored Ollama run of San
    Diego opened from History takes the panel: its own answer, figures and downloads, said
    to be reopened. The next Generate replaces it the moment it starts."""
    prompt = build_user_prompt(LOCATIONS[0])
    vllm_answer = "## VLLM ANSWER\n\nInstall **31 panels**. VLLM-END."
    with FakeOllama(script=Script(tokens=tokenize(ANSWER), delay=0.05)) as ollama, \
            FakeVLLM(200, completion(vllm_answer, prompt_tokens=262,
                                     completion_tokens=17)) as vllm:
        app = serve_app(f"llm:\n  backend: vllm\n  host: {vllm.url}\n  model: smollm2\n"
                        f"backends:\n  ollama:\n    host: {ollama.url}\n"
                        "    model: llama3.1:8b\napp:\n  fallback_to_embedded: false\n")
        store = RunStore(app.history_db)
        request = RunRequest(backend="ollama", host=ollama.url, model="llama3.1:8b",
                             system="You are a PV analyst.", prompt=prompt,
                             sampling=Sampling(max_tokens=512),
                             preset=LOCATIONS[0].name)
        stored_id = store.start_run(request, "playground")
        store.finish_run(stored_id, "## OLLAMA STORED\n\nInstall 12 panels. OLLAMA-END.",
                         Status.FINISHED, None, {"prompt_tokens": 2650, "output_tokens": 40,
                                          "total_time_s": 6.5, "context_window": 4096,
                                          "done_reason": "stop", "fragments": 40})
        open_app(page, app)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Prompt tokens", timeout=20_000)
        page.wait_for_selector(IDLE, timeout=20_000)
        assert "VLLM-END" in answer_text(page)

        # To History in the same session (the sidebar's link), where the Playground's run
        # is kept.
        page.locator("[data-testid='stSidebarNav'] a").filter(has_text="History").click()
        page.wait_for_selector("text=Run history", timeout=30_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        by_id = page.locator("input[aria-label='Open run by id']")
        by_id.fill(str(stored_id))
        by_id.press("Enter")
        page.wait_for_selector(".st-key-history_answer", timeout=10_000)
        page.get_by_role("button", name="Open in Playground").click()
        page.wait_for_selector("text=PV Playground", timeout=20_000)
        page.wait_for_selector(IDLE, timeout=20_000)

        shown = answer_text(page)
        assert "OLLAMA-END" in shown and "VLLM" not in shown
        origin = page.get_by_text("Reopened from History")
        assert origin.count() == 1 and f"run #{stored_id} of " in origin.inner_text()
        metrics = metric_values(page)
        assert metrics["Prompt tokens"] == "2,650" and metrics["Context window"] == "4,096"
        assert metrics["Total time"] == "6.50 s"
        assert "262" not in page.locator("[data-testid='stMain']").inner_text()
        name, content = download(page, "⬇ JSON")
        assert name.startswith("San-Diego-CA-llama3.1-8b")
        data = json.loads(content)
        assert data["backend"] == "ollama" and "OLLAMA-END" in data["answer"]
        assert data["statistics"]["prompt_tokens"] == 2650

        # Generate: the reopened run and its figures go at once, not when the new one ends.
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('Step 4')",
            timeout=20_000)
        main = page.locator("[data-testid='stMain']")
        assert "Reopened from History" not in main.inner_text()
        assert "OLLAMA-END" not in answer_text(page)
        assert page.locator("[data-testid='stMetric']").count() == 0
        assert page.get_by_role("button", name="⬇ JSON").count() == 0
        assert "Step 59" not in answer_text(page)  # checked while the new run streamed
        page.wait_for_selector("text=Prompt tokens", timeout=30_000)


def metric_values(page: Page) -> dict[str, str]:
    values = {}
    for metric in page.locator("[data-testid='stMetric']").all():
        label = metric.locator("[data-testid='stMetricLabel']").inner_text().strip()
        values[label] = metric.locator("[data-testid='stMetricValue']").inner_text().strip()
    return values
