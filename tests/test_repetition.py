"""The repetition guard (the runner stops every backend's stream when the answer loops, and
marks a one-piece answer that looped) and the repeat penalty each backend sends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backends.embedded_backend import EmbeddedBackend
from backends.ollama_backend import OllamaBackend
from backends.repetition import (
    MIN_REPEATS,
    TAIL,
    RepetitionGuard,
    guard_stream,
    mark_looping,
    repeating_unit,
)
from backends.sampling import Sampling
from backends.status import Status
from backends.vllm_backend import VLLMBackend
from studio.pv.library import load_locations
from studio.records.store import RunStore
from studio.runs.batch import Batch, BatchSpec
from studio.runs.request import RunRequest, status_label
from studio.runs.runner import Recording, Run
from tests.servers.ollama import SAMPLE_ANSWER, FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

LOOP_LINE = "- Monthly load: 2.24 kW/m²\n"
# What the embedded model answered on a fresh machine, cut short: the same line to the limit.
LOOPING_ANSWER = "## RECOMMENDATION\n\n" + LOOP_LINE * 300
PATHS = [pytest.param(True, id="openai-sdk"), pytest.param(False, id="requests")]


# -- spotting a loop ------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "intro\n" + LOOP_LINE * MIN_REPEATS,
    "intro\n" + "Step A\nStep B\nStep C\n" * MIN_REPEATS,  # a repeating block of lines
    "L'Étoile, " + "la femme, " * 25,  # a phrase looping inside one line
    "text\n" + LOOP_LINE * MIN_REPEATS + LOOP_LINE[:10],  # the next copy under way
])
def test_a_looping_tail_is_found(text: str) -> None:
    assert repeating_unit(text) is not None


@pytest.mark.parametrize("text", [
    SAMPLE_ANSWER,
    "intro\n" + LOOP_LINE * (MIN_REPEATS - 1),  # three times is not yet a loop
    "intro\n" + LOOP_LINE * 3 + "- Monthly load: 2.24 kW/m² in winter\n",
    "| Month | kWh | kW | $ |\n|---|---|---|---|\n| Jan | 1 | 2 | 3 |\n| Feb | 4 | 5 | 6 |\n",
    "".join(f"- Panel {n}: 400 W\n" for n in range(40)),  # a list of different items
    "End of report.\n\n\n\n\n\n",  # blank lines are no loop
    "ha ha ha ha",  # short in-line repetition is ordinary text
    "",
])
def test_ordinary_answers_are_not_loops(text: str) -> None:
    assert repeating_unit(text) is None


# -- the guard stops every backend's looping stream ------------------------------------------
def test_ollama_stream_that_loops_is_stopped_and_the_server_told() -> None:
    tokens = tokenize(LOOPING_ANSWER)
    with FakeOllama(script=Script(tokens=tokens, delay=0.002)) as server:
        stream = guard_stream(OllamaBackend(server.url, "llama3.1:8b").stream(
            "Size it.", sampling=Sampling(max_tokens=4096)))
        text = "".join(stream)
        assert server.client_closed.wait(5)  # the connection was closed: generation stops
    assert stream.stats.done_reason == Status.REPETITION
    assert text == stream.text and text.startswith("## RECOMMENDATION")
    assert text.count(LOOP_LINE) == MIN_REPEATS  # stopped at the first proof of a loop
    assert len(text) < len(LOOPING_ANSWER) / 10


def test_vllm_sse_stream_that_loops_is_stopped() -> None:
    with FakeVLLM(200, {}, tokens=tuple(tokenize(LOOPING_ANSWER)), token_delay=0.002) as server:
        stream = guard_stream(VLLMBackend(server.url, "smollm2").stream("Size it.", sse=True))
        text = "".join(stream)
    assert stream.stats.done_reason == Status.REPETITION
    assert text.count(LOOP_LINE) == MIN_REPEATS


@pytest.mark.parametrize("sdk", PATHS)
def test_vllm_one_piece_answer_that_looped_says_so(sdk: bool) -> None:
    body = completion(LOOPING_ANSWER, finish_reason="length", completion_tokens=4096)
    with FakeVLLM(200, body) as server:
        backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk)
        answer = backend.generate("Size it.")
        mark_looping(answer, answer.stats)
        stream = guard_stream(backend.stream("Size it."))
        (piece,) = list(stream)
    assert answer == LOOPING_ANSWER.strip()  # one piece: the whole text is kept
    assert answer.stats.done_reason == Status.REPETITION
    assert piece == LOOPING_ANSWER.strip() and stream.stats.done_reason == Status.REPETITION


def test_a_backends_stream_judges_no_text_itself() -> None:
    """The guard is the runner's policy: the transport hands over what the server sent."""
    with FakeOllama(script=Script(tokens=tokenize(LOOPING_ANSWER))) as server:
        stream = OllamaBackend(server.url, "llama3.1:8b").stream(
            "Size it.", sampling=Sampling(max_tokens=4096))
        text = "".join(stream)
    assert text == LOOPING_ANSWER and stream.stats.done_reason == "stop"


class _OnePieceOnly:
    """A backend with only the seed's ``generate()``: it answers whole."""

    name, model = "one-piece", "m"

    def generate(self, prompt: str, system: str = "", max_tokens: int = 2048,
                 temperature: float = 0.2) -> str:
        return LOOPING_ANSWER


@pytest.mark.parametrize("kind", ["ollama", "vllm-sse", "vllm-one-piece", "generate-only"])
def test_the_runner_guards_every_backends_answer(kind: str) -> None:
    body = completion(LOOPING_ANSWER, finish_reason="length", completion_tokens=4096)
    tokens = tuple(tokenize(LOOPING_ANSWER))
    with FakeOllama(script=Script(tokens=list(tokens))) as ollama, \
            FakeVLLM(200, body, tokens=tokens) as vllm:
        backend: Any = {"ollama": OllamaBackend(ollama.url, "llama3.1:8b"),
                        "vllm-sse": VLLMBackend(vllm.url, "smollm2"),
                        "vllm-one-piece": VLLMBackend(vllm.url, "smollm2"),
                        "generate-only": _OnePieceOnly()}[kind]
        server = ollama.url if kind == "ollama" else vllm.url
        request = RunRequest(backend=kind.partition("-")[0], host=server, model=backend.model,
                             system="", prompt="Size it.", sse=kind == "vllm-sse")
        run = Run(backend, request).start()
        assert run.wait(10)
    assert run.status == Status.REPETITION and run.stats.done_reason == Status.REPETITION
    assert run.text.startswith("## RECOMMENDATION")
    whole = kind in ("vllm-one-piece", "generate-only")  # one piece: all of it is kept
    assert run.text.count(LOOP_LINE.strip()) == (300 if whole else MIN_REPEATS)


def test_a_looping_run_is_recorded_with_stop_reason_repetition(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    with FakeOllama(script=Script(tokens=tokenize(LOOPING_ANSWER))) as server:
        request = RunRequest(backend="ollama", host=server.url, model="llama3.1:8b",
                             system="", prompt="Size it.")
        run = Run(OllamaBackend(server.url, "llama3.1:8b"), request,
                  Recording(store, "playground")).start()
        assert run.wait(10)
    assert run.status == Status.REPETITION and status_label(run.status) == "Repetition"
    assert run.text.count(LOOP_LINE) == MIN_REPEATS
    assert run.run_id is not None
    stored = store.get(run.run_id)
    assert stored is not None
    assert (stored.status, stored.text) == (Status.REPETITION, run.text)
    assert stored.stats["done_reason"] == Status.REPETITION


def test_a_looping_batch_row_counts_as_answered(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    with FakeOllama(script=Script(tokens=tokenize(LOOPING_ANSWER))) as server:
        spec = BatchSpec(scenarios=load_locations()[:2], backend="ollama", host=server.url,
                         model="llama3.1:8b", system="", concurrency=2)
        group = store.create_group("batch", spec=spec.to_json())
        batch = Batch(spec, build=lambda: OllamaBackend(server.url, "llama3.1:8b"),
                      recording=lambda row: Recording(store, "batch", group, row),
                      group_id=group).start()
        assert batch.wait(20)
    assert [row.status for row in batch.rows] == [Status.REPETITION, Status.REPETITION]
    assert batch.progress()["done"] == 2
    assert [run.status for run in store.group_runs(group)] == [Status.REPETITION, Status.REPETITION]


# -- the repeat penalty on the wire ---------------------------------------------------------
def test_ollama_sends_repeat_penalty_only_when_set(fake_ollama: FakeOllama,
                                                   ollama: OllamaBackend) -> None:
    ollama.generate("hi", max_tokens=3)
    ollama.stream("hi", sampling=Sampling(max_tokens=3, repeat_penalty=1.3)).read_all()
    default, set_ = (request["options"] for request in fake_ollama.chat_requests)
    assert "repeat_penalty" not in default  # Ollama's own default (1.1) applies
    assert set_["repeat_penalty"] == 1.3


@pytest.mark.parametrize("sdk", PATHS)
def test_vllm_sends_repetition_penalty_only_when_set(sdk: bool) -> None:
    with FakeVLLM(200, completion("ok")) as server:
        backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=sdk)
        backend.generate("hi")
        backend.complete("hi", sampling=Sampling(repeat_penalty=1.2))
        list(backend.stream("hi", sampling=Sampling(repeat_penalty=1.2), sse=True))
    default, set_, streamed = server.chat_requests
    assert "repetition_penalty" not in default
    assert set_["repetition_penalty"] == 1.2 and streamed["repetition_penalty"] == 1.2


def test_embedded_uses_ollamas_default_penalty_unless_told() -> None:
    embedded = EmbeddedBackend()
    prompt = "List ten facts about solar panels, one per line."
    default = embedded.generate(prompt, max_tokens=48, temperature=0.0)
    explicit = embedded.stream(prompt, sampling=Sampling(max_tokens=48, temperature=0.0,
                                                         repeat_penalty=1.1)).read_all()
    assert default and default == explicit  # None means 1.1 over the last 64 tokens


def test_a_check_reads_only_the_tail_so_long_answers_stay_cheap() -> None:
    """The guard keeps a bounded tail: its memory does not grow with the answer, and a loop
    at the end of a long answer is still found."""
    guard = RepetitionGuard()
    varied = [f" w{index}" for index in range(40_000)]  # no unit repeats four times
    assert not any(guard.feed(fragment) for fragment in varied)
    assert len(guard._tail) <= 2 * TAIL
    assert any(guard.feed(fragment) for fragment in tokenize(LOOP_LINE * MIN_REPEATS))
