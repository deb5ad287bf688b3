"""The Batch engine against real HTTP servers on 127.0.0.1 (tests/servers/latency.py).

Wall time follows ceil(rows / concurrency) x latency, requests in flight never exceed the
concurrency, passing failures are retried with backoff and lasting ones marked failed, Stop
cancels what is in flight, every row is recorded, and a batch killed mid-way (a separate
process, SIGKILL) resumes without asking the server again for the rows it had finished.
"""

from __future__ import annotations

import csv
import io
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    ModelNotFoundError,
    StreamError,
    TruncatedStreamError,
)
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.vllm_backend import VLLMBackend
from studio.pv.library import load_locations
from studio.pv.location import Location
from studio.records.store import RunStore, process_owner
from studio.runs.batch import (
    MAX_CONCURRENCY,
    OVER_WINDOW,
    RESUMABLE,
    Batch,
    BatchRow,
    BatchRunning,
    BatchSpec,
    LiveBatches,
    PrefixCacheUse,
    earlier_state,
    is_retryable,
    launch,
)
from studio.runs.request import ANSWERED
from studio.runs.runner import Recording
from tests.conftest import wait_until
from tests.servers.latency import HANG, Fail, LatencyServer
from tests.servers.ollama import FakeOllama, Script

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2"
SYSTEM = "You are a PV sizing analyst."
LOCATIONS = load_locations()
TOKENS = 200  # output tokens the latency server reports per answer


def make_spec(url: str, scenarios: list[Location], concurrency: int,
              model: str = MODEL) -> BatchSpec:
    return BatchSpec(scenarios=list(scenarios), backend="vllm", host=url, model=model,
                     system=SYSTEM, sampling=Sampling(max_tokens=256, temperature=0.2),
                     concurrency=concurrency)


def make_batch(server: LatencyServer, scenarios: list[Location], concurrency: int, *,
               model: str = MODEL, read_timeout: float = 10.0, **options: Any) -> Batch:
    spec = make_spec(server.url, scenarios, concurrency, model)
    return Batch(spec, build=lambda: VLLMBackend(server.url, model=model,
                                                 read_timeout=read_timeout), **options)


def run_to_end(batch: Batch, timeout: float = 30.0) -> Batch:
    assert batch.start().wait(timeout), "the batch did not finish"
    return batch



def by_name(batch: Batch) -> dict[str, BatchRow]:
    return {row.location.name: row for row in batch.rows}


# -- concurrency and wall time ----------------------------------------------------------------
LATENCY = 0.15


# c = 30 gets a longer latency: opening 30 connections on a loaded 2-core machine can take
# longer than 0.15 s, and the test checks that all 30 were at the server together.
@pytest.mark.parametrize(("concurrency", "latency"), [(1, LATENCY), (5, LATENCY), (30, 0.5)])
def test_wall_time_follows_the_concurrency(concurrency: int, latency: float) -> None:
    """30 scenarios, a server that takes ``latency`` per answer and could do 64 at once: the
    batch takes ceil(30 / c) rounds of it, never with more than c requests at the server."""
    with LatencyServer(latency=latency, cap=64) as server:
        batch = make_batch(server, LOCATIONS, concurrency)
        started = time.monotonic()
        run_to_end(batch)
        wall = time.monotonic() - started
    rounds = math.ceil(len(LOCATIONS) / concurrency)
    ideal = rounds * latency
    assert len(LOCATIONS) == 30
    assert 0.9 * ideal <= wall <= ideal + 0.05 * rounds + 1.5, (wall, ideal)
    assert server.max_seen <= concurrency
    assert batch.max_in_flight <= concurrency
    assert server.max_seen >= 0.8 * concurrency  # and it did use the concurrency given
    assert [row.status for row in batch.rows] == [Status.FINISHED] * 30
    assert [row.attempts for row in batch.rows] == [1] * 30
    assert server.requests == Counter({location.name: 1 for location in LOCATIONS})

    summary = batch.summary()
    assert summary["wall_s"] == pytest.approx(wall, abs=0.2)
    assert summary["finished_now"] == 30 and summary["failed"] == 0
    assert summary["output_tokens"] == 30 * TOKENS
    assert summary["sum_row_s"] >= 0.95 * 30 * latency
    assert summary["throughput_tokens_per_s"] == pytest.approx(30 * TOKENS / summary["wall_s"])
    assert summary["throughput_tokens_per_s"] > 0
    # speedup = sum of row times / wall: at most c (c rows at a time), close to it here.
    assert summary["speedup"] <= concurrency * 1.05
    assert summary["speedup"] >= (0.8 if concurrency <= 5 else 0.4) * concurrency
    assert summary["max_in_flight"] == batch.max_in_flight
    assert batch.progress() == {"total": 30, "done": 30, "failed": 0, "running": 0,
                                "remaining": 0, "stopped": 0, "eta_s": None,
                                "resumed": 0, "fraction": 1.0}


def test_a_server_with_fewer_slots_queues_the_rest() -> None:
    """The test server's own cap: 30 requests at once, 5 worked on at a time."""
    with LatencyServer(latency=LATENCY, cap=5) as server:
        batch = make_batch(server, LOCATIONS, 30)
        started = time.monotonic()
        run_to_end(batch)
        wall = time.monotonic() - started
    assert server.max_seen > 5 and batch.max_in_flight > 5  # queued at the server
    assert server.max_processing == 5
    assert 0.9 * 6 * LATENCY <= wall <= 6 * LATENCY + 1.5
    assert all(row.status == Status.FINISHED for row in batch.rows)


def test_progress_while_running() -> None:
    """Polled as the page does: never more running than the concurrency, counts only grow,
    and an ETA once a row has finished."""
    with LatencyServer(latency=0.1) as server:
        batch = make_batch(server, LOCATIONS[:10], 2).start()
        seen: list[dict[str, Any]] = []
        while not batch.done:
            seen.append(batch.progress())
            time.sleep(0.01)
        assert batch.wait(5)
    assert max(p["running"] for p in seen) <= 2
    # The counts add up to the rows: 'remaining' are those not started yet.
    assert all(p["done"] + p["failed"] + p["running"] + p["remaining"] == 10 for p in seen)
    done = [p["done"] for p in seen]
    assert done == sorted(done)
    assert any(p["eta_s"] and p["eta_s"] > 0 and p["remaining"] + p["running"] for p in seen)
    assert batch.progress()["fraction"] == 1.0


def test_concurrency_is_clamped() -> None:
    url = "http://127.0.0.1:9"
    assert Batch(make_spec(url, LOCATIONS[:2], 0), build=lambda: VLLMBackend(url)
                 ).concurrency == 1
    assert Batch(make_spec(url, LOCATIONS[:2], 500), build=lambda: VLLMBackend(url)
                 ).concurrency == MAX_CONCURRENCY


def test_spec_round_trips_through_json() -> None:
    spec = make_spec("http://127.0.0.1:8000", LOCATIONS[:3], 7)
    assert BatchSpec.from_json(spec.to_json()) == spec


# -- retries ----------------------------------------------------------------------------------
@pytest.mark.parametrize("status", [503, 429, 502, 500, HANG])
def test_a_passing_failure_is_retried_with_backoff(status: int) -> None:
    """The first attempt of one row and the first two of another fail (HANG: no answer
    within the read timeout); both are retried after 0.05 s, then 0.1 s, and finish."""
    once, twice = LOCATIONS[0].name, LOCATIONS[1].name
    failures = {once: Fail(status, first=1), twice: Fail(status, first=2)}
    with LatencyServer(latency=0.05, failures=failures, hang_s=3.0) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:5], 5, read_timeout=0.4,
                                      max_retries=2, backoff_s=0.05))
    rows = by_name(batch)
    assert [row.status for row in batch.rows] == [Status.FINISHED] * 5
    assert {name: row.attempts for name, row in rows.items()} == {
        location.name: {once: 2, twice: 3}.get(location.name, 1) for location in LOCATIONS[:5]}
    assert server.requests == Counter({location.name: {once: 2, twice: 3}.get(location.name, 1)
                                       for location in LOCATIONS[:5]})
    assert all(row.error == "" for row in batch.rows)
    assert all(row.text.startswith(f"## Recommendation for {row.location.name}")
               for row in batch.rows)
    first, second, third = server.arrivals[twice]
    assert second - first >= 0.05 - 0.005
    assert third - second >= 0.10 - 0.005
    assert batch.summary()["failed"] == 0


@pytest.mark.parametrize("max_retries", [0, 1, 3])
def test_a_row_that_keeps_failing_is_marked_failed_and_the_batch_goes_on(
        max_retries: int) -> None:
    bad = LOCATIONS[2].name
    with LatencyServer(latency=0.05, failures={bad: Fail(500)}) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:6], 3, max_retries=max_retries,
                                      backoff_s=0.02))
    row = by_name(batch)[bad]
    assert row.status == Status.FAILED
    assert row.attempts == max_retries + 1
    assert server.requests[bad] == max_retries + 1
    assert "HTTP 500" in row.error and f"planned failure 500 for {bad}" in row.error
    others = [other for other in batch.rows if other is not row]
    assert [other.status for other in others] == [Status.FINISHED] * 5
    assert [other.attempts for other in others] == [1] * 5
    summary, progress = batch.summary(), batch.progress()
    assert summary["failed"] == 1 and summary["finished_now"] == 5
    assert (progress["done"], progress["failed"], progress["remaining"]) == (5, 1, 0)


def test_a_bad_request_is_not_retried() -> None:
    bad = LOCATIONS[1].name
    with LatencyServer(latency=0.05, failures={bad: Fail(400)}) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:3], 3, backoff_s=0.05))
    row = by_name(batch)[bad]
    assert (row.status, row.attempts, server.requests[bad]) == (Status.FAILED, 1, 1)
    assert "HTTP 400" in row.error
    assert sum(other.status == Status.FINISHED for other in batch.rows) == 2


def test_an_unknown_model_is_not_retried() -> None:
    """vLLM's 404 for a model it does not serve: the same request would fail again."""
    with LatencyServer(latency=0.05) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:3], 3, model="no-such-model",
                                      backoff_s=0.05))
    assert [row.status for row in batch.rows] == [Status.FAILED] * 3
    assert [row.attempts for row in batch.rows] == [1] * 3
    assert server.requests == Counter({location.name: 1 for location in LOCATIONS[:3]})
    assert all("does not serve 'no-such-model'" in row.error for row in batch.rows)
    assert all("smollm2" in row.error for row in batch.rows)  # the served models are named


def test_a_backend_that_cannot_be_built_fails_every_row() -> None:
    def build() -> VLLMBackend:
        raise BackendConnectionError("Cannot reach vLLM at http://127.0.0.1:9.")

    batch = run_to_end(Batch(make_spec("http://127.0.0.1:9", LOCATIONS[:3], 2), build=build))
    assert [row.status for row in batch.rows] == [Status.FAILED] * 3
    assert all("Cannot reach vLLM" in row.error for row in batch.rows)


@pytest.mark.parametrize(("error", "retryable"), [
    (BackendTimeoutError("no answer in time"), True),
    (BackendConnectionError("connection refused"), True),
    (BackendStatusError("busy", status_code=503), True),
    (BackendStatusError("server error", status_code=500), True),
    (BackendStatusError("bad gateway", status_code=502), True),
    (BackendStatusError("gateway timeout", status_code=504), True),
    (BackendStatusError("too many requests", status_code=429), True),
    (BackendStatusError("request timeout", status_code=408), True),
    (StreamError("engine crashed mid-stream", status_code=200), True),
    (TruncatedStreamError("stream ended early"), True),
    (BackendStatusError("bad request", status_code=400), False),
    (BackendStatusError("not found", status_code=404), False),
    (BackendStatusError("unprocessable", status_code=422), False),
    (ModelNotFoundError("no such model", model="x"), False),
    (AuthenticationError("wrong key", status_code=401), False),
    (BackendError("Unexpected error: KeyError"), False),
    (None, False),
])
def test_is_retryable(error: BackendError | None, retryable: bool) -> None:
    assert is_retryable(error) is retryable


# -- stop -------------------------------------------------------------------------------------
def test_stop_cancels_rows_in_flight_and_keeps_finished_ones() -> None:
    with LatencyServer(latency=0.6) as server:
        batch = make_batch(server, LOCATIONS[:8], 2).start()
        # Rows 0 and 1 finished; rows 2 and 3 are being generated; 4 to 7 wait.
        assert wait_until(lambda: sum(row.status == Status.FINISHED for row in batch.rows) == 2
                          and server.in_flight == 2)
        asked = time.monotonic()
        batch.stop()
        assert batch.wait(5)
        took = time.monotonic() - asked
        # The cancelled requests' connections were closed: the server stops generating.
        assert wait_until(lambda: server.hangups == 2, 3)
    assert took < 0.4  # far less than the 0.6 s the rows in flight had left
    assert batch.stopped
    statuses = [row.status for row in batch.rows]
    assert statuses == [Status.FINISHED] * 2 + [Status.STOPPED] * 6
    assert all(row.text for row in batch.rows[:2])  # finished rows keep their answers
    assert [row.attempts for row in batch.rows[2:]] == [1, 1, 0, 0, 0, 0]
    names = [location.name for location in LOCATIONS[:8]]
    assert server.requests == Counter(names[:4])  # pending rows were never requested
    assert server.answered == Counter(names[:2])
    summary = batch.summary()
    assert summary["finished_now"] == 2 and summary["failed"] == 0


def test_stop_while_a_row_is_starting_cancels_it() -> None:
    """Stop pressed just as row 0 starts: its recording is being set up (here the
    recording callback itself presses Stop), before its request is sent."""
    holder: dict[str, Batch] = {}

    def recording(index: int) -> Recording | None:
        if index == 0:
            holder["batch"].stop()
        return None

    with LatencyServer(latency=1.0) as server:
        batch = holder["batch"] = make_batch(server, LOCATIONS[:3], 1, recording=recording)
        assert run_to_end(batch, 10)
    assert [row.status for row in batch.rows] == [Status.STOPPED] * 3
    assert server.answered[LOCATIONS[0].name] == 0


# -- history and resume -----------------------------------------------------------------------
def test_every_row_is_recorded_in_its_group_with_its_position(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    bad = LOCATIONS[3].name
    with LatencyServer(latency=0.05, failures={bad: Fail(400)}) as server:
        spec = make_spec(server.url, LOCATIONS[:6], 3)
        group = store.create_group("batch", spec=spec.to_json())
        batch = run_to_end(Batch(
            spec, build=lambda: VLLMBackend(server.url, model=MODEL, read_timeout=10),
            recording=lambda index: Recording(store, "batch", group, index), group_id=group,
            backoff_s=0.05))
    # Each run's recorder thread writes its final state as the run ends.
    assert wait_until(lambda: all(run.status != Status.RUNNING
                                  for run in store.group_runs(group)), 5)
    runs = store.group_runs(group)
    assert [run.position for run in runs] == list(range(6))
    for row, stored in zip(batch.rows, runs, strict=True):
        assert (stored.page, stored.group_id, stored.preset) == ("batch", group,
                                                                 row.location.name)
        assert (stored.backend, stored.host, stored.model) == ("vllm", server.url, MODEL)
        assert f"Location: {row.location.name}" in stored.prompt
        assert stored.system == SYSTEM
        if row.location.name == bad:
            assert row.status == Status.FAILED and stored.status == Status.ERROR
            assert "HTTP 400" in (stored.error or "")
        else:
            assert row.status == stored.status == Status.FINISHED
            assert stored.text == row.text and stored.output_tokens == TOKENS
    label = store.get_group(group)
    assert label is not None and BatchSpec.from_json(label.spec) == spec
    assert [g.id for g in store.list_groups("batch")] == [group]


def test_rows_are_in_the_history_when_the_batch_reports_done(tmp_path: Path) -> None:
    db = tmp_path / "history.sqlite3"
    store = RunStore(db)
    with LatencyServer(latency=0.3) as server:
        spec = make_spec(server.url, LOCATIONS[:3], 3)
        group = store.create_group("batch", spec=spec.to_json())
        batch = Batch(spec, build=lambda: VLLMBackend(server.url, model=MODEL),
                      recording=lambda index: Recording(store, "batch", group, index),
                      group_id=group).start()
        # All three rows recorded and at the server; now another writer (another session of
        # the app) holds the database's write lock for a moment while they finish.
        assert wait_until(lambda: server.in_flight == 3 and len(store.group_runs(group)) == 3)
        other = sqlite3.connect(db, isolation_level=None, timeout=5, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        release = threading.Timer(1.0, lambda: other.execute("ROLLBACK"))
        release.start()
        try:
            assert batch.wait(10)
            # Done means stored: no row may still read "running" once wait() returns.
            statuses = [run.status for run in store.group_runs(group)]
        finally:
            release.join()
            other.close()
    assert [row.status for row in batch.rows] == [Status.FINISHED] * 3
    assert statuses == [Status.FINISHED] * 3


def test_killed_mid_batch_resumes_without_redoing_finished_rows(tmp_path: Path) -> None:
    """A separate app process runs 12 rows, 2 at a time, and is SIGKILLed once 4 are in the
    history; resuming as pages/batch.py does asks the server only for the other rows."""
    db, count = tmp_path / "history.sqlite3", 12
    with LatencyServer(latency=0.3) as server:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.batch_child", str(db), server.url, MODEL, str(count),
             "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("group "), line + (child.stderr.read() if child.stderr
                                                      else "")
            group = int(line.split()[1])
            store = RunStore(db)

            def finished() -> int:
                return sum(run.status in ANSWERED for run in store.group_runs(group))

            assert wait_until(lambda: finished() >= 4, timeout=20)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL

        # What the Resume button does (pages/batch.py): the dead child's claim is no claim.
        (summary,) = store.group_summaries("batch")
        assert summary.group.id == group and not summary.running
        spec = BatchSpec.from_json(summary.group.spec)
        finished_before = {run.position: run for run in store.group_runs(group)
                           if run.status in ANSWERED}
        assert 4 <= len(finished_before) < count  # killed mid-batch
        requested_before = Counter(server.requests)
        batch = launch(spec, store=store, group_id=group, build=lambda: VLLMBackend(
            spec.host, model=spec.model, read_timeout=10))
        assert batch.wait(30)

    assert spec.concurrency == 2 and len(spec.scenarios) == count
    for row in batch.rows:
        name = row.location.name
        assert row.status == Status.FINISHED, (name, row.status, row.error)
        if row.index in finished_before:
            assert row.resumed
            assert server.requests[name] == requested_before[name] == 1  # not asked again
            assert row.text == finished_before[row.index].text
            assert row.output_tokens == TOKENS
        else:
            assert not row.resumed
            assert server.requests[name] == requested_before[name] + 1
    totals = batch.summary()
    assert totals["resumed"] == len(finished_before)
    assert totals["finished_now"] == count - len(finished_before)
    assert batch.progress()["done"] == count
    # The history now has a finished run at every position.
    assert wait_until(lambda: {run.position for run in store.group_runs(group)
                               if run.status == Status.FINISHED} == set(range(count)), 5)


def test_tokens_per_second_of_one_piece_answers_is_plausible() -> None:
    with LatencyServer(latency=0.2) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:2], 2))
    for row in batch.rows:
        assert row.seconds is not None and row.seconds >= 0.2
        assert row.output_tokens == TOKENS and row.client_tokens_per_s is not None
        # The answer came in one piece after row.seconds: no more than tokens / seconds.
        assert row.client_tokens_per_s <= 1.05 * TOKENS / row.seconds, row.client_tokens_per_s
        assert row.server_tokens_per_s is None  # vLLM reports no speed of its own


# -- exports ----------------------------------------------------------------------------------
def test_csv_and_zip_exports() -> None:
    bad = LOCATIONS[1].name
    with LatencyServer(latency=0.05, failures={bad: Fail(400)}) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:4], 4))
    table = list(csv.DictReader(io.StringIO(batch.to_csv())))
    assert len(table) == 4
    assert [row["location"] for row in table] == [location.name for location in LOCATIONS[:4]]
    assert [row["#"] for row in table] == ["1", "2", "3", "4"]
    assert [row["status"] for row in table] == [Status.FINISHED, Status.FAILED, Status.FINISHED,
                                                Status.FINISHED]
    assert "HTTP 400" in table[1]["error"]
    assert [row["output tokens"] for row in table] == ["200", "", "200", "200"]
    assert all(float(table[i]["time s"]) > 0 for i in (0, 2, 3))

    with zipfile.ZipFile(io.BytesIO(batch.to_zip())) as archive:
        names = archive.namelist()
        assert archive.read("batch.csv").decode() == batch.to_csv()
        markdown = sorted(name for name in names if name.endswith(".md"))
        pages = sorted(name for name in names if name.endswith(".html"))
        assert len(names) == 1 + 3 + 3  # the CSV, and two files per answered location
        for index, md, page in zip((0, 2, 3), markdown, pages, strict=True):
            row = batch.rows[index]
            assert md.startswith(f"{index + 1:02d}-") and page == md[:-3] + ".html"
            saved = archive.read(md).decode()  # sanitized: the script tag is text
            assert saved == row.text.replace("<", "\\<")
            document = archive.read(page).decode()
            assert f"Recommendation for {row.location.name}" in document
            assert "<strong>12 panels</strong>" in document
            assert "<script" not in document.lower()  # the answer's script tag is gone
        assert not any(name.startswith("02-") for name in names)  # the failed row


def test_row_statuses_are_final_once_done() -> None:
    """Every row of a finished batch is in a final state: done, failed or stopped."""
    with LatencyServer(latency=0.02, failures={LOCATIONS[0].name: Fail(404)}) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:4], 2))
    assert all(row.done for row in batch.rows)
    assert {row.status for row in batch.rows} <= {*ANSWERED, Status.FAILED, Status.STOPPED}


# -- one worker per batch: launch, watch, resume ----------------------------------------------
def test_a_running_batch_is_watched_never_resumed_twice(tmp_path: Path) -> None:
    """Tab A runs a batch and goes; tab B finds it running (the same live object, to watch
    and stop), cannot resume it while it runs, and resumes it after the stop without
    running any row twice."""
    store = RunStore(tmp_path / "history.sqlite3")
    with LatencyServer(latency=0.3, cap=2) as server:
        spec = make_spec(server.url, LOCATIONS[:8], concurrency=2)
        build = lambda: VLLMBackend(server.url, model=MODEL, read_timeout=10)  # noqa: E731
        live = LiveBatches()  # the process's, in the app: every session finds it there
        batch = launch(spec, build=build, store=store, live=live)
        group = batch.group_id
        assert group is not None
        assert wait_until(lambda: sum(row.status in ANSWERED for row in batch.rows) >= 2)

        (summary,) = store.group_summaries("batch")
        assert summary.running and summary.group.id == group
        assert live.get(group) is batch  # what another session attaches to
        with pytest.raises(BatchRunning):
            launch(BatchSpec.from_json(summary.group.spec), build=build, store=store,
                   group_id=group, live=live)

        watched = live.get(group)
        assert watched is not None
        watched.stop()  # Stop from the other tab
        assert batch.wait(10)
        assert live.get(group) is None
        (summary,) = store.group_summaries("batch")
        assert not summary.running
        finished = {run.position for run in store.group_runs(group) if run.status in ANSWERED}

        resumed = launch(BatchSpec.from_json(summary.group.spec), build=build, store=store,
                         group_id=group, live=live)
        assert resumed.wait(30)
    answered = [run.position for run in store.group_runs(group) if run.status in ANSWERED]
    assert sorted(answered) == list(range(8))  # every row once: none ran twice
    assert sum(server.answered.values()) == 8
    rows = {row.index: row for row in resumed.rows}
    assert all(rows[index].resumed and rows[index].attempts == 1 for index in finished)
    (summary,) = store.group_summaries("batch")
    assert (summary.done, summary.failed, summary.running) == (8, 0, False)


def test_a_batch_of_a_dead_process_can_be_resumed(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    spec = make_spec("http://127.0.0.1:9", LOCATIONS[:2], concurrency=1)
    group = store.create_group("batch", spec=spec.to_json())
    assert store.claim_group(group)
    host, _, start = process_owner().rsplit(":", 2)
    with sqlite3.connect(store.path) as conn:  # its owner died without releasing it
        conn.execute("UPDATE groups SET owner = ? WHERE id = ?",
                     (f"{host}:999999999:{start}", group))
    (summary,) = store.group_summaries("batch")
    assert not summary.running
    assert store.claim_group(group)


def test_the_stored_batch_holds_no_credentials() -> None:
    spec = make_spec("http://analyst:S3cretPW@127.0.0.1:11434", LOCATIONS[:1], concurrency=1)
    stored = spec.to_json()
    assert "S3cretPW" not in stored and "analyst:" not in stored
    resumed = BatchSpec.from_json(stored)
    assert resumed.host == "http://127.0.0.1:11434"
    # Resumed with the sidebar's host for the same server, the credentials come back.
    assert resumed.with_host(spec.host).host == spec.host
    assert resumed.with_host("http://other:11434").host == "http://127.0.0.1:11434"


def test_progress_adds_up_and_says_nothing_of_time_after_a_stop() -> None:
    with LatencyServer(latency=0.5, cap=2) as server:
        batch = make_batch(server, LOCATIONS[:6], concurrency=2).start()
        assert wait_until(lambda: batch.progress()["running"] == 2)
        seen = batch.progress()
        assert seen["done"] + seen["failed"] + seen["running"] + seen["remaining"] == 6
        batch.stop()
        assert batch.wait(10)
    after = batch.progress()
    assert after["eta_s"] is None and after["running"] == 0
    assert after["stopped"] >= 2
    assert after["done"] + after["failed"] + after["stopped"] + after["remaining"] == 6
    assert batch.to_csv().count("\n") == 7


def test_batch_csv_neutralises_formulas_in_location_names() -> None:
    with LatencyServer(latency=0.01) as server:
        hostile = replace(LOCATIONS[0], name='=HYPERLINK("http://evil.example","click me")')
        batch = run_to_end(make_batch(server, [hostile], concurrency=1))
    (row,) = csv.DictReader(io.StringIO(batch.to_csv()))
    assert row["location"] == "'" + hostile.name


def test_the_resume_list_counts_failed_rows_apart(tmp_path: Path) -> None:
    """A batch whose rows all failed reads '0 done · 3 failed', not '0/3 done'."""
    store = RunStore(tmp_path / "history.sqlite3")
    failures = {location.name: Fail(400) for location in LOCATIONS[:3]}
    with LatencyServer(latency=0.01, failures=failures) as server:
        batch = launch(make_spec(server.url, LOCATIONS[:3], concurrency=3), store=store,
                       build=lambda: VLLMBackend(server.url, model=MODEL, read_timeout=10))
        assert batch.wait(20)
    (summary,) = store.group_summaries("batch")
    assert (summary.done, summary.failed, summary.running) == (0, 3, False)


def test_a_batch_claimed_on_another_host_is_judged_by_its_heartbeat(tmp_path: Path) -> None:
    """Another host's process cannot be looked up from here: a claim or a row saved within
    the heartbeat window means it works on; silence past it means it died."""
    store = RunStore(tmp_path / "history.sqlite3")
    spec = make_spec("http://127.0.0.1:9", LOCATIONS[:2], concurrency=1)
    group = store.create_group("batch", spec=spec.to_json())
    assert store.claim_group(group)
    _, pid, start = process_owner().rsplit(":", 2)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE groups SET owner = ? WHERE id = ?",
                     (f"another-host:{pid}:{start}", group))
    (summary,) = store.group_summaries("batch")
    assert summary.running and not store.claim_group(group)  # claimed a moment ago
    old = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="microseconds")
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE groups SET claimed_at = ? WHERE id = ?", (old, group))
    (summary,) = store.group_summaries("batch")
    assert not summary.running  # no claim, no row saved lately: its process is gone
    run_id = store.start_run(spec.request(LOCATIONS[0]), "batch", group, 0)
    store.save_progress(run_id, "still writing")
    (summary,) = store.group_summaries("batch")
    assert summary.running  # a row saved just now: it works on


# -- a resumed batch: what its figures cover, its flags, the list of earlier batches ----------
def record_answered(store: RunStore, spec: BatchSpec, group: int, index: int) -> None:
    """An earlier session's answered row (before a kill or a stop)."""
    run_id = store.start_run(spec.request(spec.scenarios[index]), "batch", group, index)
    store.finish_run(run_id, "## Earlier\n\nInstall 12 panels.", Status.FINISHED, None,
                     {"output_tokens": 150, "total_time_s": 2.0})


def test_a_resumed_batch_says_what_its_figures_cover(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    with LatencyServer(latency=0.05) as server:
        spec = make_spec(server.url, LOCATIONS[:4], concurrency=2)
        group = store.create_group("batch", spec=spec.to_json())
        record_answered(store, spec, group, 0)
        batch = launch(spec, store=store, group_id=group,
                       build=lambda: VLLMBackend(server.url, model=MODEL, read_timeout=10))
        assert batch.wait(20)
    assert batch.progress_line().startswith("4 done (1 before the resume) · 0 failed")
    coverage = batch.coverage()
    assert coverage is not None
    assert "over the 3 rows answered since the resume" in coverage
    assert "the 1 row answered before it count in “done” only" in coverage
    assert batch.summary()["output_tokens"] == 3 * TOKENS  # the throughput's tokens: 3 rows


def test_a_batch_run_in_one_go_needs_no_word_on_coverage() -> None:
    with LatencyServer(latency=0.02) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:2], 2))
    assert batch.coverage() is None
    assert batch.progress_line().startswith("2 done · 0 failed")


def test_rows_flagged_over_the_window_keep_their_flag_after_a_resume(tmp_path: Path) -> None:
    """Rows 0 and 2 were run anyway over the window; the batch died after row 0. Resumed,
    row 0 (answered before) and row 2 (run now) still say so; a row flagged at the resume
    is added to the stored definition."""
    store = RunStore(tmp_path / "history.sqlite3")
    with LatencyServer(latency=0.02) as server:
        spec = make_spec(server.url, LOCATIONS[:4], concurrency=2).flag([0, 2])
        group = store.create_group("batch", spec=spec.to_json())
        record_answered(store, spec, group, 0)
        stored = store.get_group(group)
        assert stored is not None
        resumed_spec = BatchSpec.from_json(stored.spec).with_host(server.url).flag([3])
        batch = launch(resumed_spec, store=store, group_id=group,
                       build=lambda: VLLMBackend(server.url, model=MODEL, read_timeout=10))
        assert batch.wait(20)
    notes = [row["notes"] for row in batch.table()]
    assert notes == [OVER_WINDOW, "", OVER_WINDOW, OVER_WINDOW]
    assert batch.rows[0].resumed
    stored = store.get_group(group)
    assert stored is not None and BatchSpec.from_json(stored.spec).over_window == (0, 2, 3)


def test_the_flags_travel_with_the_stored_definition() -> None:
    spec = make_spec("http://127.0.0.1:9", LOCATIONS[:3], concurrency=1)
    assert BatchSpec.from_json(spec.to_json()).over_window == ()
    flagged = spec.flag([2, 0]).flag([2])
    assert flagged.over_window == (0, 2)
    assert BatchSpec.from_json(flagged.to_json()) == flagged


def test_the_state_of_earlier_batches(tmp_path: Path) -> None:
    """Complete batches are not offered for resuming; a batch whose process died reads
    'interrupted', one stopped with rows left 'stopped'."""
    store = RunStore(tmp_path / "history.sqlite3")
    spec = make_spec("http://127.0.0.1:9", LOCATIONS[:2], concurrency=1)

    def group_with(answered: list[int], failed: tuple[int, ...] = ()) -> int:
        group = store.create_group("batch", spec=spec.to_json())
        for index in answered:
            record_answered(store, spec, group, index)
        for index in failed:
            run_id = store.start_run(spec.request(spec.scenarios[index]), "batch", group,
                                     index)
            store.finish_run(run_id, "", Status.ERROR, "HTTP 400")
        return group

    complete, stopped, ended = group_with([0, 1]), group_with([0]), group_with([0], (1,))
    killed = group_with([0])
    assert store.claim_group(killed)
    host, _, start = process_owner().rsplit(":", 2)
    with sqlite3.connect(store.path) as conn:  # its owner died without releasing it
        conn.execute("UPDATE groups SET owner = ? WHERE id = ?",
                     (f"{host}:999999999:{start}", killed))
    live = group_with([])
    assert store.claim_group(live)
    states = {summary.group.id: earlier_state(summary)
              for summary in store.group_summaries("batch")}
    assert states == {complete: Status.COMPLETE, stopped: Status.STOPPED, ended: Status.ENDED,
                      killed: Status.INTERRUPTED, live: Status.RUNNING}
    assert {group for group, state in states.items() if state in RESUMABLE} == {
        stopped, ended, killed}


# -- what the table says ----------------------------------------------------------------------
def test_the_table_has_a_tokens_per_second_column_per_meaning() -> None:
    """One "tokens/s" column held the server's figure for Ollama and the client's for vLLM;
    now two, named as the History CSV names them."""
    with FakeOllama(script=Script(tokens=["Install", " 12", " panels."])) as ollama:
        spec = replace(make_spec(ollama.url, LOCATIONS[:1], 1), backend="ollama",
                       model="llama3.1:8b")
        from_ollama = run_to_end(Batch(spec, build=lambda: OllamaBackend(
            ollama.url, model="llama3.1:8b")))
    with LatencyServer(latency=0.05) as server:
        from_vllm = run_to_end(make_batch(server, LOCATIONS[:1], 1))
    (ollama_row,) = csv.DictReader(io.StringIO(from_ollama.to_csv()))
    (vllm_row,) = csv.DictReader(io.StringIO(from_vllm.to_csv()))
    for row in (ollama_row, vllm_row):
        assert "tokens/s" not in row
        assert float(row["client_tokens_per_s"]) > 0
    assert float(ollama_row["server_tokens_per_s"]) > 0
    assert vllm_row["server_tokens_per_s"] == ""  # vLLM reports no speed of its own
    (ollama_shown,) = from_ollama.page_table()
    (vllm_shown,) = from_vllm.page_table()
    assert "server_tokens_per_s" in ollama_shown and "server_tokens_per_s" not in vllm_shown


def test_the_page_table_says_statuses_in_words_and_never_none() -> None:
    bad = LOCATIONS[1].name
    with LatencyServer(latency=0.01, failures={bad: Fail(400)}) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:2], 2))
    batch.rows[0].status = Status.LENGTH  # cut at max tokens: the statistics' "Hit max tokens"
    shown = batch.page_table()
    assert [row["status"] for row in shown] == ["Hit max tokens", "Failed"]
    # the CSV's values
    assert [row["status"] for row in batch.table()] == [Status.LENGTH, Status.FAILED]
    assert all(value is not None for row in shown for value in row.values())
    assert shown[1]["output tokens"] == "–" and shown[1]["grounding"] == "–"
    assert "thinking s" not in shown[0]  # no reasoning model: no column of dashes
    assert batch.failures() == "1 of 2 rows failed: the table's error column says why."


def test_every_row_failed_is_said_so() -> None:
    failures = {location.name: Fail(400) for location in LOCATIONS[:3]}
    with LatencyServer(latency=0.01, failures=failures) as server:
        batch = run_to_end(make_batch(server, LOCATIONS[:3], 3))
    assert batch.failures() == "All 3 rows failed: the table's error column says why."
    assert batch.progress()["fraction"] == 1.0  # every row ended


def test_the_prefix_cache_without_data_says_so_plainly() -> None:
    assert str(PrefixCacheUse(0, 0)) == "prefix cache: no data yet"
    assert str(PrefixCacheUse(100, 49)).startswith("49% of 100 prompt tokens")
