"""The serving figures (studio.runs.serving) as ``vllm bench serve`` defines them, and the
chunk times every backend's stream records for them.

The figures are checked against vLLM's own ``calculate_metrics``, run in vLLM's venv
(``make vllm-env`` builds it; ``make test`` needs it): one set of recorded request timings
goes to both, and every figure must agree.
"""

from __future__ import annotations

import json
import random
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from backends.ollama_backend import OllamaBackend
from backends.status import Status
from backends.stream import (
    CHUNK_TIMES_CAP,
    GenerationStats,
    SameChunk,
    TokenStream,
)
from backends.thinking import Thinking
from backends.vllm_backend import VLLMBackend
from studio.runs.serving import (
    LATENCIES,
    RequestTiming,
    ServiceLevels,
    percentile_word,
    request_timing,
    serving_metrics,
)
from tests.servers import vllm_real
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

CHILD = Path(__file__).resolve().with_name("metrics_child.py")
THOUGHT = "The household uses 53.76 kWh a day; 400 W panels make about 1.7 kWh each."
ANSWER = "## RECOMMENDATION\n\nInstall **32 panels**."
QWEN = "qwen3:8b"


# -- the figures -----------------------------------------------------------------------------
def worked_example() -> list[RequestTiming]:
    """evaluation-notes.md section 2's example: A, B (one token) and a failed request."""
    return [RequestTiming(True, ttft_s=.2, itl_s=(.2,) * 4, e2el_s=1.0, output_tokens=5,
                          prompt_tokens=10),
            RequestTiming(True, ttft_s=.3, e2el_s=.3, output_tokens=1, prompt_tokens=8),
            RequestTiming(False)]


def test_the_worked_example_of_the_notes() -> None:
    metrics = serving_metrics(worked_example(), 2.0, [99], ServiceLevels(ttft_ms=250))
    result = metrics.result()
    assert (metrics.completed, metrics.failed, metrics.output_lens) == (2, 1, (5, 1, 0))
    assert result["request_throughput"] == 1.0 and result["request_goodput"] == 0.5
    assert result["output_throughput"] == 3.0 and result["total_token_throughput"] == 12.0
    expected = {"mean_ttft_ms": 250, "p99_ttft_ms": 299, "mean_tpot_ms": 200,
                "mean_itl_ms": 200, "mean_e2el_ms": 650, "p99_e2el_ms": 993}
    assert result == {**result, **{key: pytest.approx(value, rel=1e-12)
                                   for key, value in expected.items()}}
    assert metrics.tpot.percentile(99) == pytest.approx(200)  # B (one token) left out


def stats_of(times: list[float], **fields: Any) -> GenerationStats:
    """A run's statistics with these chunk arrivals (as the stream records them)."""
    stats = GenerationStats(**fields)
    for moment in times:
        stats.chunk_arrived(moment)
    return stats


def recorded() -> list[RequestTiming]:
    """Request timings as runs record them: a normal answer, a one-token one, a failed one,
    a reasoning model's (its first chunk thinking), two and one tokens, a count the server did
    not give (estimated), a count of 0, one exactly at two service levels, and two built from
    recorded statistics; ITL lists of many lengths, starts spread over four seconds."""
    rng = random.Random(23)
    gaps = [round(rng.uniform(.015, .09), 4) for _ in range(45)]
    normal = (.021, .019, .0305, .0188, .022, .4, .0199)
    timings = [
        RequestTiming(True, .1234, normal, .1234 + sum(normal), 8, None, 350, 0.0),
        RequestTiming(True, .5012, (), .5012, 1, None, 340, .25),
        RequestTiming(False, prompt_tokens=333, start_s=.3),
        RequestTiming(True, .0871, tuple(gaps), .0871 + sum(gaps), 61, None, 410, .7,
                      first_answer_s=1.3),
        RequestTiming(True, .06, (.05,), .11, 2, None, 120, 1.9),
        RequestTiming(True, .2, (.03, .031, .029), .29, None, 17, 200, 2.4),
        RequestTiming(True, .25, (.04, .041, .039), .37, 0, 4, 200, 2.45),
        RequestTiming(True, .15, (.45, .45, .45), 1.5, 20, None, 90, 2.6),  # at two levels
    ]
    chunks = [.31, .3302, .3561, .3790, .4012, .4291]
    timings.append(request_timing(stats_of(chunks, output_tokens=6, prompt_tokens=77,
                                           time_to_first_token_s=.3561),
                                  Status.FINISHED, 3.1))
    timings.append(request_timing(stats_of([.9], output_tokens=1, prompt_tokens=70),
                                  Status.LENGTH, 3.3))
    return timings


LEVELS = ServiceLevels(ttft_ms=150, tpot_ms=80, e2el_ms=1500)
CASES: list[tuple[str, list[RequestTiming], float, tuple[float, ...], ServiceLevels]] = [
    ("estimated", recorded(), 4.2, (50, 90, 99), LEVELS),
    ("no-estimate", [replace(t, estimated_output_tokens=None) for t in recorded()], 4.2,
     (25, 50, 75, 99.9), ServiceLevels(tpot_ms=25)),
    ("no-levels", recorded(), 5.0, (50, 90, 99), ServiceLevels()),
    ("worked-example", worked_example(), 2.0, (99,), ServiceLevels(ttft_ms=250)),
    ("all-failed", [RequestTiming(False), RequestTiming(False, start_s=.5)], 1.0, (50,),
     ServiceLevels(e2el_ms=100)),
]


def vllm_case(timings: list[RequestTiming], duration_s: float, percentiles: tuple[float, ...],
              levels: ServiceLevels) -> dict[str, Any]:
    """The case as RequestFuncOutputs: an estimate becomes a text of as many characters
    (the child's tokenizer counts characters); without any estimate there is no tokenizer."""
    estimates = any(t.estimated_output_tokens is not None for t in timings)
    requests = [{"success": t.success, "ttft": t.ttft_s, "itl": list(t.itl_s),
                 "latency": t.e2el_s, "output_tokens": t.output_tokens or 0,
                 "prompt_len": t.prompt_tokens, "start_time": t.start_s,
                 "generated_text": "x" * (t.estimated_output_tokens or 0)} for t in timings]
    return {"requests": requests, "duration_s": duration_s, "percentiles": list(percentiles),
            "goodput": levels.as_config(), "tokenizer": estimates}


def vllm_result(metrics: dict[str, Any]) -> dict[str, Any]:
    """vLLM's BenchmarkMetrics under its result keys."""
    result = {key: metrics[key] for key in (
        "completed", "failed", "request_throughput", "request_goodput", "output_throughput",
        "total_token_throughput", "max_output_tokens_per_s", "max_concurrent_requests")}
    result["total_input_tokens"] = metrics["total_input"]
    result["total_output_tokens"] = metrics["total_output"]
    for name in LATENCIES:
        for stat in ("mean", "median", "std"):
            result[f"{stat}_{name}_ms"] = metrics[f"{stat}_{name}_ms"]
        for p, value in metrics[f"percentiles_{name}_ms"]:
            result[f"p{percentile_word(p)}_{name}_ms"] = value
    return result


@pytest.mark.vllm
@pytest.mark.timeout(180)
def test_figures_agree_with_vllms_calculate_metrics() -> None:
    """Every figure of every case, ours against ``vllm.benchmarks.serve.calculate_metrics``
    (vLLM 0.32.0, in its own venv and process)."""
    problem = vllm_real.not_ready_reason()
    if problem:
        pytest.skip(f"vLLM's calculate_metrics: {problem}")
    cases = [vllm_case(*case[1:]) for case in CASES]
    done = subprocess.run([str(vllm_real.PYTHON), str(CHILD)], input=json.dumps(cases),
                          capture_output=True, text=True, env=vllm_real.reference_env(),
                          timeout=150, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout)
    compared = 0
    for (name, timings, duration, percentiles, levels), answer in zip(CASES, answers,
                                                                       strict=True):
        ours = serving_metrics(timings, duration, percentiles, levels)
        assert list(ours.output_lens) == answer["output_lens"], name
        theirs = vllm_result(answer["metrics"])
        if not levels.as_config():  # vLLM computes 0 goodput; its result says None
            assert ours.request_goodput is None
            del theirs["request_goodput"]
        mine = ours.result()
        for key, value in theirs.items():
            assert mine[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
            compared += 1
    assert compared > 150


def test_a_request_timing_from_recorded_statistics() -> None:
    stats = stats_of([.5, .52, .56], output_tokens=None, prompt_tokens=None,
                     time_to_first_token_s=.52)
    timing = request_timing(stats, Status.REPETITION, 1.5, estimated_output_tokens=9,
                            estimated_prompt_tokens=40)
    assert timing.success and timing.start_s == 1.5
    assert (timing.ttft_s, timing.e2el_s, timing.first_answer_s) == (.5, .56, .52)
    assert timing.itl_s == pytest.approx((.02, .04))
    assert (timing.output_len, timing.prompt_tokens) == (9, 40)
    assert request_timing(stats, Status.ERROR, 0).success is False
    assert request_timing(stats, Status.STOPPED, 0).success is False
    # A run recorded before chunks were timed, or one with no chunk: failed, as vLLM's
    # client fails a request without a chunk.
    old = GenerationStats.from_dict({"time_to_first_token_s": .4, "total_time_s": 1.0})
    assert request_timing(old, Status.FINISHED, 0).success is False
    assert RequestTiming(True, output_tokens=None).output_len == 1  # vLLM's fallback


def test_service_levels_and_duration() -> None:
    assert ServiceLevels(ttft_ms=100, e2el_ms=2000).as_config() == {"ttft": 100, "e2el": 2000}
    with pytest.raises(ValueError, match="duration"):
        serving_metrics(worked_example(), 0.0)


# -- the chunk times the streams record ---------------------------------------------------------
def assert_consistent(stats: GenerationStats) -> None:
    """First chunk <= every chunk <= last chunk <= the end; one gap per chunk after the
    first; the first answer and thinking tokens no earlier than the first chunk."""
    times = stats.chunk_times_s
    assert stats.chunks == len(times) > 0
    assert times == sorted(times) and stats.first_chunk_s == times[0]
    assert stats.last_chunk_s == times[-1]
    assert stats.total_time_s is not None and stats.last_chunk_s <= stats.total_time_s
    assert len(stats.inter_chunk_s) == stats.chunks - 1
    assert stats.first_chunk_s + sum(stats.inter_chunk_s) == pytest.approx(stats.last_chunk_s)
    for first in (stats.time_to_first_token_s, stats.time_to_first_thinking_s):
        assert first is None or times[0] <= first <= stats.total_time_s


def test_a_stream_times_each_chunk_once_thinking_or_answer() -> None:
    fragments = iter([Thinking("Let me see."), SameChunk("The"), "", " answer",
                      SameChunk(" is"), " 42."])
    stream = TokenStream(lambda handle: fragments)
    assert "".join(stream) == "The answer is 42." and stream.thinking == "Let me see."
    assert stream.stats.chunks == 3  # neither the empty one nor those marked SameChunk
    assert_consistent(stream.stats)


def test_ollama_streaming_chunks_are_timed() -> None:
    tokens = tokenize(ANSWER)
    with FakeOllama(script=Script(tokens=tokens, delay=.01)) as server:
        stream = OllamaBackend(server.url, "llama3.1:8b").stream("How many panels?")
        assert "".join(stream).strip() == ANSWER
    stats = stream.stats
    assert_consistent(stats)
    assert stats.chunks == len(tokens) == stats.output_tokens
    assert stats.first_chunk_s == pytest.approx(stats.time_to_first_token_s, abs=1e-4)
    assert min(stats.inter_chunk_s) >= .009  # as they arrived: the server's delay apart


def test_vllm_sse_chunks_are_timed() -> None:
    tokens = tuple(tokenize(ANSWER))
    with FakeVLLM(200, completion(ANSWER), tokens=tokens, token_delay=.01) as server:
        stream = VLLMBackend(server.url, "smollm2").stream("Hi", sse=True)
        assert "".join(stream).strip() == ANSWER
    stats = stream.stats
    assert_consistent(stats)
    # The role chunk and the finish chunk carry no text: not counted (vLLM's client does).
    assert stats.chunks == len(tokens) == stats.output_tokens
    assert min(stats.inter_chunk_s) >= .009


@pytest.mark.parametrize("thinks", [False, True], ids=["answer", "reasoning"])
def test_vllm_one_piece_answer_is_one_chunk(thinks: bool) -> None:
    reasoning = tuple(tokenize(THOUGHT)) if thinks else ()
    with FakeVLLM(200, completion(ANSWER, completion_tokens=30), reasoning=reasoning,
                  delay=.05) as server:
        stream = VLLMBackend(server.url, "smollm2").stream("Hi")
        assert "".join(stream).strip() == ANSWER
    stats = stream.stats
    assert_consistent(stats)
    assert stats.chunks == 1 and stats.inter_chunk_s == []
    assert stats.first_chunk_s == stats.last_chunk_s and (stats.last_chunk_s or 0) >= .05
    assert bool(stream.thinking) is thinks
    timing = request_timing(stats, Status.FINISHED, 0.0)
    assert timing.ttft_s == timing.e2el_s and timing.itl_s == ()


def test_a_thinking_stream_times_its_thinking_chunks() -> None:
    thought, answer = tokenize(THOUGHT), tokenize(ANSWER)
    with FakeOllama(models=[QWEN], version="0.12.5",
                    capabilities={QWEN: ["completion", "thinking"]},
                    script=Script(tokens=answer, thinking=thought, delay=.005)) as server:
        stream = OllamaBackend(server.url, QWEN).stream("How many panels?")
        assert "".join(stream).strip() == ANSWER
    stats = stream.stats
    assert_consistent(stats)
    assert stats.chunks == len(thought) + len(answer)
    assert stats.time_to_first_thinking_s is not None
    assert stats.time_to_first_token_s is not None
    assert stats.first_chunk_s is not None
    # TTFT is the first thinking chunk; the first answer token comes after the thinking.
    assert stats.first_chunk_s <= stats.time_to_first_thinking_s \
        < stats.time_to_first_token_s - .005 * (len(thought) - 1)
    timing = request_timing(stats, Status.FINISHED, 0.0)
    assert timing.first_answer_s == stats.time_to_first_token_s > timing.ttft_s
    assert len(timing.itl_s) == stats.chunks - 1


def test_chunk_times_round_trip_through_the_history() -> None:
    stats = stats_of([.12345678, .2, .31], output_tokens=3)
    assert stats.chunk_times_s == [.1234, .2, .31]  # cut to 0.1 ms, never up
    stored = json.loads(json.dumps(stats.to_dict()))
    again = GenerationStats.from_dict(stored)
    assert again == stats and again.to_dict() == stats.to_dict()
    old = GenerationStats.from_dict({"time_to_first_token_s": .4, "total_time_s": 1.0})
    assert (old.chunks, old.chunk_times_s, old.last_chunk_s) == (0, [], None)
    assert old.first_chunk_s is None and old.inter_chunk_s == []


def test_chunk_times_are_capped() -> None:
    stats = stats_of([i / 1000 for i in range(CHUNK_TIMES_CAP + 10)])
    assert len(stats.chunk_times_s) == CHUNK_TIMES_CAP
    assert stats.chunks == CHUNK_TIMES_CAP + 10
    assert stats.last_chunk_s == pytest.approx((CHUNK_TIMES_CAP + 9) / 1000)
