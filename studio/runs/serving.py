"""Serving figures, named and computed as ``vllm bench serve`` (vLLM 0.32.0) computes them.

The definitions: ``vllm/benchmarks/serve.py`` ``calculate_metrics`` (lines 573-783: output
tokens 607-621, TPOT 626-631, ITL 632, goodput 640-663, peak 672-742, statistics 744-781;
the result keys in ``benchmark()``, 1281-1300 and 1357-1391) and its client,
``vllm/benchmarks/lib/endpoint_request_func.py`` ``async_request_openai_chat_completions``
(lines 372-473; ``RequestFuncOutput``, line 89):

- **TTFT**: from sending the request to its first chunk. vLLM's client counts the first SSE
  message that has choices; ours, the first non-empty chunk, thinking or answer
  (``GenerationStats.chunk_times_s``, timed by ``backends.stream.TokenStream``).
- **ITL**: the gaps between consecutive chunks, one per chunk after the first (not per token),
  pooled over every successful request.
- **E2EL**: from sending the request to its last chunk (the usage chunk and ``[DONE]`` do not
  count, nor does our client's work after the answer).
- **TPOT**: (E2EL - TTFT) / (output tokens - 1), only for requests with more than one output
  token; those with one or none count as TPOT 0 for goodput.
- **Output tokens**: the server's own count (``usage.completion_tokens``, Ollama's
  ``eval_count``: thinking and answer together). When it gives none (or 0): an estimate of
  the text's tokens where the caller has one (vLLM: its tokenizer's count), else 1.
- **Throughput** over the whole run's duration (``dur_s``: from before the first request to
  after the last, so failed ones are inside it): requests/s (completed ones), output
  tokens/s, total (prompt + output) tokens/s.
- **Goodput**: requests meeting every service level set (``slo >= value``, the levels given
  in ms and compared in seconds) per second of the duration.
- Each latency's mean, median, standard deviation (numpy's: the population's) and
  ``np.percentile`` (linear interpolation) at the percentiles asked for, in ms; an empty set
  of samples counts as a single 0, as in vLLM.
- Peak: the most chunks (vLLM's "tokens") that arrived in one whole second counted from the
  first start, and the most requests running in any one second.

Only successful requests count (a failed one only in ``failed``). Beyond vLLM: the time to the
first *answer* token (``first_answer``, keys ``*_answer_ttft_ms``) for reasoning models,
whose first chunk is thinking.

Where our timings differ from vLLM's client on the same stream (measured against vLLM 0.32.0,
tests/test_vllm_real.py):

- vLLM's server sends a role-only chunk (empty content) just before the first token's; vLLM's
  client counts it, ours does not (it carries no token). Its TTFT is then earlier by
  microseconds, and its ITL list holds one more gap, near 0 (a finish chunk with an empty
  delta, sent after a stop string, would add another).
- Our times count from the stream's opening, which is just before the request for vLLM; for
  Ollama it includes the ``/api/ps`` query that sizes the window, and for the embedded model
  the wait for its lock (that is what a user of this app waits for).
- They are kept to 0.1 ms (cut down), the first ``CHUNK_TIMES_CAP`` of a run
  (``backends.stream``); past the cap, a run's later gaps are not among its ITL.

A run recorded by this app becomes a ``RequestTiming`` through ``request_timing()``; a list
of them and the duration give ``serving_metrics()``; ``ServingMetrics.result()`` has vLLM's
result keys (``mean_ttft_ms``, ``p99_itl_ms``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backends.stream import GenerationStats
from studio.runs.request import ANSWERED

DEFAULT_PERCENTILES = (50.0, 90.0, 99.0)
MS_PER_S = 1000  # vLLM's MILLISECONDS_TO_SECONDS_CONVERSION
LATENCIES = ("ttft", "tpot", "itl", "e2el")  # vLLM's --percentile-metrics, in its order

# The serving figures' definitions, as the pages, the JSON and the reports cite them
# (Evaluate's, and Compare's where its figures are these).
DEFINITIONS: dict[str, str] = {
    "TTFT": "time to first token: from sending the request to its first non-empty chunk, "
            "thinking or answer (vllm bench serve's ttft).",
    "TPOT": "time per output token: (E2EL - TTFT) / (output tokens - 1), over the requests "
            "with more than one output token.",
    "ITL": "inter-token latency: the gaps between consecutive chunks, pooled over every "
           "answered request.",
    "E2EL": "end-to-end latency: from sending the request to its last chunk.",
    "First answer token": "beyond vLLM: to the first token of the answer, after a reasoning "
                          "model's thinking.",
    "Output tokens": "the server's own count (usage.completion_tokens, Ollama's eval_count; "
                     "thinking included); a stream ended before the server counted (the "
                     "repetition guard) counts its chunks, a token each.",
    "Throughput": "output tokens and answered requests per second of the choice's duration: "
                  "the time it had requests in flight (from its first request's start to "
                  "its last one's end; the pause of a Stop or a crash before a resume does "
                  "not count).",
    "Goodput": "answered requests per second that met every service level set on the page "
               "(vllm bench serve --goodput).",
    "One piece": "an answer delivered whole (vLLM without streaming) has its end-to-end "
                 "latency only: TTFT, TPOT and ITL need a stream (Stream vLLM on).",
    "Percentiles": "numpy's linear interpolation over the requests (p50 is the median), "
                   "as vllm bench serve reports them; source: vllm/benchmarks/serve.py "
                   "calculate_metrics.",
}


@dataclass(frozen=True)
class RequestTiming:
    """One request as vLLM's ``RequestFuncOutput`` holds it; times in seconds."""

    success: bool
    ttft_s: float = 0.0  # to the first chunk
    itl_s: tuple[float, ...] = ()  # the gaps between chunks
    e2el_s: float = 0.0  # to the last chunk
    output_tokens: int | None = None  # the server's count (None or 0: it gave none)
    estimated_output_tokens: int | None = None  # used only when the server gave no count
    prompt_tokens: int = 0
    start_s: float = 0.0  # when it was sent, counted from the run's start
    first_answer_s: float | None = None  # to the first answer token (None: no answer text)

    @property
    def output_len(self) -> int:
        """The output tokens the figures count: the server's; else the estimate; else 1."""
        if self.output_tokens:
            return self.output_tokens
        return 1 if self.estimated_output_tokens is None else self.estimated_output_tokens


@dataclass(frozen=True)
class ServiceLevels:
    """Goodput's service levels in ms (``--goodput ttft:MS tpot:MS e2el:MS``); None: not
    set."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2el_ms: float | None = None

    def as_config(self) -> dict[str, float]:
        """vLLM's ``goodput_config_dict``: the levels that are set."""
        levels = {"ttft": self.ttft_ms, "tpot": self.tpot_ms, "e2el": self.e2el_ms}
        return {name: value for name, value in levels.items() if value is not None}


@dataclass(frozen=True)
class Spread:
    """A latency's statistics over its samples, in ms."""

    mean_ms: float
    median_ms: float
    std_ms: float
    percentiles_ms: tuple[tuple[float, float], ...]  # (percentile, value)

    @classmethod
    def of(cls, samples_s: Sequence[float], percentiles: Sequence[float]) -> Spread:
        """vLLM's arithmetic: numpy over the samples in seconds (a lone 0 for none), x1000."""
        values = list(samples_s) or 0
        return cls(float(np.mean(values) * MS_PER_S), float(np.median(values) * MS_PER_S),
                   float(np.std(values) * MS_PER_S),
                   tuple((p, float(np.percentile(values, p) * MS_PER_S)) for p in percentiles))

    def percentile(self, p: float) -> float:
        """The value at percentile ``p`` (one of those computed)."""
        return dict(self.percentiles_ms)[p]


@dataclass(frozen=True)
class ServingMetrics:
    """What ``calculate_metrics`` returns (``BenchmarkMetrics`` and the output lengths), plus
    the time to the first answer token."""

    duration_s: float
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    request_goodput: float | None  # None without service levels
    output_throughput: float
    total_token_throughput: float
    ttft: Spread
    tpot: Spread
    itl: Spread
    e2el: Spread
    max_output_tokens_per_s: float
    max_concurrent_requests: int
    output_lens: tuple[int, ...]  # per request, in order (0 for a failed one)
    first_answer: Spread  # ours: to the first answer token

    def result(self) -> dict[str, float | int | None]:
        """The figures under ``vllm bench serve``'s result keys (its JSON's), every latency
        included, then ours (``*_answer_ttft_ms``)."""
        figures: dict[str, float | int | None] = {
            "duration": self.duration_s, "completed": self.completed, "failed": self.failed,
            "total_input_tokens": self.total_input_tokens,
            "total_output_tokens": self.total_output_tokens,
            "request_throughput": self.request_throughput,
            "request_goodput": self.request_goodput,
            "output_throughput": self.output_throughput,
            "total_token_throughput": self.total_token_throughput,
            "max_output_tokens_per_s": self.max_output_tokens_per_s,
            "max_concurrent_requests": self.max_concurrent_requests,
        }
        spreads = (*zip(LATENCIES, (self.ttft, self.tpot, self.itl, self.e2el), strict=True),
                   ("answer_ttft", self.first_answer))
        for name, spread in spreads:
            figures[f"mean_{name}_ms"] = spread.mean_ms
            figures[f"median_{name}_ms"] = spread.median_ms
            figures[f"std_{name}_ms"] = spread.std_ms
            for p, value in spread.percentiles_ms:
                figures[f"p{percentile_word(p)}_{name}_ms"] = value
        return figures


def percentile_word(p: float) -> str:
    """A percentile as vLLM's keys write it: 99 -> "99", 99.9 -> "99.9"."""
    return str(int(p)) if int(p) == p else str(p)


def serving_metrics(requests: Sequence[RequestTiming], duration_s: float,
                    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
                    levels: ServiceLevels | None = None) -> ServingMetrics:
    """The serving figures of ``requests`` run over ``duration_s`` seconds, exactly as
    ``calculate_metrics`` computes them (see the module's docstring)."""
    if not duration_s > 0:
        raise ValueError(f"the run's duration must be positive, not {duration_s!r}")
    done = [request for request in requests if request.success]
    output_lens = tuple(request.output_len if request.success else 0 for request in requests)
    tpots: list[float] = []
    all_tpots: list[float] = []  # goodput's: 0 for one token or none
    itls: list[float] = []
    for request in done:
        tpot = 0.0
        if request.output_len > 1:
            tpot = (request.e2el_s - request.ttft_s) / (request.output_len - 1)
            tpots.append(tpot)
        all_tpots.append(tpot)
        itls += request.itl_s
    ttfts = [request.ttft_s for request in done]
    e2els = [request.e2el_s for request in done]
    total_input = sum(request.prompt_tokens for request in done)
    total_output = sum(output_lens)
    goodput = None
    config = (levels or ServiceLevels()).as_config()
    if config:  # every level set, met: slo >= value, in seconds
        measured = {"ttft": ttfts, "tpot": all_tpots, "e2el": e2els}
        names = [name for name in ("ttft", "tpot", "e2el") if name in config]
        slos = [config[name] / MS_PER_S for name in names]
        per_request = zip(*(measured[name] for name in names), strict=True)
        good = sum(all(slo >= value for slo, value in zip(slos, values, strict=True))
                   for values in per_request)
        goodput = good / duration_s
    peak, peak_running = _peak(done)
    firsts = [request.first_answer_s for request in done if request.first_answer_s is not None]
    return ServingMetrics(
        duration_s=duration_s, completed=len(done), failed=len(requests) - len(done),
        total_input_tokens=total_input, total_output_tokens=total_output,
        request_throughput=len(done) / duration_s, request_goodput=goodput,
        output_throughput=total_output / duration_s,
        total_token_throughput=(total_input + total_output) / duration_s,
        ttft=Spread.of(ttfts, percentiles), tpot=Spread.of(tpots, percentiles),
        itl=Spread.of(itls, percentiles), e2el=Spread.of(e2els, percentiles),
        max_output_tokens_per_s=peak, max_concurrent_requests=peak_running,
        output_lens=output_lens, first_answer=Spread.of(firsts, percentiles))


def _peak(done: Sequence[RequestTiming]) -> tuple[float, int]:
    """vLLM's peak figures: the most chunks (its "tokens") that arrived in one whole second
    counted from the first start, and the most requests running in any one second."""
    if not done:
        return 0.0, 0
    first = min(request.start_s for request in done)
    last = max(request.start_s + request.e2el_s for request in done)
    seconds = int(np.ceil(last - first)) + 1
    chunks = np.zeros(seconds)
    running = np.zeros(seconds)
    for request in done:
        at = request.start_s + request.ttft_s
        times = [at]
        for gap in request.itl_s:
            at += gap
            times.append(at)
        for moment in times:
            bucket = int(moment - first)
            if 0 <= bucket < seconds:
                chunks[bucket] += 1
        start = int(request.start_s - first)
        end = int((request.start_s + request.e2el_s) - first)
        for second in range(start, end + 1):
            running[second] += 1
    return float(np.max(chunks)), int(np.max(running))


def request_timing(stats: GenerationStats, status: str, start_s: float, *,
                   estimated_output_tokens: int | None = None,
                   estimated_prompt_tokens: int | None = None) -> RequestTiming:
    """A run recorded by this app as a request of the figures: its statistics (live, or
    ``GenerationStats.from_dict`` of the history's), its status, and ``start_s``, when its
    stream opened counted from the start of the whole run (the evaluation's).

    It succeeded when it was answered (finished, cut at max tokens or by the repetition
    guard) with at least one chunk timed: vLLM's client fails a request without a chunk, and
    a run recorded before chunks were timed has none. The estimates stand in for counts
    the server did not give (the output's: of thinking and answer text together)."""
    first = stats.first_chunk_s
    last = stats.last_chunk_s
    prompt = stats.prompt_tokens if stats.prompt_tokens is not None \
        else estimated_prompt_tokens or 0
    if status not in ANSWERED or first is None or last is None:
        return RequestTiming(success=False, prompt_tokens=prompt, start_s=start_s)
    return RequestTiming(
        success=True, ttft_s=first, itl_s=tuple(stats.inter_chunk_s), e2el_s=last,
        output_tokens=stats.output_tokens, estimated_output_tokens=estimated_output_tokens,
        prompt_tokens=prompt, start_s=start_s, first_answer_s=stats.time_to_first_token_s)
