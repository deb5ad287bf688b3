"""OllamaBackend against a test server that speaks Ollama's wire protocol."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from backends.errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendStatusError,
    ModelNotFoundError,
    StreamError,
    TruncatedStreamError,
)
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from backends.vllm_backend import VLLMBackend
from tests.servers.base import LocalServer
from tests.servers.ollama import SAMPLE_ANSWER, FakeOllama, Script, prompt_tokens, tokenize


def test_stream_yields_tokens_in_order_and_final_stats(ollama: OllamaBackend,
                                                       fake_ollama: FakeOllama) -> None:
    stream = ollama.stream("How many panels?", system="You are an analyst.",
                           sampling=Sampling(max_tokens=500))
    fragments = list(stream)

    assert fragments == tokenize(SAMPLE_ANSWER)
    assert stream.text == SAMPLE_ANSWER
    stats = stream.stats
    assert stats.done_reason == "stop"
    assert stats.output_tokens == len(fragments)
    assert stats.prompt_tokens == prompt_tokens([
        {"role": "system", "content": "You are an analyst."},
        {"role": "user", "content": "How many panels?"}]) == 20
    (load_ns,) = fake_ollama.load_durations_ns  # the first chat loads the model
    assert stats.server_load_s == pytest.approx(load_ns / 1e9)
    assert stats.server_prompt_eval_s == pytest.approx(0.024573166)
    assert stats.server_eval_s and stats.server_eval_s > 0
    assert stats.server_tokens_per_s == pytest.approx(len(fragments) / stats.server_eval_s)
    assert stats.time_to_first_token_s is not None and stats.total_time_s is not None
    assert 0 <= stats.time_to_first_token_s <= stats.total_time_s


def test_request_has_the_seeds_payload(ollama: OllamaBackend, fake_ollama: FakeOllama) -> None:
    ollama.generate("the prompt", system="the system", max_tokens=123, temperature=0.7)

    (body,) = fake_ollama.chat_requests
    assert body["model"] == "llama3.1:8b"
    assert body["messages"] == [{"role": "system", "content": "the system"},
                                {"role": "user", "content": "the prompt"}]
    assert body["stream"] is True
    # num_ctx: the smallest stable window that holds this short prompt and 123 tokens
    assert body["options"] == {"num_predict": 123, "temperature": 0.7, "num_ctx": 2048}


def test_no_system_message_when_system_is_empty(ollama: OllamaBackend,
                                                fake_ollama: FakeOllama) -> None:
    ollama.generate("only the prompt")
    assert fake_ollama.chat_requests[0]["messages"] == [
        {"role": "user", "content": "only the prompt"}]


def test_generate_returns_stripped_text_with_stats(ollama: OllamaBackend) -> None:
    answer = ollama.generate("prompt")
    assert answer == SAMPLE_ANSWER.strip()
    assert isinstance(answer, str)
    assert answer.stats.output_tokens == len(tokenize(SAMPLE_ANSWER))
    assert answer.stats.done_reason == "stop"


def test_done_reason_length_when_max_tokens_is_reached(ollama: OllamaBackend) -> None:
    answer = ollama.generate("prompt", max_tokens=5)
    assert answer == "".join(tokenize(SAMPLE_ANSWER)[:5]).strip()
    assert answer.stats.done_reason == "length"
    assert answer.stats.output_tokens == 5


@pytest.mark.parametrize("style", ["new", "old"])
def test_unknown_model_is_model_not_found_in_both_wordings(fake_ollama: FakeOllama,
                                                           style: str) -> None:
    fake_ollama.not_found = style
    backend = OllamaBackend(fake_ollama.url, model="llama3.1:70b")
    with pytest.raises(ModelNotFoundError) as info:
        backend.generate("prompt")
    assert info.value.model == "llama3.1:70b"
    assert "Pull it first: `ollama pull llama3.1:70b`" in str(info.value)
    assert "not found" in info.value.server_message
    assert info.value.server_message in info.value.message  # our hint and the server's words


class _NotOllama(BaseHTTPRequestHandler):
    """Some other web server: a plain-text 404 for every route."""

    def do_POST(self) -> None:
        body = b"404 page not found"
        self.send_response(404)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_plain_text_404_means_wrong_server_not_missing_model() -> None:
    with LocalServer(_NotOllama) as server:
        backend = OllamaBackend(server.url, model="llama3.1:8b")
        with pytest.raises(BackendStatusError) as info:
            backend.generate("prompt")
    assert not isinstance(info.value, ModelNotFoundError)
    assert info.value.status_code == 404
    assert "404 page not found" in str(info.value)


def test_400_carries_the_servers_text(fake_ollama: FakeOllama) -> None:
    backend = OllamaBackend(fake_ollama.url, model="")
    with pytest.raises(BackendStatusError) as info:
        backend.generate("prompt")
    assert info.value.status_code == 400
    assert info.value.server_message == "model is required"
    assert "model is required" in info.value.message
    assert isinstance(info.value, RuntimeError)


@pytest.mark.parametrize(("status", "text"), [
    (500, "llama runner process has terminated: exit status 2"),
    (503, "server busy, please try again.  maximum pending requests exceeded"),
])
def test_error_status_before_the_stream(ollama: OllamaBackend, script: Script, status: int,
                                        text: str) -> None:
    script.status, script.error = status, text
    with pytest.raises(BackendStatusError) as info:
        list(ollama.stream("prompt"))
    assert info.value.status_code == status
    assert info.value.server_message == text
    assert text in info.value.message and info.value.hint in str(info.value)
    assert not isinstance(info.value, (ModelNotFoundError, AuthenticationError))
    if status == 503:
        assert "busy" in info.value.hint


def test_error_line_mid_stream_raises_and_keeps_the_partial_text(ollama: OllamaBackend,
                                                                 script: Script) -> None:
    script.error_after = 4
    stream = ollama.stream("prompt")
    received: list[str] = []
    with pytest.raises(StreamError) as info:
        for fragment in stream:
            received.append(fragment)
    expected = "".join(tokenize(SAMPLE_ANSWER)[:4])
    assert "".join(received) == expected
    assert info.value.partial_text == expected
    assert stream.text == expected
    assert "model runner has unexpectedly stopped" in info.value.server_message
    assert stream.stats.done_reason == "error"


def test_generate_raises_mid_stream_error_with_partial_text(ollama: OllamaBackend,
                                                            script: Script) -> None:
    script.error_after = 3
    with pytest.raises(StreamError) as info:
        ollama.generate("prompt")
    assert info.value.partial_text == "".join(tokenize(SAMPLE_ANSWER)[:3])


def test_connection_dropped_mid_stream_is_truncated(ollama: OllamaBackend,
                                                    script: Script) -> None:
    script.drop_after = 6
    stream = ollama.stream("prompt")
    with pytest.raises(TruncatedStreamError) as info:
        list(stream)
    assert stream.text == "".join(tokenize(SAMPLE_ANSWER)[:6])
    assert info.value.partial_text == stream.text


def test_stream_ending_without_done_is_truncated_never_short(ollama: OllamaBackend,
                                                             script: Script) -> None:
    script.end_without_done = True
    with pytest.raises(TruncatedStreamError, match="no done message"):
        ollama.generate("prompt")


def test_malformed_line_is_an_error_keeping_the_text(ollama: OllamaBackend,
                                                     script: Script) -> None:
    script.malformed_after = 2
    stream = ollama.stream("prompt")
    with pytest.raises(StreamError, match="not JSON"):
        list(stream)
    assert stream.text == "".join(tokenize(SAMPLE_ANSWER)[:2])


def test_empty_lines_are_skipped(ollama: OllamaBackend, script: Script) -> None:
    script.blank_lines = True
    assert ollama.generate("prompt") == SAMPLE_ANSWER.strip()


def test_line_separators_inside_content_survive(ollama: OllamaBackend, script: Script) -> None:
    # Sent raw (as a proxy or another server may): str.splitlines would cut these lines apart.
    script.go_escape = False
    script.tokens = ["before", "\u2028", "mid\u2029dle", " \u0085after", " <b>&"]
    stream = ollama.stream("prompt")
    assert list(stream) == script.tokens
    assert stream.stats.done_reason == "stop"


def test_go_escaped_html_characters_are_decoded(ollama: OllamaBackend, script: Script) -> None:
    script.tokens = ["<script>", " a & b", " \u2028"]
    assert list(ollama.stream("prompt")) == script.tokens


def test_list_models_full_and_empty(fake_ollama: FakeOllama, ollama: OllamaBackend) -> None:
    assert ollama.list_models() == ["llama3.1:8b", "mistral:7b"]
    fake_ollama.models = []
    assert ollama.list_models() == []


def test_connection_refused_names_the_host_and_the_fix(closed_port: int) -> None:
    host = f"http://127.0.0.1:{closed_port}"
    backend = OllamaBackend(host)
    for call in (backend.list_models, lambda: backend.generate("prompt")):
        started = time.monotonic()
        with pytest.raises(BackendConnectionError) as info:
            call()
        assert time.monotonic() - started < 2  # no hidden retries
        assert isinstance(info.value, ConnectionError)
        assert host in str(info.value)
        assert "Make sure Ollama is running (`ollama serve`)" in str(info.value)


def test_first_fragment_arrives_before_the_server_sends_the_second(
        ollama: OllamaBackend, script: Script) -> None:
    gate = threading.Event()
    script.gate = gate  # the server holds the second line until the gate opens
    stream = ollama.stream("prompt")
    first: list[str] = []
    reader = threading.Thread(target=lambda: first.append(next(stream)))
    reader.start()
    reader.join(timeout=5)
    try:
        assert first == [tokenize(SAMPLE_ANSWER)[0]], "first token was held back"
        assert stream.stats.time_to_first_token_s is not None
    finally:
        gate.set()
    assert stream.text + "".join(stream) == SAMPLE_ANSWER


def test_close_hangs_up_and_the_server_stops(ollama: OllamaBackend, fake_ollama: FakeOllama,
                                             script: Script) -> None:
    script.delay = 0.05
    stream = ollama.stream("prompt")
    received = [next(stream), next(stream)]
    stream.close()
    assert fake_ollama.client_closed.wait(2), "server never saw the connection close"
    assert stream.text == "".join(received)
    assert stream.stats.done_reason == "cancelled"
    assert list(stream) == []


def test_close_from_another_thread_while_waiting_for_the_first_token(
        ollama: OllamaBackend, fake_ollama: FakeOllama, script: Script) -> None:
    script.delay = 0.05
    gate = threading.Event()
    script.gate = gate
    stream = ollama.stream("prompt")
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(stream))
    reader.start()
    time.sleep(0.2)  # the reader is now blocked in a socket read, waiting for line two
    stream.close()
    reader.join(timeout=2)
    assert not reader.is_alive(), "close() did not wake the blocked reader"
    assert fake_ollama.client_closed.wait(2)
    assert received == tokenize(SAMPLE_ANSWER)[:1]
    assert stream.stats.done_reason == "cancelled"
    gate.set()


def test_a_name_without_a_tag_is_found_as_its_latest_tag() -> None:
    """Ollama lists ``tinyllama`` as ``tinyllama:latest`` once pulled; a registry host's
    port is not a tag; other backends match names exactly."""
    models = ["mistral:7b", "tinyllama:latest", "127.0.0.1:11798/library/evil:latest"]
    assert OllamaBackend.find_model("tinyllama", models) == "tinyllama:latest"
    assert OllamaBackend.find_model("tinyllama:latest", models) == "tinyllama:latest"
    assert OllamaBackend.find_model("mistral:7b", models) == "mistral:7b"
    assert OllamaBackend.find_model("mistral", models) is None  # only :7b is there
    assert OllamaBackend.find_model("tinyllama:1.1b", models) is None
    assert (OllamaBackend.find_model("127.0.0.1:11798/library/evil", models)
            == "127.0.0.1:11798/library/evil:latest")
    assert OllamaBackend.find_model("llama3.1:latest", ["llama3.1"]) == "llama3.1"
    assert VLLMBackend.find_model("smollm2", ["smollm2:latest"]) is None
    assert VLLMBackend.find_model("smollm2", ["smollm2"]) == "smollm2"
