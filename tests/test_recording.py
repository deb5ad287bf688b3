"""Runs recorded in the history as they go: started, saved while streaming, finished."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import cast

from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from studio.records.store import RunStore
from studio.runs.request import RunRequest
from studio.runs.runner import Recording, Run
from tests.servers.ollama import SAMPLE_ANSWER, FakeOllama, Script, tokenize


def request(url: str) -> RunRequest:
    return RunRequest(backend="ollama", host=url, model="llama3.1:8b", system="system",
                      prompt="prompt", sampling=Sampling(max_tokens=100), preset="Preset")


def test_text_is_saved_while_it_streams(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    fake_ollama.script = Script(tokens=tokenize(SAMPLE_ANSWER), delay=0.08)
    store = RunStore(tmp_path / "h.sqlite3")
    run = Run(OllamaBackend(fake_ollama.url, "llama3.1:8b"), request(fake_ollama.url),
              Recording(store, "playground")).start()
    assert run.run_id is not None
    saved_while_running: list[str] = []
    while not run.done:
        stored = store.get(run.run_id)
        assert stored is not None
        if stored.status == "running" and stored.text:
            saved_while_running.append(stored.text)
        time.sleep(0.2)
    assert len(set(saved_while_running)) >= 2, "the text was not saved as it grew"
    assert all(SAMPLE_ANSWER.startswith(text) for text in saved_while_running)
    deadline = time.monotonic() + 3
    while (stored := store.get(run.run_id)) and stored.status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert stored is not None
    assert stored.status == "finished" and stored.text == SAMPLE_ANSWER
    assert stored.stats["output_tokens"] == len(tokenize(SAMPLE_ANSWER))
    assert stored.preset == "Preset" and stored.page == "playground"


def test_a_stopped_run_is_kept_with_its_partial_text(fake_ollama: FakeOllama,
                                                     tmp_path: Path) -> None:
    fake_ollama.script = Script(tokens=tokenize(SAMPLE_ANSWER), delay=0.1)
    store = RunStore(tmp_path / "h.sqlite3")
    run = Run(OllamaBackend(fake_ollama.url, "llama3.1:8b"), request(fake_ollama.url),
              Recording(store, "playground")).start()
    time.sleep(0.5)
    run.stop()
    run.wait(2)
    time.sleep(1.0)  # the recorder's last write follows the end of the run
    stored = store.get(run.run_id or 0)
    assert stored is not None and stored.status == "stopped"
    assert stored.text == run.text and stored.text and stored.text != SAMPLE_ANSWER


def test_an_error_is_recorded_with_its_message(fake_ollama: FakeOllama, tmp_path: Path) -> None:
    fake_ollama.script = Script(status=500, error="runner died")
    store = RunStore(tmp_path / "h.sqlite3")
    run = Run(OllamaBackend(fake_ollama.url, "llama3.1:8b"), request(fake_ollama.url),
              Recording(store, "playground")).start()
    run.wait(5)
    time.sleep(1.0)
    stored = store.get(run.run_id or 0)
    assert stored is not None and stored.status == "error"
    assert "runner died" in (stored.error or "")


class FailingStore:
    """A history whose disk is full: every write fails."""

    def start_run(self, *args: object, **kwargs: object) -> int:
        raise sqlite3.OperationalError("database or disk is full")


def test_a_broken_history_never_breaks_the_generation(fake_ollama: FakeOllama) -> None:
    run = Run(OllamaBackend(fake_ollama.url, "llama3.1:8b"), request(fake_ollama.url),
              Recording(cast(RunStore, FailingStore()), "playground")).start()
    run.wait(5)
    assert run.status == "finished" and run.text == SAMPLE_ANSWER
    assert run.run_id is None
    assert run.record_error and "disk is full" in run.record_error
