"""The Evaluation engine (studio/runs/evaluation.py) against real HTTP servers on 127.0.0.1.

Choices on two servers run at the same time and two on one server in turn (the vLLM-like
tests/servers/latency.py and the Ollama-like tests/servers/ollama.py); taking turns on an
Ollama that keeps one model loaded meets one cold start per model, where alternating meets one
per cell; Stop and a SIGKILL resume without asking for any cell twice; the scorecard's
arithmetic is checked by hand on rows made for it; the matrix, the exports, reopen and the
stored definition.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from backends import Backend
from backends.errors import BackendConnectionError
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.stream import GenerationStats
from backends.vllm_backend import VLLMBackend
from studio.pv.checks import CHECK_COLUMNS, CHECK_DEFINITIONS, AnswerCheck
from studio.pv.figures import FigureReport, Grade, Verdict
from studio.pv.grounding import Figure, GroundingReport
from studio.pv.library import load_locations
from studio.pv.location import Location
from studio.pv.prompt import SEED_ORDER, build_user_prompt
from studio.pv.quantities import Quantity
from studio.pv.structured import SCHEMA
from studio.records.spreadsheet import FORMULA_STARTS
from studio.records.store import RunStore
from studio.runs.batch import Batch, BatchRow
from studio.runs.evaluation import (
    DEFINITIONS,
    STAR,
    Better,
    Choice,
    ChoiceResult,
    Evaluation,
    EvaluationRunning,
    EvaluationSpec,
    LiveEvaluations,
    Scorecard,
    ScoreRow,
    busy_time,
    cell_line,
    evaluation_state,
    launch,
    matrix_rows,
    reopen,
    row_timings,
    schedule,
    schedule_lines,
)
from studio.runs.request import ANSWERED, AnswerFormat, Outcome, RunParams, RunRequest
from studio.runs.serving import (
    DEFAULT_PERCENTILES,
    RequestTiming,
    ServiceLevels,
    serving_metrics,
)
from tests.conftest import wait_until
from tests.servers import structured
from tests.servers.latency import Fail, LatencyServer
from tests.servers.ollama import FakeOllama, Script, tag_digest

ROOT = Path(__file__).resolve().parents[1]
MODEL = "smollm2"
SYSTEM = "You are a PV sizing analyst."
LOCATIONS = load_locations()
SAMPLING = Sampling(max_tokens=256, temperature=0.2)
LLAMA, MISTRAL = "llama3.1:8b", "mistral:7b"


def vllm(url: str, model: str = MODEL, concurrency: int = 1, **fields: Any) -> Choice:
    return Choice(backend="vllm", host=url, model=model, sampling=SAMPLING,
                  concurrency=concurrency, **fields)


def ollama(url: str, model: str = LLAMA, concurrency: int = 1) -> Choice:
    return Choice(backend="ollama", host=url, model=model, sampling=SAMPLING,
                  concurrency=concurrency)


def build(choice: Choice) -> Backend:
    if choice.backend == "ollama":
        return OllamaBackend(choice.host, model=choice.model, read_timeout=10)
    return VLLMBackend(choice.host, model=choice.model, read_timeout=10)


def make_spec(choices: Sequence[Choice], scenarios: Sequence[Location],
              **fields: Any) -> EvaluationSpec:
    return EvaluationSpec(choices=tuple(choices), scenarios=list(scenarios), system=SYSTEM,
                          **fields)


def run_to_end(evaluation: Evaluation, timeout: float = 30.0) -> Evaluation:
    assert evaluation.start().wait(timeout), "the evaluation did not finish"
    return evaluation


def answered(evaluation: Evaluation, choice: int) -> int:
    return sum(row.status in ANSWERED for row in evaluation.cells(choice))


def score_row(card: Scorecard, name: str) -> ScoreRow:
    (row,) = [row for row in card.rows if row.name == name or row.name.startswith(name)]
    return row


# -- scheduling -----------------------------------------------------------------------------
def test_choices_on_two_servers_run_at_the_same_time() -> None:
    """Each choice alone takes 3 x 1 s; both at once take about that, not the sum (seconds
    of latency, so that a busy machine's overhead does not decide)."""
    latency, rows = 1.0, 3
    with LatencyServer(latency=latency) as first, LatencyServer(latency=latency) as second:
        spec = make_spec([vllm(first.url), vllm(second.url)], LOCATIONS[:rows])
        evaluation = run_to_end(Evaluation(spec, build=build))
    assert [answered(evaluation, choice) for choice in (0, 1)] == [rows, rows]
    alone = rows * latency
    wall = evaluation.wall_s
    assert wall is not None
    assert 0.9 * alone <= wall <= 0.75 * (2 * alone), wall  # one choice's time, not two
    # Each server was answering while the other was: their requests interleave in time.
    firsts = [min(min(times) for times in server.arrivals.values())
              for server in (first, second)]
    lasts = [max(max(times) for times in server.arrivals.values())
             for server in (first, second)]
    assert firsts[1] < lasts[0] and firsts[0] < lasts[1]
    assert len(schedule(spec.choices)) == 2


def test_two_choices_on_one_server_take_turns() -> None:
    """Two models on one vLLM-like server, 2 requests in flight each: the server never sees
    more than 2 at once, and every request of choice 2 comes after the last of choice 1.
    Run as two batches at once, the same work has 4 at the server."""
    rows = 4
    with LatencyServer(latency=0.2, served=("a", "b")) as server:
        spec = make_spec([vllm(server.url, "a", 2), vllm(server.url, "b", 2)],
                         LOCATIONS[:rows])
        evaluation = run_to_end(Evaluation(spec, build=build))
    assert [answered(evaluation, choice) for choice in (0, 1)] == [rows, rows]
    assert server.max_seen <= 2  # one choice's concurrency at a time, never both choices'
    assert all(len(times) == 2 for times in server.arrivals.values())
    assert max(times[0] for times in server.arrivals.values()) < min(
        times[1] for times in server.arrivals.values())
    with LatencyServer(latency=0.2, served=("a", "b")) as other:
        batches = [Batch(replace(spec.batch_spec(index), host=other.url),
                         build=partial(build, replace(choice, host=other.url))).start()
                   for index, choice in enumerate(spec.choices)]
        assert all(batch.wait(20) for batch in batches)
    assert other.max_seen == 4  # what taking turns avoided


def test_schedule_of_two_models_on_one_ollama() -> None:
    url = "http://127.0.0.1:11434"
    spec = make_spec([ollama(url, LLAMA), ollama(url, MISTRAL), vllm("http://gpu:8000")],
                     LOCATIONS[:2])
    lanes = schedule(spec.choices)
    assert [lane.choices for lane in lanes] == [(0, 1), (2,)]
    assert "2 models on one Ollama would make it load them back and forth" in lanes[0].reason
    assert "cold start" in lanes[0].reason and lanes[1].reason == ""
    assert [lane.reloads for lane in lanes] == [True, False]
    assert schedule_lines(spec) == [
        f"Choices 1, 2 (Ollama at {url}) run one after the other: {lanes[0].reason}.",
        "Choice 3 (vLLM at http://gpu:8000) runs on its own server, at the same time as the "
        "others."]


def test_schedule_of_the_same_model_twice() -> None:
    """The same model with other settings: no reload between them, but one server's load
    would slow the other's figures."""
    url = "http://127.0.0.1:11434"
    hot = replace(ollama(url), sampling=replace(SAMPLING, temperature=0.9))
    for choices in ([ollama(url), hot], [vllm(url), vllm(url, concurrency=4)]):
        (lane,) = schedule(choices)
        assert lane.choices == (0, 1)
        assert "load them back and forth" not in lane.reason and not lane.reloads
        assert lane.reason == ("one server: a choice's requests would slow the other's "
                               "figures, so they take turns")


def test_schedule_of_an_embedded_pair() -> None:
    """Two embedded models, whatever host each says: one process, which keeps every model
    it loaded (no reload back and forth) and shares its CPU cores: they take turns."""
    pair = [Choice(backend="embedded", host="", model="SmolLM2-135M-Instruct.Q4_1"),
            Choice(backend="embedded", host="in process", model="/models/other.gguf")]
    (lane,) = schedule(pair)
    assert lane.choices == (0, 1)
    assert "back and forth" not in lane.reason
    assert "same CPU cores" in lane.reason and not lane.reloads
    spec = make_spec(pair, LOCATIONS[:1])
    (line,) = schedule_lines(spec)
    assert line.startswith("Choices 1, 2 (Embedded (SmolLM2)) run one after the other: they "
                           "run in this app's process")
    # Nor is a reload at every switch what running them at once would have cost.
    (cold,) = Evaluation(spec, build=build).cold_start_lines()
    assert cold == "Embedded (SmolLM2): choices 1, 2 took turns; 0 cold starts met " \
                   "(choice 1: 0, choice 2: 0)."


def test_schedule_lines_never_show_credentials() -> None:
    spec = make_spec([ollama("http://ana:s3cret@10.0.0.5:11434", LLAMA),
                      ollama("http://10.0.0.5:11434", MISTRAL),
                      vllm("https://bob:hunter2@gpu.example:8000")], LOCATIONS[:1])
    lines = schedule_lines(spec)
    text = "\n".join(lines)
    assert "s3cret" not in text and "hunter2" not in text and "@" not in text
    # The same server with and without credentials is one server: one lane.
    assert lines[0].startswith("Choices 1, 2 (Ollama at http://10.0.0.5:11434)")
    assert "vLLM at https://gpu.example:8000" in lines[1]


def test_a_waiting_choice_says_what_it_waits_for_and_when_it_starts() -> None:
    with LatencyServer(latency=0.3, served=("a", "b", "c")) as server:
        spec = make_spec([vllm(server.url, "a"), vllm(server.url, "b"),
                          vllm(server.url, "c")], LOCATIONS[:4])
        evaluation = Evaluation(spec, build=build).start()
        assert wait_until(lambda: answered(evaluation, 0) >= 1, 10)
        assert evaluation.cells(0)[-1].status != Status.FINISHED
        waits, third = evaluation.choice_progress(1)[1], evaluation.choice_progress(2)[1]
        starts_in = evaluation.starts_in(1)
        assert evaluation.waits_for(1) == 0 and evaluation.waits_for(2) == 1
        evaluation.stop()
        assert evaluation.wait(10)
    # Choice 1 has 3 cells of ~0.3 s left: its pace so far says about 0.9 s (generous
    # bounds: a loaded machine slows the first cell).
    assert starts_in is not None and 0.3 < starts_in <= 3.0, starts_in
    assert re.match(r"waits for choice 1 \(same server\), starts in about \d+ s · 0 done",
                    waits), waits
    # Choice 3 waits for two: the second has no pace yet, so no start time is promised.
    assert third.startswith("waits for choices 1 and 2 (same server) · 0 done"), third
    assert evaluation.starts_in(2) is None
    assert evaluation.choice_progress(2)[1].endswith(" · not started")


def test_a_choice_whose_backend_cannot_be_built_fails_every_cell_and_the_others_run() -> None:
    """Whatever the builder raises (a missing model file, a bad config value), the choice's
    cells fail with its message, without the host's credentials; the other choices run."""
    problems: list[Exception] = [
        FileNotFoundError("no such file: /models/missing.gguf"),
        ValueError("bad port in http://ana:s3cret@127.0.0.1:99999"),
        BackendConnectionError("Cannot reach vLLM at http://127.0.0.1:9."),
    ]
    for problem in problems:
        def builder(choice: Choice, problem: Exception = problem) -> Backend:
            if choice.model == "broken":
                raise problem
            return build(choice)

        with LatencyServer(latency=0.05) as server:
            spec = make_spec([vllm("http://ana:s3cret@127.0.0.1:9", "broken"),
                              vllm(server.url)], LOCATIONS[:3])
            evaluation = run_to_end(Evaluation(spec, build=builder), 20)
        assert [row.status for row in evaluation.cells(0)] == [Status.FAILED] * 3
        assert [row.status for row in evaluation.cells(1)] == [Status.FINISHED] * 3
        for row in evaluation.cells(0):
            assert str(problem).replace("ana:s3cret@", "") in row.error
            assert "s3cret" not in row.error
        assert evaluation.scorecard().results[0].metrics is None  # nothing was sent


# -- cold starts ----------------------------------------------------------------------------
def chat(server: FakeOllama, model: str) -> float:
    answer = OllamaBackend(server.url, model=model, read_timeout=10).generate("Hello", SYSTEM)
    return answer.stats.server_load_s or 0.0


def test_fake_ollama_keeps_at_most_max_loaded_models() -> None:
    """OLLAMA_MAX_LOADED_MODELS: loading one more unloads an idle model, the least recently
    used; without a limit (the default) every model stays."""
    models = (LLAMA, MISTRAL, "qwen3:8b")
    script = Script(tokens=["Install", " 12", " panels."])
    with FakeOllama(models, script) as unlimited:
        for model in (LLAMA, MISTRAL, LLAMA, MISTRAL):
            chat(unlimited, model)
    assert [model for model, _ in unlimited.loads] == [LLAMA, MISTRAL]
    assert unlimited.evictions == [] and unlimited.max_loaded is None
    with FakeOllama(models, script, max_loaded=1, reload_delay=0.05) as one:
        loads = [chat(one, model) for model in (LLAMA, MISTRAL, LLAMA, LLAMA)]
        assert [entry["name"] for entry in one.ps()] == [LLAMA]
    assert [model for model, _ in one.loads] == [LLAMA, MISTRAL, LLAMA]
    assert one.evictions == [LLAMA, MISTRAL]
    assert all(load >= 0.05 for load in loads[:3]) and loads[3] < 0.05  # load_duration
    with FakeOllama(models, script, max_loaded=2) as two:
        for model in (LLAMA, MISTRAL, LLAMA, "qwen3:8b", LLAMA):
            chat(two, model)
    assert two.evictions == [MISTRAL]  # the least recently used, not the first loaded
    assert [model for model, _ in two.loads] == [LLAMA, MISTRAL, "qwen3:8b"]


def test_a_busy_model_is_unloaded_only_once_its_chat_ends() -> None:
    """A chat for another model waits for the one in flight, as Ollama's scheduler does."""
    gate = threading.Event()
    script = Script(tokens=["Install", " 12", " panels."], gate=gate)
    with FakeOllama(script=script, max_loaded=1) as server:
        backend = OllamaBackend(server.url, model=LLAMA, read_timeout=10)
        held = backend.stream("Hello", SYSTEM)
        first = next(iter(held))  # the first line came; the second waits for the gate
        assert first
        waiting = threading.Thread(target=chat, args=(server, MISTRAL))
        waiting.start()
        time.sleep(0.3)
        assert server.evictions == [] and [m for m, _ in server.loads] == [LLAMA]
        gate.set()
        held.read_all()
        waiting.join(10)
    assert server.evictions == [LLAMA]
    assert [model for model, _ in server.loads] == [LLAMA, MISTRAL]


def test_taking_turns_meets_one_cold_start_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two models on an Ollama that keeps one loaded: in turn, each loads once (1 and 1 in
    the scorecard); the same two run as two batches at once reload at nearly every switch.
    A load takes 0.3 s here; cold starts are loads over 0.15 s (the app's threshold is 1 s,
    for real models)."""
    monkeypatch.setattr("backends.stream.COLD_START_S", 0.15)
    rows = 3
    script = Script(tokens=["Install", " 12", " panels."])
    with FakeOllama(script=script, max_loaded=1, reload_delay=0.3) as server:
        spec = make_spec([ollama(server.url, LLAMA), ollama(server.url, MISTRAL)],
                         LOCATIONS[:rows])
        evaluation = run_to_end(Evaluation(spec, build=build))
    assert [answered(evaluation, choice) for choice in (0, 1)] == [rows, rows]
    assert [body["model"] for body in server.chat_requests] == [LLAMA] * rows + [MISTRAL] * rows
    assert [model for model, _ in server.loads] == [LLAMA, MISTRAL]
    card = evaluation.scorecard()
    cold = score_row(card, "Cold starts")
    assert cold.shown == ("1", "1") and cold.values == (1, 1)
    assert [row.notes for row in evaluation.cells(0)] == ["cold start", "", ""]
    (line,) = evaluation.cold_start_lines()
    assert "2 cold starts met (choice 1: 1, choice 2: 1)" in line
    assert f"up to {2 * rows} cold starts" in line

    # What alternating would have cost: the same two choices as two batches at once.
    with FakeOllama(script=script, max_loaded=1, reload_delay=0.3) as fresh:
        batches = [Batch(replace(spec.batch_spec(index), host=fresh.url),
                         build=partial(build, replace(choice, host=fresh.url))).start()
                   for index, choice in enumerate(spec.choices)]
        assert all(batch.wait(30) for batch in batches)
    assert all(row.status == Status.FINISHED for batch in batches for row in batch.rows)
    met = sum(row.outcome.stats.cold_start for batch in batches for row in batch.rows)
    assert len(fresh.loads) >= 2 * rows - 2 and met >= 2 * rows - 2, (fresh.loads, met)
    assert len(fresh.loads) > 2 * len(server.loads)


# -- stop and resume ------------------------------------------------------------------------
def answered_positions(store: RunStore, group: int) -> Counter[int]:
    return Counter(run.position for run in store.group_runs(group) if run.status in ANSWERED)


def test_stop_keeps_answered_cells_and_a_resume_runs_the_rest(tmp_path: Path) -> None:
    """Stopped while choice 1 runs (choice 2, on the same server, not started): the answered
    cells stay; the resume runs the others, choice 2 whole, and no position twice. The pause
    between the stop and the resume is not in the figures' duration."""
    store = RunStore(tmp_path / "history.sqlite3")
    rows = 5
    with LatencyServer(latency=0.3, served=("a", "b")) as server:
        spec = make_spec([vllm(server.url, "a"), vllm(server.url, "b")], LOCATIONS[:rows])
        live = LiveEvaluations()  # the process's: other sessions watch it there
        evaluation = launch(spec, build=build, store=store, live=live)
        group = evaluation.group_id
        assert group is not None
        assert wait_until(lambda: answered(evaluation, 0) >= 2, 10)
        assert live.get(group) is evaluation
        with pytest.raises(EvaluationRunning):  # running: watched, never resumed twice
            launch(spec, build=build, store=store, group_id=group, live=live)
        evaluation.stop()
        assert evaluation.wait(10)
        assert live.get(group) is None
        kept = {row.index: row.text for row in evaluation.cells(0) if row.status in ANSWERED}
        assert 2 <= len(kept) < rows
        assert all(row.status == Status.PENDING for row in evaluation.cells(1))
        assert evaluation.choice_progress(1)[1].endswith("not started")
        (summary,) = store.group_summaries("evaluation")
        assert evaluation_state(summary) == Status.STOPPED
        assert set(answered_positions(store, group)) == set(kept)
        asked_before = sum(server.answered.values())
        time.sleep(1.0)  # the pause

        stored = store.get_group(group)
        assert stored is not None
        resumed = launch(EvaluationSpec.from_json(stored.spec).with_hosts([server.url]),
                         build=build, store=store, group_id=group)
        assert resumed.wait(30)
    assert wait_until(lambda: len(answered_positions(store, group)) == spec.cells, 5)
    positions = answered_positions(store, group)
    assert set(positions) == set(range(spec.cells))
    assert set(positions.values()) == {1}  # no position answered twice
    assert sum(server.answered.values()) == spec.cells  # no cell asked for twice
    assert sum(server.answered.values()) - asked_before == spec.cells - len(kept)
    assert all(resumed.cell(0, index).resumed and resumed.cell(0, index).text == text
               for index, text in kept.items())
    assert all(row.status == Status.FINISHED for row in resumed.cells(1))
    (summary,) = store.group_summaries("evaluation")
    assert evaluation_state(summary) == Status.COMPLETE
    # Choice 1's requests ran before and after a pause of 1 s: its duration leaves it out.
    timings, duration = row_timings(resumed.cells(0))
    assert duration is not None and len(timings) == rows
    starts = [row.started_at for row in resumed.cells(0) if row.started_at is not None]
    span = (max(starts) - min(starts)).total_seconds() + 0.3
    assert span >= 1.0 + rows * 0.3 * 0.9
    assert duration <= span - 0.8, (duration, span)


def test_killed_mid_evaluation_resumes_without_asking_twice(tmp_path: Path) -> None:
    """A separate app process runs an evaluation on two servers and is SIGKILLed once 4
    cells are in the history: the evaluation reads interrupted; resumed, every cell is
    answered once and the servers are not asked again for the answered ones."""
    db, rows = tmp_path / "history.sqlite3", 8
    with LatencyServer(latency=0.3) as first, LatencyServer(latency=0.3) as second:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.evaluation_child", str(db), first.url, second.url,
             MODEL, str(rows), "2"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert line.startswith("group "), line + (child.stderr.read() if child.stderr
                                                      else "")
            group = int(line.split()[1])
            store = RunStore(db)
            assert wait_until(lambda: sum(answered_positions(store, group).values()) >= 4,
                              timeout=20)
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == -signal.SIGKILL

        (summary,) = store.group_summaries("evaluation")
        assert summary.group.id == group and not summary.running
        assert evaluation_state(summary) == Status.INTERRUPTED
        spec = EvaluationSpec.from_json(summary.group.spec)
        before = set(answered_positions(store, group))
        assert 4 <= len(before) < spec.cells
        servers = (first, second)
        asked_before = [Counter(server.requests) for server in servers]
        resumed = launch(spec, build=build, store=store, group_id=group)
        assert resumed.wait(30)

    assert spec.cells == 2 * rows
    for position in range(spec.cells):
        choice, index = spec.cell_of(position)
        row, name = resumed.cell(choice, index), spec.scenarios[index].name
        assert row.status == Status.FINISHED, (position, row.status, row.error)
        if position in before:
            assert row.resumed
            assert servers[choice].requests[name] == asked_before[choice][name] == 1
        else:
            assert servers[choice].requests[name] == asked_before[choice][name] + 1
    assert wait_until(lambda: set(answered_positions(store, group)) == set(range(spec.cells)), 5)
    assert set(answered_positions(store, group).values()) == {1}
    (summary,) = store.group_summaries("evaluation")
    assert evaluation_state(summary) == Status.COMPLETE


# -- the scorecard by hand ------------------------------------------------------------------
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
QUANTITIES = list(Quantity)[:4]


def check(right: int, asked: int = 4, grounded: tuple[int, int] | None = None,
          not_graded: str | None = None) -> AnswerCheck:
    """A figure check of ``right`` of ``asked``, and ``grounded`` (found, of) figures."""
    grades = [Grade(quantity, Verdict.RIGHT if index < right else Verdict.WRONG, 1.0)
              for index, quantity in enumerate(QUANTITIES[:asked])]
    found, of = grounded or (0, 0)
    figures = [Figure(str(index), float(index), 0, 1, index < found) for index in range(of)]
    return AnswerCheck(FigureReport(grades, not_graded), GroundingReport(figures, not_graded))


def made_row(index: int, status: Status, *, start: float | None = None,
             chunks: Sequence[float] = (), total: float | None = None,
             tokens: int | None = None, graded: AnswerCheck | None = None, text: str = "",
             location: Location | None = None, structured_answer: bool = False,
             **stats: Any) -> BatchRow:
    """A cell as a run leaves it: its status, its run's statistics (chunk times, the time it
    took, the server's token count), its check, and when it started (seconds after T0)."""
    where = location or LOCATIONS[index % len(LOCATIONS)]
    params = vllm("http://127.0.0.1:8000", answer_format=AnswerFormat.STRUCTURED
                  if structured_answer else AnswerFormat.MARKDOWN)
    spec = make_spec([params, params], [where])
    request = spec.batch_spec(0).request(where)
    run_status = Status.ERROR if status == Status.FAILED else status
    statistics = GenerationStats(  # as a run records them (cold_start among the derived)
        chunk_times_s=list(chunks), last_chunk_s=chunks[-1] if chunks else None,
        chunks=len(chunks), total_time_s=total, output_tokens=tokens, **stats).to_dict()
    return BatchRow(index, where, request, status=status,
                    outcome=Outcome(run_status, text, "", "HTTP 500" if run_status ==
                                    Status.ERROR else None, statistics),
                    check=graded, started_at=None if start is None
                    else T0 + timedelta(seconds=start),
                    error="HTTP 500" if status == Status.FAILED else "")


def first_choice() -> list[BatchRow]:
    return [
        made_row(0, Status.FINISHED, start=0.0, chunks=[0.5, 0.6, 0.8, 1.0], total=1.1,
                 tokens=100, graded=check(3, grounded=(3, 4)), text="a", server_load_s=2.0),
        made_row(1, Status.LENGTH, start=0.5, chunks=[0.2, 0.4, 0.6], total=0.7, tokens=256,
                 graded=check(2, grounded=(2, 3)), text="b"),
        made_row(2, Status.REPETITION, start=3.0, chunks=[0.3], total=0.4, tokens=50,
                 graded=check(0), text="c"),
        made_row(3, Status.FINISHED, start=4.0, chunks=[0.1, 0.2], total=0.3, tokens=80,
                 graded=check(1, grounded=(1, 1), not_graded="prompt cut by the server"),
                 text="d", prompt_truncated=True),
        made_row(4, Status.FAILED, start=5.0, total=0.2),
        made_row(5, Status.STOPPED, start=6.0, chunks=[0.1], total=0.5, tokens=9, text="e"),
        made_row(6, Status.PENDING),
    ]


def by_hand() -> tuple[list[RequestTiming], float]:
    """first_choice()'s requests as vLLM's client would have them, and their duration:
    the union of [0, 1.1], [0.5, 1.2], [3.0, 3.4], [4.0, 4.3] and [5.0, 5.2]."""
    return [
        RequestTiming(True, 0.5, (0.1, 0.2, 0.2), 1.0, 100, start_s=0.0, first_answer_s=None),
        RequestTiming(True, 0.2, (0.2, 0.2), 0.6, 256, start_s=0.5),
        RequestTiming(True, 0.3, (), 0.3, 50, start_s=3.0),
        RequestTiming(True, 0.1, (0.1,), 0.2, 80, start_s=4.0),
        RequestTiming(False, start_s=5.0),
    ], 1.2 + 0.4 + 0.3 + 0.2


def test_the_counts_and_checks_of_a_choice_by_hand() -> None:
    result = ChoiceResult.of(first_choice(), ServiceLevels())
    assert (result.answered, result.failed, result.length, result.repetition) == (4, 1, 1, 1)
    assert (result.prompt_cut, result.cold_starts) == (1, 1)
    # Figures right over the graded answers only (row 3's prompt was cut: not graded).
    assert (result.right, result.asked) == (3 + 2 + 0, 12)
    # Grounding: the mean of the answers' scores that exist (row 2 states no figure).
    assert result.grounding == pytest.approx((3 / 4 + 2 / 3) / 2)
    card = Scorecard.of(["1. a", "2. b"], [result, ChoiceResult.of(first_choice()[:1],
                                                                   ServiceLevels())],
                        ServiceLevels())
    assert score_row(card, "Answered").shown == ("4", "1")
    assert score_row(card, "Failed").shown == ("1", "0")
    assert score_row(card, "Hit max tokens").shown == ("1", "0")
    assert score_row(card, "Stopped by the repetition guard").shown == ("1", "0")
    assert score_row(card, "Prompt cut by the server").shown == ("1", "0")
    assert score_row(card, "Cold starts").shown == ("1", "1")
    assert score_row(card, "Figures right").shown == ("5 of 12 (42%)", "3 of 4 (75%)")
    assert score_row(card, "Grounding").shown == ("71%", "75%")
    assert not any(row.name == "Valid structured" for row in card.rows)  # markdown only


def test_the_serving_figures_are_vllms_over_the_same_requests() -> None:
    timings, duration = by_hand()
    assert busy_time([(0, 1.1), (0.5, 1.2), (3.0, 3.4), (4.0, 4.3), (5.0, 5.2)]) == \
        pytest.approx(duration)
    made, made_duration = row_timings(first_choice())
    assert made_duration == pytest.approx(duration)
    assert len(made) == len(timings)
    for ours, theirs in zip(made, timings, strict=True):  # the gaps, to float rounding
        # The chunk count stands by for a missing server count: these have the server's.
        assert replace(ours, itl_s=(), estimated_output_tokens=None) == \
            replace(theirs, itl_s=())
        assert ours.output_len == theirs.output_len
        assert ours.itl_s == pytest.approx(theirs.itl_s)
    levels = ServiceLevels(ttft_ms=400)
    result = ChoiceResult.of(first_choice(), levels)
    assert result.metrics is not None
    expected = serving_metrics(timings, duration, DEFAULT_PERCENTILES, levels).result()
    assert result.metrics.result() == pytest.approx(expected)
    assert result.metrics.completed == 4 and result.metrics.failed == 1
    assert result.metrics.output_throughput == pytest.approx((100 + 256 + 50 + 80) / duration)
    assert result.metrics.request_goodput == pytest.approx(3 / duration)  # TTFT <= 0.4 s
    card = Scorecard.of(["1. a", "2. b"], [result, result], levels)
    assert score_row(card, "Output tokens/s").values[0] == pytest.approx(486 / duration)
    assert score_row(card, "Requests/s").values[0] == pytest.approx(4 / duration)
    assert score_row(card, "Wall time").values[0] == pytest.approx(duration)
    assert score_row(card, "TTFT p50").values[0] == pytest.approx(250.0)  # ms: .2, .3 of .1-.5
    assert score_row(card, "E2EL p99").values[0] == pytest.approx(
        expected["p99_e2el_ms"])


def test_a_latency_without_samples_wins_no_row() -> None:
    """Every cell of choice 1 failed; choice 2's answers are one token each, choice 3's
    stream. vLLM's statistics of no samples are a lone 0: shown here as a dash, never the
    best; the failed requests still count (in their duration and among the failed)."""
    failed = [made_row(index, Status.FAILED, start=index, total=0.5) for index in range(3)]
    single = [made_row(index, Status.FINISHED, start=index, chunks=[0.4], total=0.5, tokens=1,
                       text="x") for index in range(3)]
    streamed = [made_row(index, Status.FINISHED, start=index, chunks=[0.2, 0.5, 0.9],
                         total=1.0, tokens=30, text="x") for index in range(3)]
    results = [ChoiceResult.of(rows, ServiceLevels()) for rows in (failed, single, streamed)]
    card = Scorecard.of(["1. a", "2. b", "3. c"], results, ServiceLevels())
    assert results[0].metrics is not None and results[0].metrics.failed == 3
    for name in ("TTFT p50", "E2EL p99", "ITL p90"):
        assert score_row(card, name).values[0] is None and score_row(card, name).shown[0] == "–"
    assert score_row(card, "TTFT p50").best == {2}  # 0.2 s of 3, against 0.4 s of 2
    assert score_row(card, "E2EL p50").best == {1}  # 0.4 s against 0.9 s; not the failed
    tpot = score_row(card, "TPOT p50")
    assert tpot.values[:2] == (None, None) and tpot.best == set()  # one value: no mark
    assert score_row(card, "ITL p50").values[1] is None  # one chunk each: no gap
    assert score_row(card, "Requests/s").values[0] == 0


def test_goodput_follows_the_levels_passed() -> None:
    rows = first_choice()

    def goodput(levels: ServiceLevels) -> str | None:
        card = Scorecard.of(["1. a", "2. b"], [ChoiceResult.of(rows, levels)] * 2, levels)
        named = [row for row in card.rows if row.name.startswith("Goodput")]
        return named[0].shown[0] if named else None

    duration = by_hand()[1]
    assert goodput(ServiceLevels()) is None  # no levels: no goodput row
    assert goodput(ServiceLevels(ttft_ms=400)) == f"{3 / duration:.3f}"
    assert goodput(ServiceLevels(e2el_ms=500)) == f"{2 / duration:.3f}"
    assert goodput(ServiceLevels(ttft_ms=400, e2el_ms=500)) == f"{2 / duration:.3f}"
    # An evaluation's scorecard takes the page's levels over the spec's.
    evaluation = Evaluation(make_spec([vllm("http://x:1"), vllm("http://y:1")],
                                      [row.location for row in rows],
                                      levels=ServiceLevels(ttft_ms=400)), build=build)
    evaluation.batches[0].rows[:] = rows
    evaluation.batches[1].rows[:] = rows
    spec_goodput = score_row(evaluation.scorecard(), "Goodput").values[0]
    page_goodput = score_row(evaluation.scorecard(ServiceLevels(e2el_ms=500)),
                             "Goodput").values[0]
    assert spec_goodput == pytest.approx(3 / duration)
    assert page_goodput == pytest.approx(2 / duration)


def test_the_valid_structured_share() -> None:
    valid = json.dumps(structured.sample(SCHEMA))
    rows = [made_row(0, Status.FINISHED, start=0, chunks=[0.1], total=0.2, tokens=5,
                     text=valid, structured_answer=True),
            made_row(1, Status.FINISHED, start=0, chunks=[0.1], total=0.2, tokens=5,
                     text='{"system_kw": ', structured_answer=True),
            made_row(2, Status.FINISHED, start=0, chunks=[0.1], total=0.2, tokens=5,
                     text=valid, structured_answer=True),
            made_row(3, Status.FAILED, start=0, total=0.1, structured_answer=True)]
    result = ChoiceResult.of(rows, ServiceLevels())
    assert result.structured == "valid structured: 2 of 3"  # the failed one said nothing
    assert result.structured_share == pytest.approx(2 / 3)
    other = ChoiceResult.of(rows[:1], ServiceLevels())
    row = score_row(Scorecard.of(["1. a", "2. b"], [result, other], ServiceLevels()),
                    "Valid structured")
    assert row.shown == ("2 of 3", "1 of 1") and row.best == {1}


def test_busy_time_counts_overlaps_once_and_gaps_never() -> None:
    assert busy_time([]) == 0
    assert busy_time([(0, 1), (0.5, 2)]) == 2  # overlapping
    assert busy_time([(0, 1), (3, 4)]) == 2  # disjoint: the gap is not busy
    assert busy_time([(0, 10), (2, 3)]) == 10  # nested
    assert busy_time([(5, 6), (0, 1), (1, 2)]) == 3  # touching, in any order
    # A stop, an hour's pause, a resume: the cells before and after, not the hour.
    rows = [made_row(0, Status.FINISHED, start=0, chunks=[1.0], total=1.0, tokens=10),
            made_row(1, Status.FINISHED, start=3600, chunks=[1.0], total=1.0, tokens=10)]
    timings, duration = row_timings(rows)
    assert duration == pytest.approx(2.0)
    assert [timing.start_s for timing in timings] == [0, 3600]
    assert row_timings([made_row(0, Status.PENDING)]) == ([], None)


def test_the_best_value_of_a_row() -> None:
    def best(values: Sequence[float | None], better: Better | None = Better.HIGHER) -> set[int]:
        return ScoreRow("x", tuple(values), tuple(map(str, values)), better).best

    assert best([1, 3, 2]) == {1}
    assert best([1, 3, 2], Better.LOWER) == {0}
    assert best([3, 3, 1]) == {0, 1}  # a tie: both marked
    assert best([1, 1, 3], Better.LOWER) == {0, 1}
    assert best([2, 2, 2]) == set()  # all equal: nothing to choose
    assert best([2, None, None]) == set()  # fewer than two values
    assert best([None, None]) == set()
    assert best([1, None, 2]) == {2}
    assert best([1, 2], None) == set()  # a row without a direction
    row = ScoreRow("Answered", (3, 5), ("3", "5"), Better.HIGHER)
    assert row.marked() == ["3", f"{STAR} 5"]


# -- the matrix -----------------------------------------------------------------------------
def test_the_matrix_picks_the_best_choice_of_each_location() -> None:
    places = LOCATIONS[:6]
    spec = make_spec([vllm("http://a:1"), vllm("http://b:1")], places)

    def answer(index: int, right: int, seconds: float, status: Status = Status.FINISHED,
               **stats: Any) -> BatchRow:
        return made_row(index, status, start=0, chunks=[seconds], total=seconds, tokens=10,
                        graded=check(right), text="x", location=places[index], **stats)

    first = [answer(0, 3, 10.0), answer(1, 3, 12.0), made_row(2, Status.FAILED, start=0,
                                                              total=0.1, location=places[2]),
             answer(3, 2, 5.0), answer(4, 2, 5.0, Status.LENGTH, server_load_s=3.0),
             made_row(5, Status.FINISHED, start=0, graded=check(2), text="x",
                      location=places[5])]  # its time was not recorded
    second = [answer(0, 4, 20.0), answer(1, 3, 8.0),
              made_row(2, Status.PENDING, location=places[2]), answer(3, 2, 5.0),
              made_row(4, Status.STOPPED, start=0, location=places[4]), answer(5, 2, 50.0)]
    lines = matrix_rows(spec, [first, second])
    assert [line.location for line in lines] == [place.name for place in places]
    assert lines[0].best == f"{STAR} 2"  # more figures right wins, though slower
    assert lines[1].best == f"{STAR} 2"  # as many right: the shorter time
    assert lines[2].best == ""  # nothing answered
    assert lines[3].best == f"{STAR} 1, 2"  # the same figures in the same time
    assert lines[4].best == f"{STAR} 1"
    assert lines[5].best == f"{STAR} 2"  # a time not recorded never wins a tie
    assert [line.differs for line in lines] == [True, False, True, False, True, False]
    assert lines[0].cells == ["3 of 4 · 10.0 s", "4 of 4 · 20.0 s"]
    assert lines[2].cells == ["Failed", "Waiting"]
    assert lines[4].cells == ["2 of 4 · 5.0 s · Hit max tokens · cold start", "Stopped"]


def test_the_line_of_a_cell() -> None:
    assert cell_line(made_row(0, Status.PENDING)) == "Waiting"
    assert cell_line(made_row(0, Status.RUNNING, start=0)) == "Running"
    assert cell_line(made_row(0, Status.RETRYING, start=0)) == "Retrying"
    assert cell_line(made_row(0, Status.FAILED, start=0, total=0.2)) == "Failed"
    assert cell_line(made_row(0, Status.STOPPED, start=0, total=0.2)) == "Stopped"
    cut = made_row(0, Status.FINISHED, start=0, chunks=[1.0], total=1.25, tokens=3,
                   graded=check(1, not_graded="prompt cut by the server"), text="x",
                   prompt_truncated=True)
    assert cell_line(cut) == "prompt cut by the server · 1.2 s · prompt truncated by the server"
    ungraded = made_row(0, Status.REPETITION, start=0, chunks=[1.0], total=2.0, tokens=3,
                        text="x")
    assert cell_line(ungraded) == "not graded · 2.0 s · Repetition"


# -- exports --------------------------------------------------------------------------------
HOSTILE_MODEL = "<img src=x onerror=alert(1)>"
FORMULA_MODEL = "=cmd|' /C calc'!A0"
FORMULA = '=HYPERLINK("http://evil.example","click me")'
HTML_PLACE = "<b onmouseover=alert(2)>Springfield</b>"


def hostile_evaluation() -> tuple[Evaluation, ServiceLevels]:
    places = [replace(LOCATIONS[0], name=FORMULA), replace(LOCATIONS[1], name=HTML_PLACE),
              LOCATIONS[2]]
    with LatencyServer(latency=0.02, served=(HOSTILE_MODEL,)) as first, \
            LatencyServer(latency=0.02, served=(FORMULA_MODEL,),
                          failures={LOCATIONS[2].name: Fail(400)}) as second:
        spec = make_spec([vllm(first.url.replace("//", "//ana:s3cret@"), HOSTILE_MODEL),
                          vllm(second.url.replace("//", "//bob:hunter2@"), FORMULA_MODEL)],
                         places)
        evaluation = run_to_end(Evaluation(spec, build=build))
    assert evaluation.cell(1, 2).status == Status.FAILED  # an error message among the cells
    return evaluation, ServiceLevels(ttft_ms=1000, e2el_ms=2000)


@pytest.fixture(scope="module")
def exported() -> tuple[Evaluation, ServiceLevels]:
    return hostile_evaluation()


def test_the_cells_csv(exported: tuple[Evaluation, ServiceLevels]) -> None:
    evaluation, _ = exported
    text = evaluation.cells_csv()
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) == evaluation.spec.cells == 6  # one line per cell
    assert set(CHECK_COLUMNS) <= set(table[0])
    assert [line["location"] for line in table[:3]] == ["'" + FORMULA, HTML_PLACE,
                                                         LOCATIONS[2].name]
    assert {line["model"] for line in table} == {HOSTILE_MODEL, "'" + FORMULA_MODEL}
    for line in csv.reader(io.StringIO(text)):
        for cell in line:
            if cell.startswith(FORMULA_STARTS):
                float(cell)  # only a number may start like a formula
    assert "s3cret" not in text and "hunter2" not in text
    assert [line["status"] for line in table[3:]] == ["finished", "finished", "failed"]
    # Answers in one piece (this vLLM does not stream): an end-to-end time, no TTFT.
    assert all(line["ttft_s"] == "" and line["first_answer_token_s"] == "" for line in table)
    assert float(table[0]["e2el_s"]) > 0
    assert "HTTP 400" in table[5]["error"]


def test_the_json(exported: tuple[Evaluation, ServiceLevels]) -> None:
    evaluation, levels = exported
    text = evaluation.to_json(levels)
    assert "s3cret" not in text and "hunter2" not in text
    data = json.loads(text)
    assert data["definitions"] == DEFINITIONS and "TTFT" in data["definitions"]
    assert data["schedule"] == schedule_lines(evaluation.spec)
    assert data["service_levels_ms"] == {"ttft_ms": 1000, "tpot_ms": None, "e2el_ms": 2000}
    assert len(data["cells"]) == 6
    assert [choice["model"] for choice in data["choices"]] == [HOSTILE_MODEL, FORMULA_MODEL]
    for choice in data["scorecard"]["choices"]:
        serving = choice["serving"]
        for key in ("mean_ttft_ms", "p99_e2el_ms", "median_tpot_ms", "p90_itl_ms",
                    "output_throughput", "request_throughput", "request_goodput",
                    "duration", "completed", "failed"):
            assert key in serving, key
        assert choice["figures"]["answered"] in (2, 3)
    assert data["scorecard"]["choices"][1]["serving"]["failed"] == 1


def test_the_html_report(exported: tuple[Evaluation, ServiceLevels]) -> None:
    evaluation, levels = exported
    page = evaluation.to_html(levels)
    assert 'http-equiv="Content-Security-Policy"' in page
    assert "<script" not in page.lower()
    assert "<img" not in page.lower() and "<b onmouseover" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # the model's name, as text
    assert "&lt;b onmouseover=alert(2)&gt;Springfield&lt;/b&gt;" in page
    assert "s3cret" not in page and "hunter2" not in page
    assert "HTTP 400" in page  # the failed cell's error
    lowered = page.lower()
    assert re.search(r"<[^>]*\bon[a-z]+\s*=", lowered) is None  # no event handler
    assert re.search(r"<[^>]*\ssrc\s*=", lowered) is None  # nothing to fetch
    assert "&lt;img src=x onerror=alert(1)&gt;</td>" in _part(page, "Parameters")
    assert "<td>not reported by the server</td>" in page  # vLLM gives no digest


# -- reopen ---------------------------------------------------------------------------------
def test_reopen_shows_the_scorecard_the_live_evaluation_had(tmp_path: Path) -> None:
    """Choice 1: 2 answered, 1 failed; choice 2 (same server): 1 answered, 1 stopped, 1 never
    run; choice 3 streams from an Ollama. Reopened from the history, it shows the same
    counts and figures, the serving figures from the stored chunk and start times, the
    failed cell's error, and waiting cells."""
    store = RunStore(tmp_path / "history.sqlite3")
    places = LOCATIONS[:3]
    bad = places[1].name
    script = Script(tokens=["Install", " 12", " panels", " of", " 400", " W."], delay=0.01)
    with LatencyServer(latency=0.4, served=("a", "b"),
                       failures={bad: Fail(400, first=1)}) as server, \
            FakeOllama(script=script) as ollama_server:
        spec = make_spec([vllm(server.url, "a", 3), vllm(server.url, "b"),
                          ollama(ollama_server.url)], places)
        live = launch(spec, build=build, store=store)
        group = live.group_id
        assert group is not None
        assert wait_until(lambda: answered(live, 1) == 1 and answered(live, 2) == 3, 20)
        live.stop()
        assert live.wait(10)
    assert [row.status for row in live.cells(0)] == [Status.FINISHED, Status.FAILED,
                                                     Status.FINISHED]
    # The third cell never ran: stopped before its turn (no attempt, nothing recorded).
    assert [row.status for row in live.cells(1)] == [Status.FINISHED] + [Status.STOPPED] * 2
    assert [row.attempts for row in live.cells(1)] == [1, 1, 0]
    assert wait_until(lambda: all(run.status != Status.RUNNING
                                  for run in store.group_runs(group)), 5)
    levels = ServiceLevels(ttft_ms=300, e2el_ms=1000)
    before = live.scorecard(levels)

    shown = reopen(store, group)
    assert shown.reopened and shown.started is None
    after = shown.scorecard(levels)
    for was, now in zip(before.rows, after.rows, strict=True):
        assert was.name == now.name
        if was.key in ("answered", "failed", "length", "prompt_cut", "repetition",
                       "cold_starts", "figures_right", "grounding", "valid_structured"):
            assert now.shown == was.shown, was.name
        else:  # serving figures: the stored times; starts as recorded, to the millisecond
            assert now.values == pytest.approx(was.values, rel=0.02, abs=2.0), was.name
    for choice in range(3):
        live_metrics, metrics = before.results[choice].metrics, after.results[choice].metrics
        assert live_metrics is not None and metrics is not None
        assert (metrics.completed, metrics.failed) == (live_metrics.completed,
                                                       live_metrics.failed)
        assert metrics.ttft == live_metrics.ttft and metrics.itl == live_metrics.itl
    assert before.results[0].metrics is not None and before.results[0].metrics.failed == 1

    failed = shown.cell(0, 1)
    assert failed.status == Status.FAILED and "HTTP 400" in failed.error
    assert cell_line(failed) == "Failed"
    assert [cell_line(row) for row in shown.cells(1)][1:] == ["Stopped", "Waiting"]
    assert shown.matrix()[2].cells[1] == "Waiting"
    assert all(shown.waits_for(choice) is None for choice in range(3))  # nothing runs
    # The streamed choice's cells have a TTFT; those delivered in one piece none.
    cells = shown.cells_table()
    assert all(line["ttft_s"] is None for line in cells if line["choice"] in (1, 2))
    assert all(0 < line["ttft_s"] <= line["e2el_s"] for line in cells if line["choice"] == 3)
    assert "waits for" not in shown.choice_progress(1)[1]
    # Found trying the page: a reopened evaluation said "(2 before the resume)".
    assert all("before the resume" not in shown.choice_progress(choice)[1]
               for choice in range(3))
    assert shown.choice_progress(2)[1].startswith("3 done")


def test_a_resume_must_keep_the_recorded_cells(tmp_path: Path) -> None:
    """A cell's position is choice x rows + row: a resume with other locations or choices
    would take one cell's answer for another's. It is refused, and the group stays free."""
    store = RunStore(tmp_path / "history.sqlite3")
    spec = make_spec([vllm("http://a:1"), vllm("http://b:1")], LOCATIONS[:3])
    group = store.create_group("evaluation", spec=spec.to_json())
    others = [replace(spec, scenarios=LOCATIONS[1:4]),
              replace(spec, choices=(spec.choices[1], spec.choices[0])),
              make_spec([*spec.choices, vllm("http://c:1")], LOCATIONS[:3])]
    for other in others:
        with pytest.raises(ValueError, match="recorded with other choices or locations"):
            launch(other, build=build, store=store, group_id=group)
    (summary,) = store.group_summaries("evaluation")
    assert not summary.running and store.claim_group(group)
    batch = store.create_group("batch", spec="{}")
    with pytest.raises(ValueError, match=f"No evaluation #{batch}"):
        launch(spec, build=build, store=store, group_id=batch)


def test_reopen_of_another_kind_of_group_says_so(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    batch = store.create_group("batch", spec="{}")
    with pytest.raises(ValueError, match=f"No evaluation #{batch} in the history"):
        reopen(store, batch)
    with pytest.raises(ValueError, match="No evaluation #999"):
        reopen(store, 999)


# -- the definition -------------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 5])
def test_an_evaluation_compares_two_to_four_choices(count: int) -> None:
    with pytest.raises(ValueError, match=f"compares 2 to 4 choices, not {count}"):
        make_spec([vllm("http://127.0.0.1:8000")] * count, LOCATIONS[:1])
    assert make_spec([vllm("http://127.0.0.1:8000")] * 4, LOCATIONS[:1]).cells == 4


def test_the_definition_round_trips_through_json() -> None:
    spec = make_spec(
        [Choice(backend="ollama", host="http://127.0.0.1:11434", model=LLAMA,
                sampling=Sampling(max_tokens=300, temperature=0.7, repeat_penalty=1.1,
                                  think="high"), concurrency=3),
         vllm("http://127.0.0.1:8000", answer_format=AnswerFormat.STRUCTURED, sse=True,
              concurrency=8),
         Choice(backend="embedded", host="", model="SmolLM2-135M-Instruct.Q4_1")],
        LOCATIONS[:3], layout=SEED_ORDER,
        levels=ServiceLevels(ttft_ms=5000, tpot_ms=50, e2el_ms=None))
    again = EvaluationSpec.from_json(spec.to_json())
    assert again == spec
    assert [choice.concurrency for choice in again.choices] == [3, 8, 1]
    assert again.choices[0].sampling.think == "high"
    assert again.choices[1].structured and again.choices[1].sse
    assert again.levels.tpot_ms == 50 and again.levels.e2el_ms is None


def test_the_stored_definition_holds_no_credentials() -> None:
    secret, other = "http://ana:s3cret@127.0.0.1:11434", "http://bob:hunter2@10.0.0.9:8000"
    spec = make_spec([ollama(secret), vllm(other), ollama("http://127.0.0.1:11434",
                                                            MISTRAL)], LOCATIONS[:1])
    stored = spec.to_json()
    assert "s3cret" not in stored and "hunter2" not in stored
    again = EvaluationSpec.from_json(stored)
    assert [choice.host for choice in again.choices] == [
        "http://127.0.0.1:11434", "http://10.0.0.9:8000", "http://127.0.0.1:11434"]
    # The credentials the config holds now come back for the same server only.
    restored = again.with_hosts([secret, "http://eve:nope@10.0.0.10:8000"])
    assert [choice.host for choice in restored.choices] == [
        secret, "http://10.0.0.9:8000", secret]
    assert again.with_hosts([secret, other]) == replace(
        spec, choices=tuple(replace(choice, host=secret if index == 2 else choice.host)
                            for index, choice in enumerate(spec.choices)))


def test_positions_map_to_cells() -> None:
    spec = make_spec([vllm("http://a:1"), vllm("http://b:1"), vllm("http://c:1")],
                     LOCATIONS[:4])
    assert [spec.position(choice, row) for choice in range(3) for row in range(4)] == list(
        range(12))
    assert [spec.cell_of(position) for position in (0, 3, 4, 11)] == [(0, 0), (0, 3), (1, 0),
                                                                       (2, 3)]


def test_params_of_a_choice() -> None:
    params = RunParams(backend="vllm", host="http://a:1", model=MODEL, sampling=SAMPLING)
    assert Choice.of(params, 500).concurrency == 64 and Choice.of(params, 0).concurrency == 1
    assert Choice.of(params, 4).params() == params


def test_a_stream_ended_before_the_servers_count_counts_its_chunks() -> None:
    """The repetition guard closes a looping stream before vLLM's usage chunk: no server
    count. Its tokens are its chunks (a token each), not vLLM's fallback of 1 for a
    request without a tokenizer, so a guarded choice's output tokens/s is not understated."""
    stats = GenerationStats(total_time_s=1.0)
    for step in range(40):
        stats.chunk_arrived(0.1 + step * 0.02)
    location = load_locations()[0]
    row = BatchRow(0, location, RunRequest(backend="vllm", host="http://h", model="m",
                                           system="", prompt="p"),
                   status=Status.REPETITION, started_at=datetime.now(UTC))
    row.outcome = Outcome(status=Status.REPETITION, text="loop " * 40,
                          statistics=stats.to_dict())
    timings, _ = row_timings([row])
    assert stats.output_tokens is None and timings[0].output_len == 40


def test_a_choice_that_answered_nothing_wins_no_row_and_ties_as_shown_share_the_star() -> None:
    """Found trying the page: a choice on a closed port (nothing answered) took the star for
    wall time 0.0 s and for 0 cut answers; and one of three wall times that all read 2.0 s
    was starred alone."""
    row = ScoreRow("Wall time", (0.0, 78.5, 36.6), ("0.0 s", "78.5 s", "36.6 s"), Better.LOWER,
                   "duration", frozenset({1, 2}))
    assert row.best == {2}
    tied = ScoreRow("Wall time", (2.01, 1.98, 2.04), ("2.0 s", "2.0 s", "2.0 s"), Better.LOWER)
    assert tied.best == set()
    shared = ScoreRow("TTFT p50", (0.11, 0.14, 0.3), ("0.1 ms", "0.1 ms", "0.3 ms"),
                      Better.LOWER)
    assert shared.best == {0, 1}
    nothing = ChoiceResult.of(first_choice()[4:5], ServiceLevels())  # one failed cell
    card = Scorecard.of(["1. a", "2. b"], [nothing, ChoiceResult.of(first_choice(),
                                                                   ServiceLevels())],
                        ServiceLevels())
    assert score_row(card, "Answered").best == {1}  # counts compare every choice
    assert score_row(card, "Failed").shown == ("1", "1")  # one failed cell each: no star
    assert score_row(card, "Failed").best == set()
    assert score_row(card, "Hit max tokens").best == set()  # its 0 is no win
    assert score_row(card, "Wall time").best == set()


def test_an_embedded_choice_on_its_own_runs_in_this_apps_process() -> None:
    """Found trying the page: it read "runs on its own server" for the embedded model."""
    spec = make_spec([ollama("http://10.0.0.5:11434", LLAMA),
                      Choice(backend="embedded", host="", model="SmolLM2-135M-Instruct.Q4_1")],
                     LOCATIONS[:1])
    assert schedule_lines(spec)[1] == ("Choice 2 (Embedded (SmolLM2)) runs in this app's "
                                       "process, at the same time as the others.")
    assert schedule_lines(spec)[0].endswith("runs on its own server, at the same time as the "
                                            "others.")


def test_the_same_model_twice_is_told_apart_by_what_differs() -> None:
    """Found trying the page: two embedded choices with 16 and 32 max tokens were both
    "Embedded (SmolLM2) · SmolLM2-135M-Instruct.Q4_1" in every column header."""
    model = "SmolLM2-135M-Instruct.Q4_1"
    spec = make_spec([Choice(backend="embedded", host="", model=model,
                             sampling=Sampling(max_tokens=16)),
                      ollama("http://10.0.0.5:11434", LLAMA),
                      Choice(backend="embedded", host="", model=model,
                             sampling=Sampling(max_tokens=32, temperature=0.7))],
                     LOCATIONS[:1])
    assert spec.labels == [
        f"1. Embedded (SmolLM2) · {model} · max tokens 16 · temperature 0.2",
        "2. Ollama · llama3.1:8b",
        f"3. Embedded (SmolLM2) · {model} · max tokens 32 · temperature 0.7"]


def test_the_html_report_holds_what_a_reader_without_a_server_needs() -> None:
    """The system prompt, each location's user prompt, each choice's parameters with its
    model digest (Ollama's from its tags; vLLM reports none), the definitions of every figure
    and check, and each cell's figure check saying what it checks."""
    places = LOCATIONS[:2]
    script = Script(tokens=["Install", " 12", " panels", " of", " 400", " W."])
    with LatencyServer(latency=0.02) as server, FakeOllama(script=script) as ollama_server:
        choices = [replace(ollama(ollama_server.url.replace("//", "//ana:s3cret@")),
                           sampling=Sampling(max_tokens=321, temperature=0.45, repeat_penalty=1.3)),
                   vllm(server.url, concurrency=3, answer_format=AnswerFormat.STRUCTURED)]
        evaluation = run_to_end(Evaluation(make_spec(choices, places), build=build))
    page = evaluation.to_html()
    assert "s3cret" not in page and "ana:" not in page
    prompts = _part(page, "Prompts")
    assert html.escape(SYSTEM) in prompts
    answers = _part(page, "Answers")
    for place in places:  # each location's user prompt, folded above its answers
        assert html.escape(build_user_prompt(place)) in answers
    parameters = _part(page, "Parameters")
    for shown in ("Ollama", "vLLM", LLAMA, MODEL, html.escape(ollama_server.url), "321",
                  "0.45", "1.3", "server default", "Markdown report",
                  "Structured (JSON schema)", "stream", "one piece", "Concurrency", "3",
                  f"sha256:{tag_digest(LLAMA)}", "not reported by the server"):
        assert f"<td>{shown}</td>" in parameters, shown
    definitions = _part(page, "Definitions")
    for name, text in {**DEFINITIONS, **CHECK_DEFINITIONS}.items():
        assert f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" in definitions
    cells = re.findall(r"<section>(.*?)</section>", answers, re.DOTALL)
    assert len(cells) == evaluation.spec.cells
    for cell in cells:
        assert "<h4>Figure check</h4>" in cell and "Figures right: " in cell


def test_a_reopened_evaluations_report_keeps_the_digests(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    with LatencyServer(latency=0.02) as server, \
            FakeOllama(script=Script(tokens=["12", " panels."])) as ollama_server:
        live = launch(make_spec([ollama(ollama_server.url), vllm(server.url)], LOCATIONS[:1]),
                      build=build, store=store)
        assert live.wait(20)
    assert live.group_id is not None
    reopened = reopen(store, live.group_id)  # no server needed
    assert reopened.digest(0) == f"sha256:{tag_digest(LLAMA)}"
    assert reopened.digest(1) == "not reported by the server"
    assert f"<td>sha256:{tag_digest(LLAMA)}</td>" in reopened.to_html()
    assert [choice["model_digest"] for choice in json.loads(reopened.to_json())["choices"]] \
        == [f"sha256:{tag_digest(LLAMA)}", "not reported by the server"]


def _part(page: str, heading: str) -> str:
    """The report's part under ``<h2>heading</h2>``, up to the next heading of its rank."""
    found = re.search(rf"<h2>{heading}</h2>(.*?)(?=<h2>|</main>)", page, re.DOTALL)
    assert found is not None, heading
    return found.group(1)
