"""Ollama client: streams NDJSON from ``POST /api/chat`` (see ../shared/seed/llm-backends.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

import requests

from . import http
from .base import (
    Answer,
    BackendStatusError,
    ModelNotFoundError,
    StreamError,
    TokenStream,
    TruncatedStreamError,
    chat_messages,
)

DEFAULT_HOST = "http://localhost:11434"
DEFAULT_MODEL = "llama3.1:8b"  # the seed's production model
UNREACHABLE_HINT = "Make sure Ollama is running (`ollama serve`)."
_NS = 1e-9


class OllamaBackend:
    """Ollama's native chat API. ``stream()`` yields tokens as Ollama flushes them."""

    name: ClassVar[str] = "ollama"
    label: ClassVar[str] = "Ollama"
    default_host: ClassVar[str] = DEFAULT_HOST
    default_model: ClassVar[str] = DEFAULT_MODEL
    streams: ClassVar[bool] = True
    can_stream_sse: ClassVar[bool] = False
    can_pull_models: ClassVar[bool] = True

    def __init__(self, host: str = DEFAULT_HOST, model: str = DEFAULT_MODEL, *,
                 connect_timeout: float = 5.0, read_timeout: float = 300.0,
                 keep_alive: str | int | None = None) -> None:
        # Requests go to the URL as given (it may hold user:password@); every message,
        # repr and record shows ``host``, the same URL without credentials.
        self._base_url = http.check_host(host, DEFAULT_HOST)
        self.host = http.redact(self._base_url)
        self.model = model
        self.timeout: http.Timeout = (connect_timeout, read_timeout)
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"OllamaBackend(host={self.host!r}, model={self.model!r})"

    @classmethod
    def missing_model_hint(cls, model: str) -> str:
        return f"Pull it first: `ollama pull {model}`"

    @classmethod
    def is_demo_model(cls, model: str) -> bool:
        return False

    def list_models(self) -> list[str]:
        """Names of the models pulled on the server (``GET /api/tags``)."""
        response = self._request("GET", "/api/tags")
        if response.status_code != 200:
            raise self._status_error(response)
        return [m.get("name") or m.get("model", "") for m in response.json().get("models", [])]

    def generate(self, prompt: str, system: str = "", max_tokens: int = 2048,
                 temperature: float = 0.2, *, repeat_penalty: float | None = None) -> Answer:
        """The whole answer, stripped, as an ``Answer`` (a ``str`` carrying ``.stats``)."""
        return self.stream(prompt, system, max_tokens, temperature,
                           repeat_penalty=repeat_penalty).read_all()

    def stream(self, prompt: str, system: str = "", max_tokens: int = 2048,
               temperature: float = 0.2, *, repeat_penalty: float | None = None,
               sse: bool = False) -> TokenStream:
        """Start a chat; iterate the result for text fragments, ``close()`` it to cancel.
        ``repeat_penalty`` None leaves the model's own setting (Ollama's default is 1.1).
        Ollama always streams (``sse`` changes nothing)."""
        options: dict[str, Any] = {"num_predict": max_tokens, "temperature": temperature}
        if repeat_penalty is not None:
            options["repeat_penalty"] = repeat_penalty
        payload: dict[str, Any] = {
            "model": self.model,
            "messages": chat_messages(prompt, system),
            "stream": True,
            "options": options,
        }
        if self.keep_alive is not None:
            payload["keep_alive"] = self.keep_alive
        abort = http.Abort()
        return TokenStream(lambda handle: self._fragments(handle, payload, abort), abort=abort)

    def _fragments(self, handle: TokenStream, payload: dict[str, Any],
                   abort: http.Abort) -> Iterator[str]:
        response = self._request("POST", "/api/chat", json_body=payload, stream=True,
                                 abort=abort)
        try:
            if response.status_code != 200:
                raise self._status_error(response)
            lines = http.iter_lines(response, backend="Ollama", host=self.host,
                                     partial_text=lambda: handle.text)
            for line in lines:
                try:
                    chunk = json.loads(line)
                except ValueError:
                    raise StreamError(
                        f"Ollama sent a line that is not JSON: {line[:120]!r}",
                        hint="The text received so far is kept.", backend="Ollama",
                        host=self.host, partial_text=handle.text) from None
                if "error" in chunk:
                    # Mid-stream failure: HTTP status stays 200, the last line is the error.
                    raise StreamError(
                        f"Ollama stopped with an error: {chunk['error']}",
                        hint="The text received so far is kept. Check `ollama serve`'s log.",
                        backend="Ollama", host=self.host, server_message=str(chunk["error"]),
                        status_code=200, partial_text=handle.text)
                content = (chunk.get("message") or {}).get("content") or ""
                if content:
                    yield content
                if chunk.get("done"):
                    _record_final_stats(handle, chunk)
                    return
            raise TruncatedStreamError(
                "The Ollama stream ended before the answer was complete (no done message).",
                hint="The text received so far is kept. Check `ollama serve`'s log.",
                backend="Ollama", host=self.host, partial_text=handle.text)
        finally:
            response.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return http.request(method, self._base_url + path, timeout=self.timeout,
                            unreachable_hint=UNREACHABLE_HINT, backend="Ollama",
                            host=self.host, **kwargs)

    def _status_error(self, response: requests.Response) -> BackendStatusError:
        text = http.error_text(response)
        status = response.status_code
        if status == 404 and "json" in response.headers.get("Content-Type", ""):
            # A JSON 404 is Ollama's "model not found" (its wording changed in v0.12);
            # a plain-text 404 means the route is wrong, e.g. the host is not Ollama.
            return ModelNotFoundError(
                f"Ollama has no model {self.model!r}.",
                hint=self.missing_model_hint(self.model), model=self.model,
                server_message=text, backend="Ollama", host=self.host)
        if status == 503:
            hint = "Ollama is busy with other requests; try again in a moment."
        elif status == 404:
            hint = f"Is {self.host} an Ollama server? Check the host (sidebar or config.yaml)."
        else:
            hint = "The server's message is above."
        return BackendStatusError(
            f"Ollama answered HTTP {status}: {text}", hint=hint, status_code=status,
            server_message=text, backend="Ollama", host=self.host)


def _record_final_stats(handle: TokenStream, chunk: dict[str, Any]) -> None:
    """Copy the server's figures from the ``done: true`` line (durations are nanoseconds)."""
    stats = handle.stats
    stats.done_reason = chunk.get("done_reason") or stats.done_reason
    stats.prompt_tokens = chunk.get("prompt_eval_count")
    stats.output_tokens = chunk.get("eval_count")

    def seconds(key: str) -> float | None:
        value = chunk.get(key)
        return value * _NS if isinstance(value, int | float) else None

    stats.server_total_s = seconds("total_duration")
    stats.server_load_s = seconds("load_duration")
    stats.server_prompt_eval_s = seconds("prompt_eval_duration")
    stats.server_eval_s = seconds("eval_duration")
