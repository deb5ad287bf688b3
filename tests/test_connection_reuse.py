"""One pool of keep-alive connections per server, shared by every backend object and thread:
probes and batch rows reuse connections (counted on the server), and a Stop still hangs up
its own connection at once, and no other."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest

from backends import http
from backends.ollama_backend import OllamaBackend
from backends.status import Status
from backends.vllm_backend import VLLMBackend
from studio.pv.library import load_locations
from studio.runs.batch import MAX_CONCURRENCY, Batch, BatchSpec
from studio.runs.connection import model_state, probe
from studio.settings.config import Settings, parse_config
from tests.servers.base import LocalServer
from tests.servers.ollama import SAMPLE_ANSWER, FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion

ANSWER = "## RECOMMENDATION\n\nInstall **31 panels**."


def settings_for(kind: str, url: str, model: str) -> Settings:
    return parse_config({"llm": {"backend": kind, "host": url, "model": model}})


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_probes_and_status_lines_reuse_one_connection() -> None:
    """Each probe builds its backend anew (as every page run does); the connection stays."""
    with FakeOllama() as ollama, FakeVLLM(200, completion(ANSWER)) as vllm:
        for kind, server, model in (("ollama", ollama, "llama3.1:8b"),
                                    ("vllm", vllm, "smollm2")):
            settings = settings_for(kind, server.url, model)
            for _ in range(5):
                assert probe(settings, kind, server.url).reachable
                assert model_state(settings, kind, server.url, model) is not None
            assert server.connections == 1, kind


@pytest.mark.parametrize(("sdk", "pools"), [pytest.param(False, 1, id="requests"),
                                           pytest.param(True, 2, id="openai-sdk")])
def test_batch_rows_reuse_connections(sdk: bool, pools: int) -> None:
    """Ten one-piece rows (vLLM, as in production), two at a time: two connections in each
    pool. Path B has one pool (requests'); on Path A the chats go through the openai SDK's
    own pool, and the window and token counts through requests'."""
    with FakeVLLM(200, completion(ANSWER)) as server:
        spec = BatchSpec(scenarios=load_locations()[:10], backend="vllm", host=server.url,
                         model="smollm2", system="", concurrency=2)
        batch = Batch(spec, build=lambda: VLLMBackend(server.url, "smollm2",
                                                      use_openai_sdk=sdk)).start()
        assert batch.wait(20)
    assert [row.status for row in batch.rows] == [Status.FINISHED] * 10
    assert server.chat_calls == 10
    assert server.connections <= 2 * pools


def test_generate_calls_in_turn_use_one_connection() -> None:
    with FakeVLLM(200, completion(ANSWER)) as server:
        for _ in range(4):  # a new backend object each time, as the pages build them
            backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=False)
            assert backend.generate("Size it.") == ANSWER
            assert "".join(backend.stream("Size it.")) == ANSWER
    assert server.chat_calls == 8 and server.connections == 1


def test_a_stop_hangs_up_its_own_connection_and_no_other() -> None:
    """Two one-piece requests wait on the same server, on pooled connections; Stop on one
    hangs up that one at once; the other is answered, and the next call still works."""
    with FakeVLLM(200, completion(ANSWER), delay=1.0) as server:
        backend = VLLMBackend(server.url, "smollm2")
        backend.list_models()  # a connection in the pool: the first request reuses it
        stopped, other = backend.stream("Size it."), backend.stream("Size it.")
        answers: dict[str, str] = {}
        readers = [threading.Thread(target=lambda s=stream, k=key: answers.update(
            {k: "".join(s)})) for key, stream in (("stopped", stopped), ("other", other))]
        for reader in readers:
            reader.start()
        assert wait_until(lambda: server.chat_calls == 2)
        clicked = time.monotonic()
        stopped.close()
        assert wait_until(lambda: server.hangups == 1, 1.0)
        hung_up_after = time.monotonic() - clicked
        for reader in readers:
            reader.join(5)
        assert stopped.stats.done_reason == "cancelled" and answers["stopped"] == ""
        assert other.stats.done_reason == "stop" and answers["other"] == ANSWER
        assert server.hangups == 1  # the other request's connection stayed up
        assert backend.list_models() == ["smollm2"]  # the pool still serves
        server.delay = 0.0
        assert backend.generate("Size it.") == ANSWER
    assert hung_up_after < 0.5


def test_a_stopped_ollama_stream_leaves_a_concurrent_one_streaming() -> None:
    with FakeOllama(script=Script(tokens=tokenize(SAMPLE_ANSWER), delay=0.02)) as server:
        backend = OllamaBackend(server.url, "llama3.1:8b")
        first, second = backend.stream("Size it."), backend.stream("Size it.")
        next(first), next(second)
        first.close()
        assert server.client_closed.wait(2)
        assert second.text + "".join(second) == SAMPLE_ANSWER
        assert second.text == SAMPLE_ANSWER and second.stats.done_reason == "stop"
        assert first.stats.done_reason == "cancelled" and len(server.hangups) == 1
        assert backend.generate("Again.") == SAMPLE_ANSWER.strip()


def test_an_abort_after_its_answer_was_read_shuts_nobody_elses_request() -> None:
    """A request's connection goes back to the pool once its answer is read, and may carry
    the next request: the first request's Abort, called late, must not hang up that one,
    nor the connection while it waits in the pool."""
    with FakeVLLM(200, completion(ANSWER)) as server:
        backend = VLLMBackend(server.url, "smollm2", use_openai_sdk=False)
        idle, late = http.Abort(), http.Abort()
        assert backend._request("GET", "/v1/models", abort=idle).status_code == 200
        idle()  # its connection is idle in the pool now
        assert backend._request("GET", "/v1/models", abort=late).status_code == 200
        server.delay = 0.5
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(backend.generate("Size it.")))
        reader.start()
        assert wait_until(lambda: server.chat_calls == 1)
        late()  # the same (pooled) connection now carries the chat
        reader.join(5)
    assert answer == [ANSWER] and server.hangups == 0 and server.connections == 1


class _SetsCookies(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cookies_seen: ClassVar[list[str | None]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.cookies_seen.append(self.headers.get("Cookie"))
        body = b'{"models": []}'
        self.send_response(200)
        self.send_header("Set-Cookie", "session=someone-elses; Path=/")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_a_cookie_a_server_sets_is_never_sent_back() -> None:
    """The pooled session is every user's: it keeps no cookie from one request to the next."""
    with LocalServer(_SetsCookies) as server:
        for _ in range(3):
            assert OllamaBackend(server.url).list_models() == []
    assert _SetsCookies.cookies_seen == [None, None, None]


def test_the_pool_holds_a_whole_batch() -> None:
    assert http.POOL_SIZE >= MAX_CONCURRENCY
