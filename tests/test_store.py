"""studio/records/store.py: the run history, on real SQLite files in temp dirs (no mocks)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.base import Backend
from backends.embedded_backend import BUNDLED_NAME, EmbeddedBackend
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.stream import GenerationStats
from backends.vllm_backend import VLLMBackend
from studio.records.store import (
    CSV_COLUMNS,
    DEFAULT_DB_PATH,
    SCHEMA_V1,
    SCHEMA_VERSION,
    RunStore,
    StoredRun,
    StoreError,
    export_csv,
    export_csv_lines,
    export_json,
    export_json_lines,
    owner_alive,
    process_owner,
)
from studio.runs.request import RunRequest
from studio.runs.runner import Recording, Run
from tests.servers.ollama import SAMPLE_ANSWER, FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "You are a PV sizing analyst."
SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(Sampling))
PROMPT = "Size a PV system for San Diego. Budget $15,000."


def request(**changes: Any) -> RunRequest:
    sampling: dict[str, Any] = {"max_tokens": 512, "temperature": 0.3}
    sampling.update({key: changes.pop(key) for key in SAMPLING_FIELDS if key in changes})
    fields: dict[str, Any] = {"backend": "ollama", "host": "http://localhost:11434",
                              "model": "llama3.1:8b", "system": SYSTEM, "prompt": PROMPT,
                              "sampling": Sampling(**sampling), "preset": "san-diego"}
    fields.update(changes)
    return RunRequest(**fields)


def record(store: RunStore, text: str = "answer", status: str = Status.FINISHED,
           page: str = "playground", **changes: object) -> int:
    run_id = store.start_run(request(**changes), page)
    store.finish_run(run_id, text, status, None, {"output_tokens": 3})
    return run_id


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "history.sqlite3")


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def age_run(path: Path, run_id: int, seconds: float) -> None:
    """Pretend the run's last save was ``seconds`` ago (a dead worker)."""
    then = (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat(timespec="microseconds")
    with raw(path) as conn:
        conn.execute("UPDATE runs SET updated_at = ? WHERE id = ?", (then, run_id))


# -- basics ---------------------------------------------------------------------------------
def test_new_database_in_missing_folders_is_wal_at_current_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "history.sqlite3"
    store = RunStore(path)
    assert path.exists()
    assert store.schema_version() == SCHEMA_VERSION == 8
    assert raw(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert DEFAULT_DB_PATH == ROOT / "data" / "history.sqlite3"
    RunStore(path)  # opening again is a no-op


def test_round_trip_start_progress_finish_get(store: RunStore) -> None:
    run_id = store.start_run(request(), "playground")
    run = store.get(run_id)
    assert run is not None
    assert (run.status, run.text, run.stats, run.error) == (Status.RUNNING, "", {}, None)
    assert (run.backend, run.host, run.model, run.system, run.prompt, run.preset) == (
        "ollama", "http://localhost:11434", "llama3.1:8b", SYSTEM, PROMPT, "san-diego")
    assert (run.sampling.max_tokens, run.sampling.temperature, run.page, run.group_id,
            run.position) == (
        512, 0.3, "playground", None, 0)

    store.save_progress(run_id, "## RECOMMENDATION")
    progressed = store.get(run_id)
    assert progressed is not None
    assert progressed.text == "## RECOMMENDATION" and progressed.status == Status.RUNNING
    assert progressed.updated_at >= run.updated_at

    stats = GenerationStats(time_to_first_token_s=0.2, total_time_s=2.2, prompt_tokens=169,
                            output_tokens=40, done_reason="stop", server_eval_s=1.6)
    store.finish_run(run_id, SAMPLE_ANSWER, Status.FINISHED, None, stats.to_dict())
    done = store.get(run_id)
    assert done is not None
    assert (done.text, done.status, done.error) == (SAMPLE_ANSWER, Status.FINISHED, None)
    assert done.stats == stats.to_dict()
    assert done.output_tokens == 40 and done.total_time_s == 2.2
    assert done.stats["server_tokens_per_s"] == pytest.approx(25.0)
    assert done.created_at == run.created_at
    assert done.to_request() == request()
    assert store.get(run_id + 100) is None


def test_finish_keeps_error_and_partial_text_and_accepts_stats_object(store: RunStore) -> None:
    run_id = store.start_run(request(), "playground")
    store.save_progress(run_id, "partial")
    store.finish_run(run_id, "partial", Status.ERROR, "Stream broke. Check the server.",
                     GenerationStats(output_tokens=1, done_reason="error"))
    run = store.get(run_id)
    assert run is not None
    assert (run.status, run.text) == (Status.ERROR, "partial")
    assert run.error == "Stream broke. Check the server."
    assert run.stats["done_reason"] == "error"


def test_late_progress_never_reverts_a_finished_run(store: RunStore) -> None:
    run_id = store.start_run(request(), "playground")
    store.finish_run(run_id, "whole answer", Status.STOPPED, None, {})
    store.save_progress(run_id, "whole")
    run = store.get(run_id)
    assert run is not None and (run.status, run.text) == (Status.STOPPED, "whole answer")


def test_unknown_page_or_status_is_refused(store: RunStore) -> None:
    with pytest.raises(ValueError, match="page"):
        store.start_run(request(), "history")
    run_id = store.start_run(request(), "playground")
    with pytest.raises(ValueError, match="status"):
        store.finish_run(run_id, "", "done", None, {})
    with pytest.raises(ValueError, match="status"):
        store.finish_run(run_id, "", Status.RUNNING, None, {})


def test_host_credentials_are_stripped(store: RunStore) -> None:
    run_id = store.start_run(request(host="https://user:s3cret@vllm.example:8000/v1"), "compare")
    run = store.get(run_id)
    assert run is not None and run.host == "https://vllm.example:8000/v1"
    assert b"s3cret" not in store.path.read_bytes() + Path(f"{store.path}-wal").read_bytes()


def test_no_api_key_anywhere_in_the_schema(store: RunStore) -> None:
    conn = raw(store.path)
    tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert {"runs", "groups"} <= set(tables)
    for table in tables:
        for column in conn.execute(f"PRAGMA table_info({table})"):
            name = column[1].lower()
            assert not any(word in name for word in ("api", "key", "secret", "password"))
    assert "api_key" not in " ".join(SCHEMA_V1).lower()


# -- listing and filters --------------------------------------------------------------------
def test_list_newest_first_with_limit_offset_and_count(store: RunStore) -> None:
    ids = [record(store, text=f"answer {n}") for n in range(5)]
    listed = store.list_runs()
    assert [run.id for run in listed] == ids[::-1]
    assert [run.id for run in store.list_runs(limit=2)] == ids[:-3:-1]
    assert [run.id for run in store.list_runs(limit=2, offset=2)] == [ids[2], ids[1]]
    assert len(store.list_runs(limit=None)) == 5
    assert store.count_runs() == 5


def test_each_filter_matches_exactly(store: RunStore) -> None:
    a = record(store, backend="ollama", model="llama3.1:8b", preset="san-diego")
    b = record(store, backend="vllm", model="meta-llama/Meta-Llama-3-8B-Instruct", preset="",
               status=Status.LENGTH, page="compare")
    c = record(store, backend="embedded", model="smollm2", preset="berlin", status=Status.STOPPED,
               page="batch")
    d = record(store, backend="ollama", model="mistral:7b", preset="berlin", status=Status.ERROR)

    def ids(**filters: Any) -> set[int]:  # the filters of list_runs and count_runs
        assert store.count_runs(**filters) == len(store.list_runs(**filters))
        return {run.id for run in store.list_runs(**filters)}

    assert ids(backend="ollama") == {a, d}
    assert ids(backend="vllm") == {b}
    assert ids(model="mistral:7b") == {d}
    assert ids(preset="berlin") == {c, d}
    assert ids(preset="") == {b}
    assert ids(status=Status.FINISHED) == {a}
    assert ids(status=Status.LENGTH) == {b}
    assert ids(page="batch") == {c}
    assert ids(backend="ollama", preset="berlin") == {d}
    assert ids(backend="nothing") == set()


def test_search_in_prompts_and_answers_case_insensitive(store: RunStore) -> None:
    in_system = record(store, system="You size rooftop ARRAYS in São Paulo.", prompt="Size it.")
    in_prompt = record(store, system="", prompt="Budget: 12% of revenue for panel_count 40")
    in_answer = record(store, system="", prompt="Size it.",
                       text="Break-even: ~10.03 years (budget-constrained)")
    plain = record(store, system="", prompt="nothing here", text="nor here")

    def ids(search: str) -> set[int]:
        return {run.id for run in store.list_runs(search=search)}

    assert ids("rooftop arrays") == {in_system}
    assert ids("SÃO PAULO") == {in_system}  # beyond ASCII, unlike SQLite's LIKE
    assert ids("BREAK-EVEN") == {in_answer}
    assert ids("budget") == {in_prompt, in_answer}
    assert ids("12%") == {in_prompt}
    assert ids("%") == {in_prompt}  # a literal percent sign, not a wildcard
    assert ids("_") == {in_prompt}  # a literal underscore, not a wildcard
    assert ids("panel_count") == {in_prompt}
    assert ids("panelXcount") == set()
    assert ids("2% of") == {in_prompt}
    assert ids("") == {in_system, in_prompt, in_answer, plain}  # empty search: no filter
    assert {run.id for run in store.list_runs(search="budget", backend="vllm")} == set()


def test_distinct_values_for_dropdowns(store: RunStore) -> None:
    record(store, backend="ollama", model="llama3.1:8b", preset="san-diego")
    record(store, backend="vllm", model="smollm2", preset="", status=Status.LENGTH)
    record(store, backend="ollama", model="mistral:7b", preset="berlin", status=Status.ERROR)
    assert store.distinct_values("backend") == ["ollama", "vllm"]
    assert store.distinct_values("model") == ["llama3.1:8b", "mistral:7b", "smollm2"]
    assert store.distinct_values("preset") == ["berlin", "san-diego"]
    assert store.distinct_values("status") == [Status.ERROR, Status.FINISHED, Status.LENGTH]
    with pytest.raises(ValueError):
        store.distinct_values("answer")
    with pytest.raises(ValueError):
        store.distinct_values("backend; DROP TABLE runs")


def test_delete(store: RunStore) -> None:
    keep, gone = record(store), record(store)
    assert store.delete(gone) is True
    assert store.delete(gone) is False
    assert store.get(gone) is None
    assert [run.id for run in store.list_runs()] == [keep]


def test_groups_keep_position_order(store: RunStore) -> None:
    group = store.create_group("compare", preset="ollama vs vllm")
    other = store.create_group("batch")
    # Written out of order, as panes finishing at different times would be.
    second = store.start_run(request(backend="vllm"), "compare", group, position=1)
    first = store.start_run(request(backend="ollama"), "compare", group, position=0)
    third = store.start_run(request(backend="embedded"), "compare", group, position=2)
    store.start_run(request(), "batch", other, position=0)
    runs = store.group_runs(group)
    assert [run.id for run in runs] == [first, second, third]
    assert [run.position for run in runs] == [0, 1, 2]
    assert all(run.group_id == group for run in runs)
    assert len(store.group_runs(other)) == 1
    assert store.group_runs(other + 100) == []


# -- interrupted runs -----------------------------------------------------------------------
def test_stale_running_run_reads_interrupted_then_is_marked(store: RunStore) -> None:
    stale = store.start_run(request(), "playground")
    store.save_progress(stale, "half an ans")
    age_run(store.path, stale, 60)
    live = store.start_run(request(), "playground")
    store.save_progress(live, "still going")

    got = store.get(stale)
    assert got is not None and (got.status, got.text) == (Status.INTERRUPTED, "half an ans")
    assert {run.id for run in store.list_runs(status=Status.INTERRUPTED)} == {stale}
    assert {run.id for run in store.list_runs(status=Status.RUNNING)} == {live}
    assert store.distinct_values("status") == [Status.INTERRUPTED, Status.RUNNING]

    assert store.mark_interrupted() == 1
    assert store.mark_interrupted() == 0
    row = raw(store.path).execute("SELECT status, answer FROM runs WHERE id = ?",
                                  (stale,)).fetchone()
    assert row == (Status.INTERRUPTED, "half an ans")
    live_run = store.get(live)
    assert live_run is not None and live_run.status == Status.RUNNING

    # A run wrongly marked that turns out alive resumes; its end is recorded as usual.
    store.save_progress(stale, "half an answer")
    revived = store.get(stale)
    assert revived is not None and revived.status == Status.RUNNING
    store.finish_run(stale, "half an answer, done", Status.FINISHED, None, {})
    finished = store.get(stale)
    assert finished is not None and finished.status == Status.FINISHED


def test_process_killed_mid_stream_reads_interrupted_at_once(tmp_path: Path) -> None:
    """A real child process streams into the history and is killed with SIGKILL: while it
    lives its run reads running; the moment it is dead, interrupted (no 30 s heartbeat wait),
    and the app's start-up marks it so."""
    tokens = tokenize(SAMPLE_ANSWER * 6)
    full = "".join(tokens)
    db = tmp_path / "history.sqlite3"
    store = RunStore(db)
    with FakeOllama(script=Script(tokens=tokens, delay=0.03)) as server:
        child = subprocess.Popen([sys.executable, "-m", "tests.store_child", "stream", str(db),
                                  server.url], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("saved "), (line, child.stderr.read() if child.stderr else "")
            run_id = int(line.split()[1])
            alive = store.get(run_id)
            assert alive is not None and alive.status == Status.RUNNING  # its owner still runs
            os.kill(child.pid, signal.SIGKILL)
            assert child.wait(5) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        # The kernel closed the dead process's socket: the stream really was cut mid-way.
        assert server.client_closed.wait(5)

    run = store.get(run_id)  # at once: its updated_at is still fresh
    assert run is not None
    assert run.status == Status.INTERRUPTED
    assert run.text and full.startswith(run.text) and len(run.text) < len(full)
    assert (run.model, run.preset, run.page) == ("llama3.1:8b", "san-diego", "playground")
    assert {r.id for r in store.list_runs(status=Status.INTERRUPTED)} == {run_id}
    assert store.mark_interrupted() == 1  # what the app does on start-up
    row = raw(db).execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    assert row == (Status.INTERRUPTED,)


def test_owner_check_knows_a_reused_pid_and_defers_for_other_hosts() -> None:
    me = process_owner()
    host, pid, start = me.rsplit(":", 2)
    assert owner_alive(me)
    assert not owner_alive(f"{host}:{pid}:{int(start) + 1}")  # same pid, another process
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        gone.wait()
    assert not owner_alive(f"{host}:{gone.pid}:{start}")
    # Another host's process cannot be checked from here, and rows from before owners were
    # recorded have none: the heartbeat decides for both.
    assert owner_alive(f"another-host:{pid}:{start}")
    assert owner_alive("")


def test_a_running_row_of_a_dead_owner_reads_interrupted(store: RunStore) -> None:
    run_id = store.start_run(request(), "playground")
    store.save_progress(run_id, "half")
    host, _, start = process_owner().rsplit(":", 2)
    with raw(store.path) as conn:
        conn.execute("UPDATE runs SET owner = ? WHERE id = ?", (f"{host}:999999999:{start}",
                                                                 run_id))
    got = store.get(run_id)
    assert got is not None and (got.status, got.text) == (Status.INTERRUPTED, "half")
    assert store.distinct_values("status") == [Status.INTERRUPTED]
    # A save from a live process takes the row back: it was alive after all.
    store.save_progress(run_id, "half more")
    revived = store.get(run_id)
    assert revived is not None and revived.status == Status.RUNNING


# -- concurrency ----------------------------------------------------------------------------
def write_runs(stores: list[RunStore], per_thread: int, threads: int) -> list[BaseException]:
    """``threads`` threads, round-robin over ``stores``, each writing complete runs."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(index: int) -> None:
        store = stores[index % len(stores)]
        try:
            barrier.wait()
            for number in range(per_thread):
                tag = f"t{index}-r{number}"
                run_id = store.start_run(request(prompt=tag), "batch", position=index)
                text = ""
                for part in range(20):
                    text += f"{tag}-{part} "
                    store.save_progress(run_id, text)
                store.finish_run(run_id, text, Status.FINISHED, None, {"output_tokens": 20})
        except BaseException as exc:  # collected: an assert in the test names it
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    return errors


def expected_text(tag: str) -> str:
    return "".join(f"{tag}-{part} " for part in range(20))


def test_ten_threads_writing_at_once_lose_nothing(store: RunStore) -> None:
    assert write_runs([store], per_thread=1, threads=10) == []
    runs = store.list_runs(limit=None)
    assert len(runs) == 10
    assert {run.prompt for run in runs} == {f"t{n}-r0" for n in range(10)}
    for run in runs:
        assert run.status == Status.FINISHED
        assert run.text == expected_text(run.prompt)


def test_two_stores_on_one_file_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    stores = [RunStore(path), RunStore(path)]
    assert write_runs(stores, per_thread=3, threads=6) == []
    for store in stores:
        runs = store.list_runs(limit=None)
        assert len(runs) == 18
        assert all(run.status == Status.FINISHED and run.text == expected_text(run.prompt)
                   for run in runs)


def test_processes_and_threads_writing_at_once(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    store = RunStore(path)
    children = [subprocess.Popen([sys.executable, "-m", "tests.store_child", "write", str(path),
                                  "15", tag], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for tag in ("p1", "p2")]
    errors = write_runs([store], per_thread=3, threads=4)
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0 and out.strip() == "done", err
    assert errors == []
    runs = store.list_runs(limit=None)
    assert len(runs) == 30 + 12
    for tag in ("p1", "p2"):
        mine = sorted((run for run in runs if run.prompt.startswith(f"{tag} ")),
                      key=lambda run: run.position)
        assert [run.text for run in mine] == [
            "".join(f"{tag}-{index}-{part} " for part in range(5)) for index in range(15)]
    assert all(run.status == Status.FINISHED for run in runs)


# -- schema upgrade -------------------------------------------------------------------------
def make_v1_database(path: Path) -> None:
    """A database exactly as the first release wrote it, with two runs in it."""
    conn = sqlite3.connect(path)
    for statement in SCHEMA_V1:
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO runs (created_at, page, backend, host, model, system_prompt, user_prompt, "
        "preset, max_tokens, temperature, answer, status, error) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [("2025-06-01T09:00:00.000000+00:00", "playground", "ollama", "http://localhost:11434",
          "llama3.1:8b", SYSTEM, PROMPT, "san-diego", 2048, 0.2, SAMPLE_ANSWER, Status.FINISHED,
          None),
         ("2025-06-02T09:00:00.000000+00:00", "compare", "vllm", "http://localhost:8000",
          "smollm2", "", "Berlin rooftop", "", 512, 0.7, "partial", Status.RUNNING, None)])
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    conn.close()


def test_upgrade_from_schema_v1_keeps_rows_and_adds_features(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    make_v1_database(path)
    store = RunStore(path)
    assert store.schema_version() == SCHEMA_VERSION

    old, older = store.list_runs()
    assert (old.page, old.backend, old.model, old.prompt, old.text) == (
        "compare", "vllm", "smollm2", "Berlin rooftop", "partial")
    assert old.status == Status.INTERRUPTED  # running in a database from before: long dead
    assert (older.system, older.prompt, older.preset, older.text, older.status) == (
        SYSTEM, PROMPT, "san-diego", SAMPLE_ANSWER, Status.FINISHED)
    assert (older.sampling.max_tokens, older.sampling.temperature) == (2048, 0.2)
    assert older.updated_at == older.created_at == "2025-06-01T09:00:00.000000+00:00"
    assert (older.stats, older.group_id, older.position) == ({}, None, 0)
    assert store.mark_interrupted() == 1

    # The v2 features work on the upgraded file.
    group = store.create_group("compare")
    new = store.start_run(request(), "compare", group, position=1)
    store.save_progress(new, "new text")
    store.finish_run(new, "new text, done", Status.FINISHED, None, {"output_tokens": 4})
    assert [run.id for run in store.group_runs(group)] == [new]
    assert store.list_runs()[0].id == new
    assert {run.id for run in store.list_runs(search="BERLIN")} == {old.id}
    assert store.distinct_values("backend") == ["ollama", "vllm"]
    RunStore(path)  # a second open is a no-op
    assert len(RunStore(path).list_runs()) == 3


def test_database_from_a_newer_app_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    RunStore(path)
    with raw(path) as conn:
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match=f"knows up to v{SCHEMA_VERSION}"):
        RunStore(path)


# -- export ---------------------------------------------------------------------------------
def seeded(store: RunStore) -> list[StoredRun]:
    tricky = 'Line one, "quoted"\nline two; 12% of_it\n= not a formula'
    record(store, text=SAMPLE_ANSWER, backend="ollama")
    run_id = store.start_run(request(backend="vllm", system="", prompt=tricky), "compare")
    store.finish_run(run_id, tricky, Status.LENGTH, None,
                     GenerationStats(total_time_s=3.0, time_to_first_token_s=1.0,
                                     output_tokens=10).to_dict())
    return store.list_runs()


def test_export_csv_parses_back(store: RunStore) -> None:
    runs = seeded(store)
    rows = list(csv.DictReader(io.StringIO(export_csv(runs))))
    assert len(rows) == 2
    assert tuple(rows[0]) == CSV_COLUMNS
    newest, oldest = rows
    assert newest["id"] == str(runs[0].id)
    assert (newest["backend"], newest["status"], newest["page"]) == (
        "vllm", Status.LENGTH, "compare")
    assert newest["answer"] == newest["user_prompt"] == runs[0].text
    assert (newest["output_tokens"], newest["total_time_s"], newest["client_tokens_per_s"],
            newest["server_tokens_per_s"]) == ("10", "3.0", "5.0", "")
    assert oldest["answer"] == SAMPLE_ANSWER and oldest["preset"] == "san-diego"
    assert oldest["error"] == "" and oldest["group_id"] == ""
    assert export_csv([]).strip() == ",".join(CSV_COLUMNS)


def _recorded_run(store: RunStore, backend: Backend, kind: str, host: str, model: str,
                  user: str) -> tuple[Run, dict[str, str]]:
    """A real run of ``backend`` recorded as ``user``, and its row of the History CSV."""
    req = RunRequest(backend=kind, host=host, model=model, system="Be brief.",
                     prompt="How many panels for 20 kWh a day?",
                     sampling=Sampling(max_tokens=12, temperature=0.0))
    run = Run(backend, req, Recording(store, "playground", user=user)).start()
    assert run.wait(120) and run.error is None, run.error
    rows = {row["id"]: row for row in csv.DictReader(io.StringIO(export_csv(
        store.iter_runs())))}
    return run, rows[str(run.run_id)]


def _number(cell: str) -> float | None:
    return float(cell) if cell else None


def test_csv_says_whose_tokens_per_second_on_every_backend(tmp_path: Path) -> None:
    """`tokens_per_s` was the server's figure for Ollama and the client's for vLLM: one
    column per meaning, on a real run of each kind; with thinking tokens, load time, user."""
    store = RunStore(tmp_path / "h.sqlite3")
    thought = "Daily use 20 kWh; each panel gives about 1.7 kWh."
    script = Script(tokens=["Install", " 12", " panels."], thinking=tokenize(thought))
    with FakeOllama(models=["qwen3:8b"], version="0.18.0", script=script, reload_delay=1.1,
                    capabilities={"qwen3:8b": ["completion", "thinking"]}) as ollama:
        run, row = _recorded_run(store, OllamaBackend(ollama.url, "qwen3:8b"), "ollama",
                                 ollama.url, "qwen3:8b", "ana")
    stats = run.stats
    assert stats.server_tokens_per_s and stats.client_tokens_per_s
    assert stats.server_tokens_per_s != pytest.approx(stats.client_tokens_per_s)
    assert _number(row["server_tokens_per_s"]) == pytest.approx(stats.server_tokens_per_s)
    assert _number(row["client_tokens_per_s"]) == pytest.approx(stats.client_tokens_per_s)
    assert row["thinking_tokens"] == str(len(tokenize(thought))) == str(stats.thinking_tokens)
    load = _number(row["server_load_s"])
    assert load is not None and load >= 1.0 and load == pytest.approx(stats.server_load_s)
    assert row["user"] == "ana"

    # vLLM answers in one piece: the server reports no speed of its own.
    with FakeVLLM(200, completion("Install 12 panels.")) as vllm:
        run, row = _recorded_run(store, VLLMBackend(vllm.url, "smollm2"), "vllm", vllm.url,
                                 "smollm2", "bo")
    assert run.stats.server_tokens_per_s is None and run.stats.client_tokens_per_s
    assert row["server_tokens_per_s"] == "" and row["server_load_s"] == ""
    assert _number(row["client_tokens_per_s"]) == pytest.approx(run.stats.client_tokens_per_s)
    assert row["user"] == "bo" and row["thinking_tokens"] == ""

    run, row = _recorded_run(store, EmbeddedBackend(), "embedded", "", BUNDLED_NAME, "")
    assert run.stats.client_tokens_per_s and row["server_tokens_per_s"] == ""
    assert _number(row["client_tokens_per_s"]) == pytest.approx(run.stats.client_tokens_per_s)
    assert row["user"] == ""


def test_export_json_parses_back_with_everything(store: RunStore) -> None:
    runs = seeded(store)
    data = json.loads(export_json(runs))
    assert [item["id"] for item in data] == [run.id for run in runs]
    newest = data[0]
    assert newest == runs[0].to_dict()
    assert newest["answer"] == runs[0].text and newest["status"] == Status.LENGTH
    assert newest["parameters"] == {"max_tokens": 512, "temperature": 0.3,
                                    "repeat_penalty": None, "think": ""}
    assert newest["statistics"]["output_tokens"] == 10
    assert newest["statistics"]["client_tokens_per_s"] == 5.0
    assert data[1]["system_prompt"] == SYSTEM and data[1]["answer"] == SAMPLE_ANSWER
    assert json.loads(export_json([])) == []


def test_exports_cover_every_run_read_one_at_a_time(store: RunStore) -> None:
    for index in range(600):
        record(store, f"answer {index}", prompt=f"prompt {index}")
    runs = store.iter_runs()
    assert not isinstance(runs, list)  # a cursor, not a list of every run
    rows = list(csv.DictReader(io.StringIO("".join(export_csv_lines(runs)))))
    assert len(rows) == 600 and {row["answer"] for row in rows} == {
        f"answer {index}" for index in range(600)}
    data = json.loads("".join(export_json_lines(store.iter_runs(search="prompt 59"))))
    assert sorted(run["user_prompt"] for run in data) == [
        "prompt 59", *(f"prompt {n}" for n in range(590, 600))]


@pytest.mark.parametrize("hostile", [
    '=HYPERLINK("http://evil.example","click me")', "+cmd|' /C calc'!A0", "-2+3",
    "@SUM(1+1)", "\tleading tab", "\rleading return"])
def test_csv_export_neutralises_formulas(store: RunStore, hostile: str) -> None:
    record(store, hostile, preset=hostile, model=hostile)
    (row,) = csv.DictReader(io.StringIO(export_csv(store.list_runs())))
    for column in ("answer", "preset", "model"):
        assert row[column] == "'" + hostile  # shown as the text it is, never evaluated
    assert row["max_tokens"] == "512"  # numbers stay numbers


def test_no_credential_reaches_the_database(store: RunStore) -> None:
    run_id = store.start_run(request(host="http://analyst:S3cretPW@127.0.0.1:11434"),
                             "playground")
    store.finish_run(run_id, "ok", Status.FINISHED)
    stored = store.get(run_id)
    assert stored is not None and stored.host == "http://127.0.0.1:11434"
    assert b"S3cretPW" not in store.path.read_bytes() + Path(f"{store.path}-wal").read_bytes()


@pytest.mark.parametrize(("backend", "sse", "delivered", "streamed"), [
    ("ollama", False, "stream", True),
    ("vllm", False, "one piece", False),
    ("vllm", True, "stream (SSE)", True),  # was shown as 'one piece' by the backend's name
])
def test_each_run_records_how_its_answer_arrived(store: RunStore, backend: str, sse: bool,
                                                 delivered: str, streamed: bool) -> None:
    run_id = store.start_run(request(backend=backend, sse=sse), "compare")
    got = store.get(run_id)
    assert got is not None
    assert (got.delivered, got.streamed, got.sse) == (delivered, streamed, sse)
    assert got.to_request() == request(backend=backend, sse=sse)
