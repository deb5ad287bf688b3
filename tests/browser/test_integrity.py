"""Data integrity and hostile input in Chromium: a batch watched from a second tab, a long
history, a run's preset, formula cells in CSV downloads, credentials in a host URL."""

from __future__ import annotations

import csv
import io
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page

from backends.sampling import Sampling
from backends.status import Status
from studio.pv.library import load_locations
from studio.pv.location import COLUMNS
from studio.pv.prompt import build_user_prompt
from studio.records.store import RunStore
from studio.runs.request import ANSWERED, RunRequest
from tests.browser.conftest import IDLE, download, open_page, progress_text, wait_for
from tests.servers.latency import LatencyServer
from tests.servers.ollama import FakeOllama
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[..., AppServer]
LOCATIONS = load_locations()
HOSTILE = ['=HYPERLINK("http://evil.example","click me")', "+cmd|' /C calc'!A0", "-2+3",
           "@SUM(1+1)"]
SECRET = "S3cretPW"


@pytest.fixture
def latency_server() -> Iterator[LatencyServer]:
    with LatencyServer(latency=0.6, cap=2) as server:
        yield server


def vllm_config(url: str) -> str:
    return f"llm:\n  backend: vllm\n  host: {url}\n  model: smollm2\n"





def field(page: Page, label: str) -> Locator:
    """The input or text area a widget label names (not its help button)."""
    return page.locator(f"input[aria-label='{label}'], textarea[aria-label='{label}']")



def test_a_batch_left_running_is_watched_and_stopped_from_another_tab_never_rerun(
        page: Page, serve_app: ServeApp, latency_server: LatencyServer) -> None:
    app = serve_app(vllm_config(latency_server.url))
    open_page(page, app, "batch", "Run batch")
    concurrency = field(page, "Concurrency")
    concurrency.fill("2")
    concurrency.press("Enter")
    page.wait_for_selector(IDLE)
    page.get_by_role("button", name="Run batch").click()
    wait_for(lambda: "2 done" in progress_text(page) or "3 done" in progress_text(page))
    page.close()  # tab A goes; its batch does not

    browser = page.context.browser
    assert browser is not None  # a page of a launched browser, not of a persistent context
    other = browser.new_page()
    open_page(other, app, "batch", "Run batch")
    other.wait_for_selector("text=Running: #1", timeout=10_000)
    other.get_by_text("Resume an earlier batch", exact=True).click()
    assert other.get_by_text("No earlier batches to resume.").count() == 1
    other.get_by_role("button", name="Watch").click()
    other.wait_for_selector("[data-testid='stProgress']", timeout=10_000)
    assert "running" in progress_text(other)
    other.get_by_role("button", name="Stop").click()
    other.wait_for_selector("text=Stopped: finished rows are kept", timeout=15_000)

    store = RunStore(app.history_db)
    (summary,) = store.group_summaries("batch")
    assert not summary.running and 0 < summary.done < 30
    finished = {run.position for run in store.group_runs(summary.group.id)
                if run.status in ANSWERED}
    asked_before = Counter(latency_server.requests)
    other.get_by_text("Resume an earlier batch", exact=True).click()
    other.get_by_role("button", name="Resume").click()
    wait_for(lambda: "30 done" in progress_text(other), timeout=60)
    other.close()
    answered = Counter(run.position for run in store.group_runs(summary.group.id)
                       if run.status in ANSWERED)
    assert sorted(answered) == list(range(30)) and set(answered.values()) == {1}
    # A row finished before the Stop is never asked again (a row stopped in flight is).
    for position in finished:
        name = LOCATIONS[position].name
        assert latency_server.requests[name] == asked_before[name] == 1


def test_history_pages_opens_any_run_and_exports_every_run_safely(
        page: Page, serve_app: ServeApp, tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    store = RunStore(db)
    for index in range(600):
        answer = HOSTILE[index % len(HOSTILE)] if index < 8 else f"Answer number {index}."
        request = RunRequest(backend="ollama", host="http://localhost:11434",
                             model="llama3.1:8b", system="sys", prompt=f"prompt {index}",
                             sampling=Sampling(max_tokens=100), preset="San Diego, CA")
        store.finish_run(store.start_run(request, "playground"), answer, Status.FINISHED)
    app = serve_app("llm:\n  backend: embedded\n", history_db=db)
    open_page(page, app, "history", "Run history")
    page.wait_for_selector("text=Runs 1–100 of 600, newest first.")
    page_box = field(page, "Page (of 6)")
    page_box.fill("6")
    page_box.press("Enter")
    page.wait_for_selector("text=Runs 501–600 of 600, newest first.", timeout=10_000)
    by_id = field(page, "Open run by id")
    by_id.fill("1")
    by_id.press("Enter")
    page.wait_for_selector(".st-key-history_answer", timeout=10_000)
    assert HOSTILE[0] in page.locator(".st-key-history_answer").inner_text()

    name, content = download(page, "⬇ Export CSV (600 runs)")
    assert name == "pv-runs.csv"
    rows = list(csv.DictReader(io.StringIO(content)))
    assert len(rows) == 600
    hostile_cells = [row["answer"] for row in rows if int(row["id"]) <= 8]
    assert sorted(hostile_cells) == sorted("'" + text for text in HOSTILE * 2)
    _, exported = download(page, "⬇ Export JSON (600 runs)")
    assert exported.count('"user_prompt"') == 600


def test_a_run_keeps_the_preset_its_prompt_came_from(
        page: Page, serve_app: ServeApp, tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    store = RunStore(db)
    row = replace(LOCATIONS[5], name="Loc 499")  # a location from an uploaded CSV
    with FakeOllama() as ollama:
        request = RunRequest(backend="ollama", host=ollama.url, model="llama3.1:8b",
                             system="You are a PV analyst.", prompt=build_user_prompt(row),
                             sampling=Sampling(max_tokens=256), preset="Loc 499")
        store.finish_run(store.start_run(request, "batch", position=498), "Earlier.",
                         Status.FINISHED)
        config = f"llm:\n  backend: ollama\n  host: {ollama.url}\n  model: llama3.1:8b\n"
        app = serve_app(config, history_db=db)
        open_page(page, app, "history", "Run history")
        field(page, "Open run by id").fill("1")
        field(page, "Open run by id").press("Enter")
        page.get_by_role("button", name="Open in Playground").click()
        page.wait_for_selector("text=PV Playground", timeout=20_000)
        page.wait_for_selector(IDLE)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Stop reason", timeout=20_000)
        page.wait_for_selector(IDLE)
        name, _ = download(page, "⬇ Markdown")
        assert name.startswith("Loc-499-")
        newest = store.list_runs(limit=1)[0]
        assert (newest.id, newest.preset, newest.prompt) == (2, "Loc 499", request.prompt)

        user = field(page, "User prompt")
        user.fill(request.prompt + "\nAlso: should I add a battery?")
        field(page, "System prompt").click()  # the edit is taken when the box is left
        page.wait_for_selector(IDLE)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function("document.querySelectorAll('[data-testid=stMetric]').length"
                               " > 0", timeout=20_000)
        wait_for(lambda: len(store.list_runs()) == 3 and store.list_runs()[0].status
                 == Status.FINISHED)
    newest = store.list_runs(limit=1)[0]
    assert newest.preset == "custom"
    assert {run.preset for run in store.list_runs()} == {"Loc 499", "custom"}


def test_uploaded_names_that_look_like_formulas_are_neutralised_in_the_csv(
        page: Page, serve_app: ServeApp, latency_server: LatencyServer,
        tmp_path: Path) -> None:
    upload = tmp_path / "hostile.csv"
    rows = [{**asdict(LOCATIONS[index]), "name": name} for index, name in enumerate(HOSTILE)]
    with upload.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    app = serve_app(vllm_config(latency_server.url))
    open_page(page, app, "batch", "Run batch")
    page.get_by_text("Upload a CSV").click()
    page.locator("[data-testid='stFileUploader']").filter(has_text="Scenarios CSV") \
        .locator("input[type='file']").set_input_files(str(upload))
    page.wait_for_selector("text=4 scenario(s) ready.", timeout=15_000)
    page.get_by_role("button", name="Run batch").click()
    wait_for(lambda: "4 done" in progress_text(page))
    page.wait_for_selector(IDLE)
    _, content = download(page, "⬇ Table (CSV)")
    cells = [row["location"] for row in csv.DictReader(io.StringIO(content))]
    assert cells == ["'" + name for name in HOSTILE]


def test_credentials_in_a_host_never_reach_the_database_or_the_page(
        page: Page, serve_app: ServeApp, latency_server: LatencyServer) -> None:
    app = serve_app(vllm_config(latency_server.url))
    open_page(page, app, "batch", "Run batch")
    host = field(page, "Host")
    host.fill(latency_server.url.replace("http://", f"http://analyst:{SECRET}@"))
    host.press("Enter")
    page.wait_for_selector("text=Reachable", timeout=15_000)
    page.get_by_role("button", name="Run batch").click()
    wait_for(lambda: "done" in progress_text(page) and "0 done" not in progress_text(page))
    page.get_by_role("button", name="Stop").click()
    page.wait_for_selector("text=Stopped: finished rows are kept", timeout=15_000)
    assert SECRET not in page.locator("[data-testid='stMain']").inner_text()
    time.sleep(1)  # the recorders' last writes
    stored = b"".join(path.read_bytes() for path in app.history_db.parent.glob(
        f"{app.history_db.name}*"))
    assert SECRET.encode() not in stored and b"analyst:" not in stored
    (summary,) = RunStore(app.history_db).group_summaries("batch")
    assert latency_server.url in summary.group.spec  # the host, without its credentials

    open_page(page, app, "history", "Run history")
    assert SECRET not in page.locator("[data-testid='stMain']").inner_text()
    _, content = download(page, re.compile("Export CSV"))
    assert SECRET not in content and latency_server.url in content
