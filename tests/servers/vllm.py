"""A test server that answers vLLM's OpenAI-compatible routes like vLLM does.

Real vLLM's bodies, byte for byte where it matters (../shared/reference/wire-protocols.md):
a whole chat completion after a delay, the 404 of v0.10.1+ and the flat one before it, 401 for
a missing API key, 400 for a prompt over the context length.
"""

from __future__ import annotations

import json
import select
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.servers.base import LocalServer

NOT_FOUND_NEW = {"error": {"message": "The model `{model}` does not exist. Valid aliases: "
                           "smollm2.", "type": "NotFoundError", "param": "model", "code": 404}}
NOT_FOUND_OLD = {"object": "error", "message": "The model `{model}` does not exist.",
                 "type": "NotFoundError", "param": None, "code": 404}
UNAUTHORIZED = {"error": "Unauthorized"}
CONTEXT_TOO_LONG = {"error": {
    "message": "This model's maximum context length is 2048 tokens. However, you requested "
               "9000 tokens (7000 in the messages, 2000 in the completion). Please reduce the "
               "length of the messages or completion.",
    "type": "BadRequestError", "param": None, "code": 400}}


def completion(text: str, model: str = "smollm2", finish_reason: str = "stop",
               prompt_tokens: int = 47, completion_tokens: int = 200) -> dict[str, Any]:
    """A vLLM 0.32.0 non-streaming chat completion body."""
    return {"id": "chatcmpl-b41e8146fe769936", "object": "chat.completion",
            "created": 1795621977, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "refusal": None, "reasoning": None},
                         "logprobs": None, "finish_reason": finish_reason,
                         "stop_reason": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeVLLM(LocalServer):
    """Serves ``/v1/models`` (``served``) and answers every chat with (status, body), after
    ``delay`` seconds."""

    def __init__(self, status: int, body: dict[str, Any], served: tuple[str, ...] = ("smollm2",),
                 api_key: str | None = None, delay: float = 0.0,
                 tokens: tuple[str, ...] = ("The", " capital", " is", " Paris", "."),
                 token_delay: float = 0.0, error_after: int | None = None) -> None:
        self.status, self.body, self.served, self.api_key = status, body, served, api_key
        self.delay = delay
        # Streaming requests ("stream": true) get these tokens as server-sent events.
        self.tokens, self.token_delay, self.error_after = tokens, token_delay, error_after
        self.chat_calls = 0
        self.chat_requests: list[dict[str, Any]] = []  # the bodies, as sent
        self.hangups = 0
        super().__init__(_handler(self))


def _handler(server: FakeVLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._reply(401, UNAUTHORIZED)
                return False
            return True

        def do_GET(self) -> None:
            if self.path == "/v1/models" and self._authorized():
                self._reply(200, {"object": "list", "data": [
                    {"id": name, "object": "model", "owned_by": "vllm", "max_model_len": 2048}
                    for name in server.served]})
            elif self.path != "/v1/models":
                self._reply(404, {"detail": "Not Found"})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            server.chat_calls += 1
            server.chat_requests.append(body)
            if not self._authorized():
                return
            if not self._wait(server.delay):
                server.hangups += 1  # the client gave up while vLLM was still generating
                return
            if body.get("stream") and server.status == 200:
                self._stream(body)
                return
            text = json.dumps(server.body).replace("{model}", str(body.get("model")))
            self._reply(server.status, json.loads(text))

        def _wait(self, seconds: float) -> bool:
            """Sleep like a generating server; False as soon as the client hangs up."""
            deadline = time.monotonic() + seconds
            while (remaining := deadline - time.monotonic()) > 0:
                readable, _, _ = select.select([self.connection], [], [], min(remaining, 0.02))
                if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return False
            return True

        def _event(self, data: Any) -> None:
            text = data if isinstance(data, str) else json.dumps(data)
            payload = f"data: {text}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(payload), payload))
            self.wfile.flush()

        def _stream(self, body: dict[str, Any]) -> None:
            """vLLM's SSE: a role chunk, content chunks, finish, usage, [DONE]."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            base = {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                    "created": 1795621977, "model": body.get("model")}
            try:
                self._event({**base, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                                      "content": ""}}]})
                for index, token in enumerate(server.tokens):
                    if index == server.error_after:
                        self._event({"error": {"message": "engine crashed mid-stream",
                                               "type": "InternalServerError", "code": 500}})
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    time.sleep(server.token_delay)
                    self._event({**base, "choices": [{"index": 0, "delta": {"content": token},
                                                      "finish_reason": None}]})
                self._event({**base, "choices": [{"index": 0, "delta": {},
                                                  "finish_reason": "stop"}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    self._event({**base, "choices": [], "usage": {
                        "prompt_tokens": 12, "completion_tokens": len(server.tokens),
                        "total_tokens": 12 + len(server.tokens)}})
                self._event("[DONE]")
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                server.hangups += 1
            self.close_connection = True

    return Handler
