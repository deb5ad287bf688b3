"""studio/runs/runner.py: a generation on a worker thread, against wire-faithful test servers."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from backends.base import Backend
from backends.errors import (
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    ModelNotFoundError,
    StreamError,
    TruncatedStreamError,
)
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.stream import Answer, GenerationStats
from backends.vllm_backend import VLLMBackend
from studio.records.store import RunStore
from studio.runs.capacity import Capacity, Limits
from studio.runs.request import RunRequest, status_label
from studio.runs.runner import Recording, Run, Watcher
from tests.conftest import wait_until
from tests.servers.ollama import (
    SAMPLE_ANSWER,
    FakeOllama,
    Script,
    chat_messages,
    prompt_tokens,
    tokenize,
)
from tests.servers.vllm import NOT_FOUND_NEW, FakeVLLM

TOKENS = tokenize(SAMPLE_ANSWER)
SYSTEM = "You are a PV sizing analyst."
SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(Sampling))
PROMPT = "Size a PV system for San Diego. Budget $15,000."


def ollama_request(host: str, **changes: Any) -> RunRequest:
    sampling: dict[str, Any] = {"max_tokens": 512, "temperature": 0.3}
    sampling.update({key: changes.pop(key) for key in SAMPLING_FIELDS if key in changes})
    fields: dict[str, Any] = {"backend": "ollama", "host": host, "model": "llama3.1:8b",
                              "system": SYSTEM, "prompt": PROMPT, "sampling": Sampling(**sampling),
                              "preset": "san-diego"}
    fields.update(changes)
    return RunRequest(**fields)


def start(backend: object, request: RunRequest) -> Run:
    """A run on a stand-in backend (only what the runner calls: generate, or stream)."""
    return Run(cast(Backend, backend), request).start()



def vllm_completion(content: str, finish_reason: str = "stop") -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1751057209,
            "model": "smollm2",
            "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 42, "completion_tokens": 7, "total_tokens": 49}}


class SlowOnePiece:
    """A one-piece backend (no ``stream``) whose ``generate`` waits until released."""

    name = "slow"
    model = "slow-1"

    def __init__(self, answer: str = "late answer", raises: BaseException | None = None) -> None:
        self.answer, self.raises = answer, raises
        self.release = threading.Event()
        self.called = threading.Event()
        self.returned = threading.Event()

    def generate(self, prompt: str, system: str = "", max_tokens: int = 2048,
                 temperature: float = 0.2) -> str:
        self.called.set()
        try:
            self.release.wait(5)
            if self.raises is not None:
                raise self.raises
            return Answer(self.answer, GenerationStats(output_tokens=2, done_reason="stop"))
        finally:
            self.returned.set()

    def list_models(self) -> list[str]:
        return [self.model]


# -- streaming (Ollama) --------------------------------------------------------------------
def test_streaming_run_finishes_with_full_text_and_server_stats(
        ollama: OllamaBackend, fake_ollama: FakeOllama) -> None:
    run = start(ollama, ollama_request(fake_ollama.url))
    assert run.streams
    assert run.wait(timeout=5)

    assert run.done and run.status == Status.FINISHED and run.status_label == "Finished"
    assert run.error is None
    assert run.text == SAMPLE_ANSWER
    stats = run.stats
    assert stats.done_reason == "stop"
    assert stats.output_tokens == len(TOKENS)
    assert stats.prompt_tokens == prompt_tokens(chat_messages(PROMPT, SYSTEM))
    assert fake_ollama.prompt_counts == [stats.prompt_tokens]
    assert stats.server_load_s == pytest.approx(fake_ollama.load_durations_ns[0] / 1e9)
    assert stats.fragments == len(TOKENS)
    assert stats.total_time_s is not None and stats.total_time_s >= 0
    assert 0 <= run.elapsed < 5


def test_request_reaches_the_server_as_set(ollama: OllamaBackend,
                                           fake_ollama: FakeOllama) -> None:
    run = start(ollama, ollama_request(fake_ollama.url, max_tokens=321, temperature=0.7))
    assert run.wait(timeout=5)
    (body,) = fake_ollama.chat_requests
    assert body["messages"] == [{"role": "system", "content": SYSTEM},
                                {"role": "user", "content": PROMPT}]
    assert body["options"] == {"num_predict": 321, "temperature": 0.7, "num_ctx": 2048}


def test_status_is_running_and_partial_text_visible_before_the_end(
        ollama: OllamaBackend, fake_ollama: FakeOllama, script: Script) -> None:
    script.gate = threading.Event()  # the server holds the second token until the gate opens
    run = start(ollama, ollama_request(fake_ollama.url))
    try:
        assert wait_until(lambda: run.text != "")
        assert run.text == TOKENS[0]
        assert not run.done and run.status == Status.RUNNING and run.status_label == "Running"
        assert not run.wait(timeout=0.05)
    finally:
        script.gate.set()
    assert run.wait(timeout=5)
    assert run.status == Status.FINISHED and run.text == SAMPLE_ANSWER


def test_text_grows_while_running(ollama: OllamaBackend, fake_ollama: FakeOllama,
                                  script: Script) -> None:
    script.delay = 0.02  # ~0.7 s for the whole answer
    run = start(ollama, ollama_request(fake_ollama.url))
    seen: list[str] = []
    while not run.done:
        text = run.text
        if not seen or text != seen[-1]:
            seen.append(text)
        time.sleep(0.005)
    assert run.wait(timeout=5)
    partials = [text for text in seen if text and text != SAMPLE_ANSWER]
    assert len(partials) >= 3  # generous: ~35 tokens arrive 20 ms apart
    for earlier, later in itertools.pairwise(seen):
        assert later.startswith(earlier) and len(later) > len(earlier)
    assert all(SAMPLE_ANSWER.startswith(text) for text in seen)
    assert run.text == SAMPLE_ANSWER


def test_small_max_tokens_ends_with_status_length(ollama: OllamaBackend,
                                                  fake_ollama: FakeOllama) -> None:
    run = start(ollama, ollama_request(fake_ollama.url, max_tokens=5))
    assert run.wait(timeout=5)
    assert run.status == Status.LENGTH and run.status_label == status_label(Status.LENGTH)
    assert run.error is None
    assert run.text == "".join(TOKENS[:5])
    assert run.stats.done_reason == "length" and run.stats.output_tokens == 5


def test_stop_mid_stream_keeps_partial_text_and_hangs_up(
        ollama: OllamaBackend, fake_ollama: FakeOllama, script: Script) -> None:
    script.gate = threading.Event()  # never opened: the answer stalls after one token
    run = start(ollama, ollama_request(fake_ollama.url))
    assert wait_until(lambda: run.text != "")

    run.stop()
    assert run.wait(timeout=5)
    assert run.status == Status.STOPPED and run.status_label == "Stopped"
    assert run.error is None
    assert run.text == TOKENS[0]
    assert run.stats.done_reason == "cancelled"
    assert fake_ollama.client_closed.wait(2)
    assert len(fake_ollama.hangups) == 1


def test_stop_right_after_start_ends_the_run_as_stopped(
        ollama: OllamaBackend, fake_ollama: FakeOllama, script: Script) -> None:
    script.delay = 0.05
    run = start(ollama, ollama_request(fake_ollama.url))
    run.stop()
    assert run.wait(timeout=5)
    assert run.status == Status.STOPPED
    assert SAMPLE_ANSWER.startswith(run.text) and run.text != SAMPLE_ANSWER


def test_stop_and_stats_after_the_end_change_nothing(ollama: OllamaBackend,
                                                     fake_ollama: FakeOllama) -> None:
    run = start(ollama, ollama_request(fake_ollama.url))
    assert run.wait(timeout=5)
    elapsed = run.elapsed
    run.stop()
    run.stop()
    assert run.status == Status.FINISHED and run.text == SAMPLE_ANSWER
    assert run.elapsed == elapsed  # the clock stopped with the run


def test_error_status_before_the_stream(ollama: OllamaBackend, fake_ollama: FakeOllama,
                                        script: Script) -> None:
    script.status = 500
    run = start(ollama, ollama_request(fake_ollama.url))
    assert run.wait(timeout=5)
    assert run.status == Status.ERROR and run.status_label == "Error"
    assert isinstance(run.error, BackendStatusError)
    assert run.error.status_code == 500
    assert "model runner has unexpectedly stopped" in run.error.server_message
    assert run.text == ""
    assert run.stats.done_reason == "error"


def test_missing_model_is_a_model_not_found_error(fake_ollama: FakeOllama) -> None:
    backend = OllamaBackend(fake_ollama.url, model="qwen2:7b", read_timeout=10)
    run = start(backend, ollama_request(fake_ollama.url, model="qwen2:7b"))
    assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, ModelNotFoundError)
    assert "ollama pull qwen2:7b" in run.error.hint


def test_error_line_mid_stream_keeps_partial_text(ollama: OllamaBackend,
                                                  fake_ollama: FakeOllama,
                                                  script: Script) -> None:
    script.error_after = 4
    run = start(ollama, ollama_request(fake_ollama.url))
    assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, StreamError)
    assert run.error.partial_text == "".join(TOKENS[:4])
    assert run.text == "".join(TOKENS[:4])
    assert run.stats.done_reason == "error"


def test_dropped_connection_mid_stream_keeps_partial_text(ollama: OllamaBackend,
                                                         fake_ollama: FakeOllama,
                                                         script: Script) -> None:
    script.drop_after = 3
    run = start(ollama, ollama_request(fake_ollama.url))
    assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, TruncatedStreamError)
    assert run.text == "".join(TOKENS[:3])


def test_connection_refused_is_an_error_with_the_ollama_serve_hint(closed_port: int) -> None:
    host = f"http://127.0.0.1:{closed_port}"
    backend = OllamaBackend(host, model="llama3.1:8b", connect_timeout=2, read_timeout=2)
    run = start(backend, ollama_request(host))
    assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, BackendConnectionError)
    assert isinstance(run.error, ConnectionError)
    assert "ollama serve" in run.error.hint
    assert run.text == ""
    assert "ollama serve" in run.to_dict()["error"]


# -- one piece (vLLM and a controllable double) ----------------------------------------------
def test_one_piece_run_gets_the_whole_answer_at_once() -> None:
    with FakeVLLM(200, vllm_completion("  Install 31 panels.\n")) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=False)
        run = start(backend, RunRequest(backend="vllm", host=server.url, model="smollm2",
                                        system=SYSTEM, prompt=PROMPT))
        assert not run.streams
        assert run.wait(timeout=5)
    assert run.status == Status.FINISHED
    assert run.text == "Install 31 panels."
    assert run.stats.output_tokens == 7 and run.stats.prompt_tokens == 42


def test_one_piece_run_that_hits_max_tokens_has_status_length() -> None:
    with FakeVLLM(200, vllm_completion("Install 31", finish_reason="length")) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=False)
        run = start(backend, RunRequest(backend="vllm", host=server.url, model="smollm2",
                                        system=SYSTEM, prompt=PROMPT,
                                        sampling=Sampling(max_tokens=2)))
        assert run.wait(timeout=5)
    assert run.status == Status.LENGTH and run.text == "Install 31"


@pytest.mark.parametrize("sdk", [True, False], ids=["openai-sdk", "requests"])
def test_one_piece_missing_model_is_model_not_found(sdk: bool) -> None:
    with FakeVLLM(404, NOT_FOUND_NEW) as server:
        backend = VLLMBackend(server.url, model="llama-3-8b", use_openai_sdk=sdk)
        run = start(backend, RunRequest(backend="vllm", host=server.url, model="llama-3-8b",
                                        system=SYSTEM, prompt=PROMPT))
        assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, ModelNotFoundError)
    assert run.error.available == ["smollm2"]
    assert run.text == ""


def test_stop_on_a_waiting_one_piece_run_is_immediate() -> None:
    backend = SlowOnePiece()
    run = start(backend, RunRequest(backend="slow", host="local", model="slow-1",
                                    system=SYSTEM, prompt=PROMPT))
    assert backend.called.wait(2)
    assert not run.done and run.status == Status.RUNNING

    run.stop()
    assert run.done  # at once: the page need not wait for the server
    assert run.status == Status.STOPPED and run.text == ""
    assert run.stats.total_time_s is not None

    backend.release.set()  # the abandoned answer arrives later and is ignored
    assert backend.returned.wait(2)
    run._thread.join(2)  # let the worker finish its bookkeeping
    assert run.status == Status.STOPPED and run.text == "" and run.error is None


def test_unexpected_exception_in_a_backend_becomes_the_run_error() -> None:
    backend = SlowOnePiece(raises=KeyError("choices"))
    backend.release.set()
    run = start(backend, RunRequest(backend="slow", host="local", model="slow-1",
                                    system=SYSTEM, prompt=PROMPT))
    assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, BackendError)
    assert "Unexpected error: KeyError" in str(run.error)
    assert run.error.backend == "slow" and run.error.host == "local"


def test_malformed_200_body_from_a_real_backend_becomes_the_run_error() -> None:
    # A 200 with no "choices": the vLLM backend's parser raises KeyError, not a BackendError.
    with FakeVLLM(200, {"object": "list", "data": []}) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=False)
        run = start(backend, RunRequest(backend="vllm", host=server.url, model="smollm2",
                                        system=SYSTEM, prompt=PROMPT))
        assert run.wait(timeout=5)
    assert run.status == Status.ERROR
    assert isinstance(run.error, BackendError)
    assert "Unexpected error" in str(run.error)


# -- export --------------------------------------------------------------------------------
def test_to_dict_has_everything_and_is_json_serialisable(ollama: OllamaBackend,
                                                         fake_ollama: FakeOllama) -> None:
    request = ollama_request(fake_ollama.url)
    run = start(ollama, request)
    assert run.wait(timeout=5)

    data = json.loads(json.dumps(run.to_dict()))
    assert data["backend"] == "ollama"
    assert data["host"] == fake_ollama.url
    assert data["model"] == "llama3.1:8b"
    assert data["preset"] == "san-diego"
    assert data["system_prompt"] == SYSTEM and data["user_prompt"] == PROMPT
    assert data["parameters"] == {"max_tokens": 512, "temperature": 0.3, "repeat_penalty": None,
                                  "think": ""}
    assert data["answer"] == SAMPLE_ANSWER
    assert data["status"] == "finished" and data["error"] is None
    stats = data["statistics"]
    assert stats["output_tokens"] == len(TOKENS)
    assert stats["prompt_tokens"] == prompt_tokens(chat_messages(PROMPT, SYSTEM))
    assert stats["done_reason"] == "stop"
    assert stats["server_tokens_per_s"] > 0
    assert data["started_at"].endswith("+00:00")


def test_to_dict_of_a_failed_run_is_json_serialisable(ollama: OllamaBackend,
                                                      fake_ollama: FakeOllama,
                                                      script: Script) -> None:
    script.error_after = 2
    run = start(ollama, ollama_request(fake_ollama.url))
    assert run.wait(timeout=5)
    data = json.loads(json.dumps(run.to_dict()))
    assert data["status"] == "error"
    assert data["answer"] == "".join(TOKENS[:2])
    assert "Ollama stopped with an error" in data["error"]
    assert data["statistics"]["done_reason"] == "error"


# -- runs nobody watches, and the queue cap ------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_watcher_says_abandoned_only_after_the_grace_without_a_viewer() -> None:
    present, clock = [True], Clock()
    watcher = Watcher(lambda: present[0], grace_s=10, clock=clock)
    assert not watcher.abandoned()
    present[0] = False  # the tab closed
    assert not watcher.abandoned()
    clock.now += 9.9
    assert not watcher.abandoned()
    present[0] = True  # it reconnected within the grace: counted afresh next time
    assert not watcher.abandoned()
    present[0] = False
    clock.now += 5
    assert not watcher.abandoned()
    clock.now += 10
    assert watcher.abandoned()
    assert not Watcher(lambda: False, grace_s=0).abandoned()  # 0: never


def watched_recording(store: RunStore, user: str, watcher: Watcher) -> Recording:
    return Recording(store, "playground", user=user, watcher=watcher)


def test_a_run_nobody_watches_gives_its_slot_to_the_next(tmp_path: Path) -> None:
    """Ann's tab closes mid-run: her run stops (its text so far kept, the reason recorded)
    and Bob's queued run gets the slot, instead of waiting for her whole answer."""
    store = RunStore(str(tmp_path / "history.sqlite3"))
    capacity = Capacity(Limits(per_backend=1))
    present = threading.Event()
    present.set()
    with FakeOllama(script=Script(tokens=["word "] * 400, delay=0.05)) as server:
        request = ollama_request(server.url)
        ann = Run(OllamaBackend(server.url), request,
                  watched_recording(store, "ann", Watcher(present.is_set, grace_s=0.3)),
                  capacity=capacity).start()
        assert wait_until(lambda: ann.text)
        bob = Run(OllamaBackend(server.url), request,
                  watched_recording(store, "bob", Watcher(lambda: True, grace_s=0.3)),
                  capacity=capacity).start()
        assert bob.queue_position == 0
        present.clear()  # Ann's tab closed; nobody polls her run any more
        assert ann.wait(5) and ann.status == Status.STOPPED and ann.abandoned
        assert 0 < len(ann.text) < len("word " * 400)
        assert wait_until(lambda: bob.text, timeout=5)  # Bob's run got the slot
        bob.stop()
        assert bob.wait(5)
    stored = store.get(ann.run_id) if ann.run_id is not None else None
    assert stored is not None and stored.status == Status.STOPPED and stored.text == ann.text
    assert stored.error is not None and "tab closed" in stored.error
    assert capacity.running() == 0


def test_a_queued_run_nobody_watches_leaves_the_queue_having_sent_nothing(
        tmp_path: Path) -> None:
    capacity = Capacity(Limits(per_backend=1))
    with FakeOllama() as server:
        request = ollama_request(server.url)
        holder = capacity.enter(f"ollama {server.url}", "bob")
        present = threading.Event()
        present.set()
        recording = Recording(RunStore(str(tmp_path / "h.sqlite3")), "compare", user="ann",
                              watcher=Watcher(present.is_set, grace_s=0.2))
        run = Run(OllamaBackend(server.url), request, recording, capacity=capacity).start()
        assert run.queue_position == 0
        present.clear()
        assert run.wait(5) and run.status == Status.STOPPED and run.abandoned
        assert wait_until(lambda: run.queue_position is None)
        # A run its page starts after the tab has gone (a Compare round) never starts.
        later = Run(OllamaBackend(server.url), request, recording, capacity=capacity).start()
        assert later.done and later.status == Status.STOPPED and later.run_id is None
        capacity.leave(holder)
        assert wait_until(lambda: capacity.running() == 0)
        assert server.chat_requests == []


def test_a_batch_row_has_no_watcher_and_goes_on(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "history.sqlite3"))
    with FakeOllama(script=Script(tokens=["a", "b"], delay=0.05)) as server:
        run = Run(OllamaBackend(server.url), ollama_request(server.url),
                  Recording(store, "batch", user="ann")).start()
        assert run.wait(5) and run.status == Status.FINISHED and not run.abandoned


def test_a_run_over_the_users_queue_cap_is_refused_unsent_and_unrecorded(
        tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "history.sqlite3"))
    capacity = Capacity(Limits(per_backend=1, queued_per_user=1))
    with FakeOllama() as server:
        request = ollama_request(server.url)
        holder = capacity.enter(f"ollama {server.url}", "bob")
        watcher = Watcher(lambda: True, grace_s=10)
        queued = Run(OllamaBackend(server.url), request,
                     watched_recording(store, "ann", watcher), capacity=capacity).start()
        assert queued.queue_position == 0
        refused = Run(OllamaBackend(server.url), request,
                      watched_recording(store, "ann", watcher), capacity=capacity).start()
        assert refused.done and refused.status == Status.ERROR and refused.error is not None
        assert "app.max_queued_per_user" in refused.error.message
        assert refused.run_id is None and store.count_runs() == 1  # only the queued one
        queued.stop()
        capacity.leave(holder)
        assert queued.wait(5)
        assert server.chat_requests == []


def test_a_run_of_the_history_reopened_is_ended_as_recorded(tmp_path: Path) -> None:
    """History's Open in Playground: the stored run, done, never started, nothing sent."""
    store = RunStore(tmp_path / "history.sqlite3")
    request = RunRequest(backend="ollama", host="http://127.0.0.1:9", model="llama3.1:8b",
                         system="system", prompt="prompt",
                         sampling=Sampling(max_tokens=64, temperature=0.1),
                         preset="San Diego, CA")
    run_id = store.start_run(request, "playground")
    store.save_progress(run_id, "Install 12 pan", "Thinking about panels")
    store.finish_run(run_id, "Install 12 pan", Status.STOPPED, None,
                     {"output_tokens": 5, "total_time_s": 1.5, "prompt_tokens": 262,
                      "unknown_key": 1}, thinking="Thinking about panels")
    stored = store.get(run_id)
    assert stored is not None
    run = Run.reopened_from(stored)
    assert run.done and run.reopened and run.run_id == run_id
    assert (run.status, run.status_label) == (Status.STOPPED, "Stopped")
    assert (run.text, run.thinking) == ("Install 12 pan", "Thinking about panels")
    assert run.stats.prompt_tokens == 262 and run.stats.total_time_s == 1.5
    assert run.elapsed == pytest.approx(1.5)
    assert run.started_at.isoformat() == stored.created_at
    assert run.to_dict()["statistics"]["prompt_tokens"] == 262
    assert run.start() is run and run.done  # nothing runs
    errored = store.start_run(request, "playground")
    store.finish_run(errored, "", Status.ERROR, "Cannot reach Ollama. Make sure it runs.")
    failed = store.get(errored)
    assert failed is not None
    reopened = Run.reopened_from(failed)
    assert reopened.status == Status.ERROR and reopened.error is not None
    assert str(reopened.error) == "Cannot reach Ollama. Make sure it runs."
