"""VLLMBackend, both paths, against a real OpenAI-compatible server and vLLM's error shapes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from backends.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendError,
    BackendStatusError,
    BackendTimeoutError,
    ContextLengthError,
    ModelNotFoundError,
    StreamError,
)
from backends.sampling import Sampling
from backends.stream import GenerationStats
from backends.vllm_backend import VLLMBackend
from studio.pv.structured import SCHEMA
from tests.servers.llama_server import LlamaCppServer
from tests.servers.vllm import (
    CONTEXT_TOO_LONG,
    NOT_FOUND_NEW,
    NOT_FOUND_OLD,
    FakeVLLM,
)
from tests.test_access import Canary, Redirector

T = TypeVar("T")
PATHS = [pytest.param(True, id="openai-sdk"), pytest.param(False, id="requests")]
QUESTION = "What is the capital of France? Answer in one sentence."


@pytest.fixture(scope="module")
def real_server() -> Iterator[LlamaCppServer]:
    with LlamaCppServer(alias="smollm2") as server:
        yield server


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LlamaCppServer]:
    with LlamaCppServer(alias="smollm2", api_key="test-key-123") as server:
        yield server


@pytest.mark.parametrize("sdk", PATHS)
def test_list_models_on_a_real_server(real_server: LlamaCppServer, sdk: bool) -> None:
    backend = VLLMBackend(real_server.url, model="smollm2", use_openai_sdk=sdk)
    assert backend.list_models() == ["smollm2"]


@pytest.mark.parametrize("sdk", PATHS)
def test_generate_on_a_real_server(real_server: LlamaCppServer, sdk: bool) -> None:
    backend = VLLMBackend(real_server.url, model="smollm2", use_openai_sdk=sdk)
    assert backend.uses_openai_sdk is sdk
    answer = backend.generate(QUESTION, system="You are a helpful assistant.",
                              max_tokens=40, temperature=0.0)
    assert answer.strip() and answer == answer.strip()
    stats = answer.stats
    assert stats.output_tokens and 0 < stats.output_tokens <= 40
    assert stats.prompt_tokens and stats.prompt_tokens > 10
    assert stats.done_reason in ("stop", "length")
    assert stats.time_to_first_token_s == stats.total_time_s  # one piece
    assert stats.client_tokens_per_s and stats.client_tokens_per_s > 0


@pytest.mark.parametrize("sdk", PATHS)
def test_max_tokens_reached_is_length(real_server: LlamaCppServer, sdk: bool) -> None:
    backend = VLLMBackend(real_server.url, model="smollm2", use_openai_sdk=sdk)
    answer = backend.generate("Write a long essay about solar panels.", max_tokens=8)
    assert answer.stats.done_reason == "length"
    assert answer.stats.output_tokens == 8


@pytest.mark.parametrize("sdk", PATHS)
def test_api_key_on_a_real_server(keyed_server: LlamaCppServer, sdk: bool) -> None:
    without = VLLMBackend(keyed_server.url, model="smollm2", use_openai_sdk=sdk)
    with pytest.raises(AuthenticationError) as info:
        without.generate(QUESTION, max_tokens=5)
    assert info.value.status_code == 401
    assert "test-key-123" not in str(info.value)
    wrong = VLLMBackend(keyed_server.url, model="smollm2", api_key="nope", use_openai_sdk=sdk)
    with pytest.raises(AuthenticationError):
        wrong.generate(QUESTION, max_tokens=5)
    right = VLLMBackend(keyed_server.url, model="smollm2", api_key="test-key-123",
                        use_openai_sdk=sdk)
    assert right.generate(QUESTION, max_tokens=5)
    assert "test-key-123" not in repr(right)


def test_requests_path_is_chosen_when_openai_is_missing(real_server: LlamaCppServer) -> None:
    """config.yaml's default client is openai; without the SDK the backend built from it
    answers through requests, says so once in the log, and its status line says so."""
    # A fresh interpreter in which `import openai` fails, as on a machine without the SDK.
    code = (
        "import sys, json; sys.modules['openai'] = None\n"
        "from studio.runs.connection import from_config\n"
        f"b = from_config({{'llm': {{'backend': 'vllm', 'host': {real_server.url!r}, "
        "'model': 'smollm2'}})\n"
        "b = from_config({'llm': {'backend': 'vllm', 'host': b.host, 'model': b.model}})\n"
        "a = b.generate('Say hello.', max_tokens=10)\n"
        "from backends.sampling import Sampling\n"
        "s = b.stream('Say hello.', '', Sampling(max_tokens=10), sse=True).read_all()\n"
        "print(json.dumps([b.uses_openai_sdk, str(a), a.stats.output_tokens, str(s),\n"
        "                  b.model_state().notes()]))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    uses_sdk, text, tokens, streamed, notes = json.loads(
        result.stdout.strip().splitlines()[-1])
    assert uses_sdk is False
    assert text and tokens > 0 and streamed
    assert "openai SDK not installed: plain requests used" in notes
    assert result.stderr.count("the openai package is not installed") == 1


@pytest.mark.parametrize("sdk", PATHS)
@pytest.mark.parametrize("body", [NOT_FOUND_NEW, NOT_FOUND_OLD], ids=["v0.10.1+", "older"])
def test_unknown_model_lists_the_served_models(sdk: bool, body: dict[str, object]) -> None:
    with FakeVLLM(404, body, served=("smollm2", "qwen2.5")) as server:
        backend = VLLMBackend(server.url, model="nope", use_openai_sdk=sdk)
        with pytest.raises(ModelNotFoundError) as info:
            backend.generate(QUESTION)
    error = info.value
    assert error.model == "nope"
    assert error.available == ["smollm2", "qwen2.5"]
    assert "smollm2, qwen2.5" in str(error)
    assert "The model `nope` does not exist." in error.server_message
    # Both: our hint (the served models) and the server's own words, whatever its version.
    assert "The model `nope` does not exist." in error.message
    assert "The model `nope` does not exist." in str(error)
    assert server.chat_calls == 1  # no retries


@pytest.mark.parametrize("sdk", PATHS)
def test_401_from_the_error_server(sdk: bool) -> None:
    with FakeVLLM(200, {}, api_key="secret-abc") as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk)
        with pytest.raises(AuthenticationError) as info:
            backend.generate(QUESTION)
    assert info.value.server_message == "Unauthorized"
    assert "Unauthorized" in str(info.value)
    assert "api_key_env" in info.value.hint


@pytest.mark.parametrize("sdk", PATHS)
def test_context_length_400_is_readable(sdk: bool) -> None:
    with FakeVLLM(400, CONTEXT_TOO_LONG) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk)
        with pytest.raises(BackendStatusError) as info:
            backend.generate("x" * 30_000)
    error = info.value
    assert not isinstance(error, ModelNotFoundError)
    assert error.status_code == 400
    assert "maximum context length is 2048 tokens" in str(error)
    assert "Shorten the prompt" in error.hint


@pytest.mark.parametrize("sdk", PATHS)
def test_500_carries_the_server_message_without_retries(sdk: bool) -> None:
    body = {"error": {"message": "engine dead", "type": "InternalServerError", "code": 500}}
    with FakeVLLM(500, body) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk)
        with pytest.raises(BackendStatusError) as info:
            backend.generate(QUESTION)
    assert info.value.status_code == 500
    assert info.value.server_message == "engine dead"
    assert "engine dead" in info.value.message
    assert isinstance(info.value, RuntimeError)
    assert server.chat_calls == 1


@pytest.mark.parametrize("sdk", PATHS)
def test_connection_refused_gives_the_start_command_fast(closed_port: int, sdk: bool) -> None:
    host = f"http://127.0.0.1:{closed_port}"
    backend = VLLMBackend(host, model="smollm2", use_openai_sdk=sdk)
    started = time.monotonic()
    with pytest.raises(BackendConnectionError) as info:
        backend.generate(QUESTION)
    assert time.monotonic() - started < 2  # the SDK's two default retries are off
    message = str(info.value)
    assert host in message
    assert "python -m vllm.entrypoints.openai.api_server --model smollm2" in message
    with pytest.raises(BackendConnectionError):
        backend.list_models()


@pytest.mark.parametrize("sdk", PATHS)
def test_a_redirect_is_an_error_on_both_paths_and_never_followed(sdk: bool) -> None:
    """The openai SDK's own HTTP client follows redirects: Path A must not, like Path B."""
    with Canary() as canary, Redirector(canary.url) as configured:
        backend = VLLMBackend(configured.url, model="smollm2", use_openai_sdk=sdk)
        with pytest.raises(BackendStatusError) as info:
            backend.generate(QUESTION)
        for sse in (False, True):
            with pytest.raises(BackendStatusError) as streamed:
                "".join(backend.stream(QUESTION, sse=sse))
            assert streamed.value.status_code == 302
        with pytest.raises(BackendStatusError):
            backend.list_models()
    assert info.value.status_code == 302
    assert "answered with a redirect (HTTP 302)" in info.value.message
    assert "follows no redirects" in info.value.message
    assert "server's own address" in info.value.hint
    assert canary.url not in str(info.value)
    assert canary.hits == []


@pytest.mark.parametrize("sdk", PATHS)
def test_the_api_key_wins_over_a_hosts_user_and_password(sdk: bool) -> None:
    """Both would be the Authorization header: the key is sent, the URL's user:password is
    not; without a key, the URL's user:password is sent (Basic)."""
    with FakeVLLM(200, vllm_completion("Paris."), api_key="vllm-key-1") as server:
        host = server.url.replace("http://", "http://proxyuser:proxyPW@")
        keyed = VLLMBackend(host, model="smollm2", api_key="vllm-key-1", use_openai_sdk=sdk)
        assert keyed.generate(QUESTION) == "Paris."
        assert "".join(keyed.stream(QUESTION)) == "Paris."
        assert keyed.list_models() == ["smollm2"]
        assert set(server.authorizations) == {"Bearer vllm-key-1"}
        server.authorizations.clear()
        unkeyed = VLLMBackend(host, model="smollm2", use_openai_sdk=sdk)
        with pytest.raises(AuthenticationError):
            unkeyed.generate(QUESTION)
        basic = "Basic " + base64.b64encode(b"proxyuser:proxyPW").decode()
        assert set(server.authorizations) == {basic}


def vllm_completion(content: str) -> dict[str, object]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1751057209,
            "model": "smollm2",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}}


# -- stream(): cancellable, one piece or server-sent events ---------------------------------
def test_stream_sse_on_a_real_server(real_server: LlamaCppServer) -> None:
    backend = VLLMBackend(real_server.url, model="smollm2")
    stream = backend.stream(QUESTION, sampling=Sampling(max_tokens=30, temperature=0.0), sse=True)
    fragments = list(stream)
    assert len(fragments) >= 2
    assert stream.text.strip()
    assert stream.stats.done_reason in ("stop", "length")


@pytest.mark.parametrize("sdk", PATHS)
def test_llama_cpp_server_refuses_a_json_schema_with_its_text(real_server: LlamaCppServer,
                                                              sdk: bool) -> None:
    """llama-cpp-python's server, the vLLM stand-in, takes only response_format text or
    json_object (+ schema): vLLM's json_schema is refused (HTTP 500, pydantic's words), and
    the page shows that, not an unconstrained answer."""
    backend = VLLMBackend(real_server.url, model="smollm2", use_openai_sdk=sdk)
    with pytest.raises(BackendStatusError) as raised:
        backend.stream(QUESTION, sampling=Sampling(max_tokens=20), schema=SCHEMA).read_all()
    assert raised.value.status_code == 500
    assert "Input should be 'text' or 'json_object'" in str(raised.value)


def test_stream_one_piece_on_a_real_server(real_server: LlamaCppServer) -> None:
    backend = VLLMBackend(real_server.url, model="smollm2")
    stream = backend.stream(QUESTION, sampling=Sampling(max_tokens=30, temperature=0.0))
    fragments = list(stream)
    assert len(fragments) == 1 and fragments[0].strip()
    assert stream.stats.output_tokens and stream.stats.prompt_tokens
    assert stream.stats.time_to_first_token_s is not None


@pytest.mark.parametrize("sdk", PATHS)
def test_stream_sse_tokens_usage_and_finish_reason(sdk: bool) -> None:
    with FakeVLLM(200, {}) as server:
        stream = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk).stream(
            QUESTION, sse=True)
        assert list(stream) == ["The", " capital", " is", " Paris", "."]
    assert stream.stats.output_tokens == 5 and stream.stats.prompt_tokens == 12
    assert stream.stats.done_reason == "stop"


@pytest.mark.parametrize("sdk", PATHS)
def test_stream_error_event_keeps_the_partial_text(sdk: bool) -> None:
    with FakeVLLM(200, {}, error_after=3) as server:
        stream = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk).stream(
            QUESTION, sse=True)
        with pytest.raises(StreamError) as info:
            list(stream)
    assert info.value.partial_text == "The capital is"
    assert info.value.server_message == "engine crashed mid-stream"


@pytest.mark.parametrize("sdk", PATHS)
@pytest.mark.parametrize("sse", [True, False])
def test_stream_unknown_model_lists_served(sse: bool, sdk: bool) -> None:
    with FakeVLLM(404, NOT_FOUND_NEW) as server:
        stream = VLLMBackend(server.url, model="nope", use_openai_sdk=sdk).stream(
            QUESTION, sse=sse)
        with pytest.raises(ModelNotFoundError) as info:
            list(stream)
    assert info.value.available == ["smollm2"]


@pytest.mark.parametrize("sdk", PATHS)
def test_close_mid_stream_hangs_up_at_once(sdk: bool) -> None:
    with FakeVLLM(200, {}, token_delay=0.5) as server:
        stream = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk).stream(
            QUESTION, sse=True)
        reader = threading.Thread(target=lambda: list(stream))
        reader.start()
        time.sleep(0.3)
        started = time.monotonic()
        stream.close()
        reader.join(timeout=2)
        assert not reader.is_alive()
        assert time.monotonic() - started < 1
        deadline = time.monotonic() + 3
        while server.hangups == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert server.hangups == 1
    assert stream.stats.done_reason == "cancelled"


@pytest.mark.parametrize("sdk", PATHS)
def test_close_while_a_one_piece_answer_is_awaited_hangs_up_at_once(sdk: bool) -> None:
    """vLLM sends nothing until a one-piece answer is whole: a Stop must shut the socket
    while the request still waits for the first byte, on the SDK's connection too."""
    with FakeVLLM(200, vllm_completion("Paris.")) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk)
        # An answer first: the SDK client's pool keeps its connection for the next run.
        assert "".join(backend.stream(QUESTION)) == "Paris."
        server.delay = 10.0
        stream = backend.stream(QUESTION)
        reader = threading.Thread(target=stream.read_all)
        calls, hangups = server.chat_calls, server.hangups
        reader.start()
        assert wait_for(lambda: server.chat_calls > calls, 3)
        time.sleep(0.2)
        started = time.monotonic()
        stream.close()
        reader.join(timeout=2)
        assert not reader.is_alive()
        assert wait_for(lambda: server.hangups > hangups, 3)
        assert time.monotonic() - started < 1
        assert stream.stats.done_reason == "cancelled" and stream.text == ""


@pytest.mark.parametrize("sdk", PATHS)
def test_a_finished_run_leaves_its_connection_to_the_next(sdk: bool) -> None:
    """An answer that is in lets go of its socket: a late Stop cannot shut a connection the
    client's pool keeps for (or has handed to) another request."""
    with FakeVLLM(200, vllm_completion("Paris.")) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk)
        first = backend.stream(QUESTION)
        assert "".join(first) == "Paris."
        abort = first._abort
        assert abort is not None
        abort()  # what a Stop clicked too late would run
        assert "".join(backend.stream(QUESTION)) == "Paris."
        assert backend.generate(QUESTION) == "Paris."
    # One kept-alive connection per pool: requests' (and the SDK's for Path A's chats).
    assert server.connections == (2 if sdk else 1) and server.hangups == 0


def wait_for(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


# -- both paths, side by side: the same answer, statistics, thinking and errors ---------------
def _both(make: Callable[[VLLMBackend], T], url: str, model: str = "smollm2",
          **options: Any) -> tuple[T, T]:
    """What ``make`` gives on Path A (the openai SDK), and on Path B (requests)."""
    return (make(VLLMBackend(url, model=model, use_openai_sdk=True, **options)),
            make(VLLMBackend(url, model=model, use_openai_sdk=False, **options)))


def _figures(stats: GenerationStats) -> dict[str, object]:
    """The statistics but the client's clocks."""
    return {key: value for key, value in stats.to_dict().items()
            if not key.endswith("_s") and "per_s" not in key}


@pytest.mark.parametrize("server_options", [
    pytest.param({}, id="plain"),
    pytest.param({"reasoning": ("Think", " hard.")}, id="reasoning-field"),
    pytest.param({"reasoning": ("Think",), "reasoning_field": "reasoning_content"},
                 id="reasoning_content"),
    pytest.param({"reasoning": ("Think", " hard."), "reasoning_parser": False},
                 id="inline-think-tags"),
])
@pytest.mark.parametrize("how", ["generate", "one-piece", "sse"])
def test_both_paths_give_the_same_answer_statistics_and_thinking(
        how: str, server_options: dict[str, Any]) -> None:
    def run(backend: VLLMBackend) -> tuple[str, str, dict[str, object]]:
        if how == "generate":
            answer = backend.generate(QUESTION)
            return str(answer), answer.thinking, _figures(answer.stats)
        stream = backend.stream(QUESTION, sse=how == "sse")
        answer = stream.read_all()
        return str(answer), answer.thinking, _figures(stream.stats)

    with FakeVLLM(200, vllm_completion("The capital is Paris."), **server_options) as server:
        sdk, plain = _both(run, server.url)
    assert sdk == plain
    text, thinking, figures = plain
    assert "<think>" not in text and "Paris" in text
    assert thinking == ("Think hard." if "hard" in str(server_options) else
                        "Think" if server_options else "")
    assert figures["output_tokens"] and figures["prompt_tokens"]


def _error_of(call: Callable[[], object]) -> tuple[type[BaseException], str, str]:
    try:
        call()
    except BackendError as exc:
        return type(exc), exc.message, exc.hint
    raise AssertionError("no error")


@pytest.mark.parametrize(("status", "body", "kind"), [
    pytest.param(404, NOT_FOUND_NEW, ModelNotFoundError, id="404"),
    pytest.param(400, CONTEXT_TOO_LONG, ContextLengthError, id="400-context"),
    pytest.param(500, {"error": {"message": "engine dead"}}, BackendStatusError, id="500"),
])
@pytest.mark.parametrize("how", ["generate", "one-piece", "sse"])
def test_both_paths_raise_the_same_error_in_the_same_words(
        how: str, status: int, body: dict[str, object], kind: type[BaseException]) -> None:
    def run(backend: VLLMBackend) -> tuple[type[BaseException], str, str]:
        if how == "generate":
            return _error_of(lambda: backend.generate(QUESTION))
        return _error_of(lambda: list(backend.stream(QUESTION, sse=how == "sse")))

    with FakeVLLM(status, body) as server:
        sdk, plain = _both(run, server.url, model="nope" if status == 404 else "smollm2")
    assert sdk == plain
    assert sdk[0] is kind


def test_both_paths_say_the_same_about_a_wrong_key_a_down_host_and_a_silent_one(
        closed_port: int) -> None:
    def run(backend: VLLMBackend) -> list[tuple[type[BaseException], str, str]]:
        return [_error_of(lambda: backend.generate(QUESTION)),
                _error_of(lambda: list(backend.stream(QUESTION))),
                _error_of(lambda: list(backend.stream(QUESTION, sse=True)))]

    with FakeVLLM(200, {}, api_key="secret-abc") as server:
        sdk, plain = _both(run, server.url, api_key="wrong")
    assert sdk == plain and sdk[0][0] is AuthenticationError
    sdk, plain = _both(run, f"http://127.0.0.1:{closed_port}")
    assert sdk == plain and sdk[0][0] is BackendConnectionError
    assert "Cannot reach vLLM" in sdk[0][1]
    with FakeVLLM(200, vllm_completion("Paris."), delay=3) as server:
        sdk, plain = _both(run, server.url, read_timeout=0.3)
    assert sdk == plain and sdk[0][0] is BackendTimeoutError
    assert "sent nothing for 0.3 s" in sdk[0][1]
    assert "llm.read_timeout" in sdk[0][2]


@pytest.mark.parametrize("sdk", PATHS)
def test_a_stream_that_breaks_or_stalls_keeps_its_text(sdk: bool) -> None:
    with FakeVLLM(200, {}, token_delay=1.0) as server:
        backend = VLLMBackend(server.url, model="smollm2", use_openai_sdk=sdk, read_timeout=0.4)
        stream = backend.stream(QUESTION, sse=True)
        with pytest.raises(BackendTimeoutError) as info:
            list(stream)
    assert "stopped sending in the middle of the answer" in info.value.message
    assert stream.stats.done_reason == "error"


def test_a_servers_bare_message_and_the_hint_read_as_two_sentences() -> None:
    """Found trying the Evaluate page: "vLLM answered HTTP 400: this test server does not
    stream The server's message is above." (no stop; "above" where the hint shares a line)."""
    error = BackendStatusError("vLLM answered HTTP 400: this test server does not stream",
                               hint="That is the server's own message.", status_code=400)
    assert str(error) == ("vLLM answered HTTP 400: this test server does not stream. That is "
                          "the server's own message.")
    assert str(BackendStatusError("Done already.", hint="Next.")) == "Done already. Next."
