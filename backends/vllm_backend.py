"""vLLM client: OpenAI-compatible ``POST /v1/chat/completions``, the answer in one piece.

Chat completions take one of the seed's two paths, by config (``backends.vllm.client``):
Path A, the ``openai`` SDK (``backends.openai_sdk``), preferred and taken when it can be
imported, or Path B, the same request with ``requests`` (``backends.http``). Both read the
same body (``backends.completion``) and the same server-sent events, so they give the same
``Answer`` and statistics, the same thinking, the same Stop (the socket shut at once, even
before the first byte) and the same errors. ``stream()`` is for callers that must be able to
cancel: it yields the answer in one piece or, with ``sse=True``, token by token. The server's
other routes (``/v1/models``, ``/tokenize``, ``/metrics``, ``/version``) go through
``backends.http`` on both paths.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlparse

from . import http, openai_sdk
from .base import (
    THINK_OFF,
    THINK_ON,
    Backend,
    BackendOptions,
    ModelState,
    Schema,
    chat_messages,
)
from .completion import read_completion, reasoning, reasoning_tokens
from .context import ContextFit
from .errors import (
    AuthenticationError,
    BackendConnectionError,
    BackendStatusError,
    ContextLengthError,
    ModelNotFoundError,
    StreamError,
    TruncatedStreamError,
)
from .openai_sdk import CLIENT_OPENAI, CLIENT_REQUESTS
from .sampling import DEFAULT_SAMPLING, Sampling
from .shared import shared
from .stream import Answer, GenerationStats, TokenStream, chunk_fragments

SDK_MISSING = "openai SDK not installed: plain requests used"

DEFAULT_HOST = "http://localhost:8000"
DEFAULT_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"

log = logging.getLogger(__name__)


def _server_fit(prompt_tokens: int, exact: bool, max_tokens: int,
                window: int | None) -> ContextFit:
    """The window is the server's ``--max-model-len``, not what the model was trained for
    (which vLLM does not report); vLLM refuses a prompt over it (HTTP 400) and shortens an
    answer that has less room than max tokens."""
    return ContextFit(prompt_tokens, exact, max_tokens, window,
                      limit_by="this vLLM server's --max-model-len",
                      raise_limit="restart the vLLM server with --max-model-len {tokens}",
                      refuses=True)


# The numbers in vLLM's 400s for a request over the window: the window, then the prompt's
# size (0.32.0: "your prompt contains [at least] N input tokens" or "N characters"; before:
# "you requested T tokens (P in the messages, C in the completion)"), or max tokens alone.
_WINDOW = re.compile(r"maximum context length is (\d+) tokens")
_PROMPT_ALONE = re.compile(r"your prompt contains (?:at least )?(\d+) (input tokens|characters)")
_REQUESTED = re.compile(r"(\d+) in the messages, (\d+) in the completion")
_MAX_TOKENS_OVER = re.compile(r"max_(?:completion_)?tokens=(\d+) cannot be greater than "
                              r"max_model_len=(\d+)")


def context_hint(message: str) -> str:
    """What can help a request vLLM refused for its window, from the numbers in its message:
    a prompt that alone is over the window is not helped by lower max tokens."""
    fix = "serve the model with a larger --max-model-len"
    if (over := _MAX_TOKENS_OVER.search(message)) is not None:
        return (f"Lower max tokens below {int(over.group(2)):,} (the server's window, prompt "
                f"included), or {fix}.")
    window = _WINDOW.search(message)
    alone = _PROMPT_ALONE.search(message)
    requested = _REQUESTED.search(message)
    if window is not None and requested is not None:
        room = int(window.group(1)) - int(requested.group(1))
        if room > 0:
            return (f"Lower max tokens to {room:,} or less (the window's room after the "
                    f"prompt), shorten the prompt, or {fix}.")
        alone = requested
    if alone is not None:
        size = ("the prompt alone is over the window" if window is None else
                f"the prompt alone is over the {int(window.group(1)):,}-token window")
        return f"Shorten the prompt ({size}: lower max tokens cannot help), or {fix}."
    return f"Shorten the prompt or lower max tokens, or {fix}."


class VLLMBackend(Backend):
    """vLLM's OpenAI-compatible server. ``use_openai_sdk=None`` (config's ``client: openai``)
    picks Path A when the SDK is installed, Path B otherwise; False (``client: requests``)
    Path B."""

    name: ClassVar[str] = "vllm"
    label: ClassVar[str] = "vLLM"
    default_host: ClassVar[str] = DEFAULT_HOST
    default_model: ClassVar[str] = DEFAULT_MODEL
    streams: ClassVar[bool] = False  # one piece, as in production, unless stream(sse=True)
    can_stream_sse: ClassVar[bool] = True

    def __init__(self, host: str = DEFAULT_HOST, model: str = DEFAULT_MODEL,
                 api_key: str | None = None, *, connect_timeout: float = http.CONNECT_TIMEOUT_S,
                 read_timeout: float = http.READ_TIMEOUT_S,
                 use_openai_sdk: bool | None = None) -> None:
        # Requests go to the URL as given (it may hold user:password@); every message,
        # repr and record shows ``host``, the same URL without credentials.
        self._base_url = http.check_host(host, DEFAULT_HOST)
        self.host = http.redact(self._base_url)
        self.model = model
        self._api_key = api_key  # never logged: __repr__ leaves it out
        if api_key and self._base_url != self.host:
            # vLLM's --api-key (Bearer) and a URL's user:password (Basic) would both be the
            # Authorization header: only one can be sent. The key wins, it is vLLM's own.
            self._base_url = self.host
            _say_the_key_wins(self.host)
        self.timeout: http.Timeout = (connect_timeout, read_timeout)
        if use_openai_sdk and not openai_sdk.available:
            raise ImportError("use_openai_sdk=True but the openai package is not installed")
        self.uses_openai_sdk = openai_sdk.available if use_openai_sdk is None else use_openai_sdk
        # The SDK was asked for and is missing: Path B serves, and the status line says so.
        self.client_note = SDK_MISSING if use_openai_sdk is None and not self.uses_openai_sdk \
            else ""
        if self.client_note:
            _say_the_sdk_is_missing()

    @classmethod
    def from_options(cls, options: BackendOptions) -> VLLMBackend:
        return cls(options.host, options.model, options.api_key,
                   connect_timeout=options.connect_timeout, read_timeout=options.read_timeout,
                   use_openai_sdk=None if options.vllm_client == CLIENT_OPENAI else False)

    def __repr__(self) -> str:
        path = CLIENT_OPENAI if self.uses_openai_sdk else CLIENT_REQUESTS
        return f"VLLMBackend(host={self.host!r}, model={self.model!r}, path={path!r})"

    @property
    def unreachable_hint(self) -> str:
        port = urlparse(self.host).port or 8000
        return ("Start it with: `python -m vllm.entrypoints.openai.api_server "
                f"--model {self.model} --port {port}`")

    @classmethod
    def missing_model_hint(cls, model: str) -> str:
        return "Pick one of the served models (vLLM serves the model it was started with)."

    def list_models(self) -> list[str]:
        """Ids of the models the server serves (``GET /v1/models``)."""
        return list(self.served())

    def served(self) -> dict[str, dict[str, Any]]:
        """``GET /v1/models`` by id: each entry holds ``max_model_len``, the model's window."""
        response = self._request("GET", "/v1/models")
        if response.status_code != 200:
            raise self._status_error(response.status_code, http.error_text(response),
                                     check_models=False)
        return {entry["id"]: entry for entry in response.json().get("data", [])}

    def max_model_len(self) -> int | None:
        """The model's window (``--max-model-len``), from ``/v1/models``; cached a minute."""
        def ask() -> int | None:
            value = self.served().get(self.model, {}).get("max_model_len")
            return value if isinstance(value, int) else None

        return shared().vllm_windows.remember((self._base_url, self.model), ask)

    def _window_or_none(self) -> int | None:
        """For the statistics: the window, or None when the server cannot say."""
        try:
            return self.max_model_len()
        except (BackendConnectionError, BackendStatusError, ValueError, KeyError, TypeError):
            return None

    def context_fit(self, prompt: str, system: str = "",
                    max_tokens: int = DEFAULT_SAMPLING.max_tokens) -> ContextFit:
        """The prompt's exact token count from ``POST /tokenize`` (the chat template applied)
        against ``max_model_len``. vLLM refuses a prompt over the window (HTTP 400) and
        silently shortens an answer that would not fit beside it."""
        messages = chat_messages(prompt, system)
        response = self._request("POST", "/tokenize",
                                 json_body={"model": self.model, "messages": messages})
        if response.status_code == 200:
            body = response.json()
            window = body.get("max_model_len")
            return _server_fit(int(body["count"]), True, max_tokens,
                               window if isinstance(window, int) else None)
        if response.status_code == 404 and "json" in response.headers.get("Content-Type", ""):
            body_text = http.error_text(response)
            if "model" in body_text.lower():  # the model, not the route, is missing
                raise self._status_error(404, body_text)
        # A server without /tokenize (an OpenAI-compatible server that is not vLLM): estimate.
        window = self.max_model_len()
        texts = [message["content"] for message in messages]
        estimate = shared().estimator.estimate(self.host, self.model, texts)
        return _server_fit(estimate, False, max_tokens, window)

    def model_state(self) -> ModelState:
        """vLLM serves the model it was started with: always loaded; window from /v1/models."""
        version = http.json_value(self._request("GET", "/version"), "version")
        served = self.served()
        window = served.get(self.model, {}).get("max_model_len")
        # Whether the model thinks is not served anywhere: offer the switch Qwen3-style
        # templates read (chat_template_kwargs.enable_thinking); others ignore it.
        return ModelState(server_version=version, loaded=self.model in served,
                          window=window if isinstance(window, int) else None,
                          think_options=(THINK_OFF, THINK_ON), note=self.client_note)

    def generate(self, prompt: str, system: str = "",
                 max_tokens: int = DEFAULT_SAMPLING.max_tokens,
                 temperature: float = DEFAULT_SAMPLING.temperature, *,
                 schema: Schema | None = None) -> Answer:
        """The whole answer, stripped, as an ``Answer`` (a ``str`` carrying ``.stats``)."""
        return self.complete(prompt, system, Sampling(max_tokens, temperature), schema=schema)

    def complete(self, prompt: str, system: str = "",
                 sampling: Sampling = DEFAULT_SAMPLING, *,
                 schema: Schema | None = None) -> Answer:
        """``generate()`` with every sampling setting: one request, Path A or Path B."""
        payload = chat_body(self.model, prompt, system, sampling, schema)
        started = time.perf_counter()
        with self._post_chat(payload) as reply:
            body = reply.body()
        elapsed = time.perf_counter() - started
        answer = _answer_from_body(body, elapsed)
        answer.stats.context_window = self._window_or_none()
        return answer

    def prefix_cache_counters(self) -> tuple[float, float] | None:
        """(tokens looked up, tokens found) in vLLM's prefix cache since the server started,
        from ``/metrics``; None when the server does not report them."""
        response = self._request("GET", "/metrics")
        if response.status_code != 200:
            return None
        text = response.text
        queries = prometheus_sum(text, "vllm:prefix_cache_queries_total")
        hits = prometheus_sum(text, "vllm:prefix_cache_hits_total")
        return None if queries is None or hits is None else (queries, hits)

    def stream(self, prompt: str, system: str = "", sampling: Sampling = DEFAULT_SAMPLING,
               *, sse: bool = False, schema: Schema | None = None) -> TokenStream:
        """A cancellable request: ``close()`` shuts the connection, and vLLM aborts the
        generation. One fragment (the whole answer) unless ``sse``: then token by token."""
        payload = chat_body(self.model, prompt, system, sampling, schema)
        if sse:
            payload["stream"] = True
            payload["stream_options"] = {"include_usage": True}
        abort = http.Abort()
        return TokenStream(lambda handle: self._fragments(handle, payload, abort), abort=abort)

    def _fragments(self, handle: TokenStream, payload: dict[str, Any],
                   abort: http.Abort) -> Iterator[str]:
        with self._post_chat(payload, abort, partial_text=lambda: handle.text) as reply:
            if not payload.get("stream"):
                answer = _answer_from_body(reply.body(), 0.0)
                handle.stats.prompt_tokens = answer.stats.prompt_tokens
                handle.stats.output_tokens = answer.stats.output_tokens
                handle.stats.thinking_tokens = answer.stats.thinking_tokens
                handle.stats.done_reason = answer.stats.done_reason
                yield from chunk_fragments(answer.thinking, str(answer))  # one chunk
                # Asked once the answer is timed (as after [DONE] below).
                handle.stats.context_window = self._window_or_none()
                return
            yield from self._server_sent_events(handle, reply.lines())

    def _server_sent_events(self, handle: TokenStream, lines: Iterator[bytes]) -> Iterator[str]:
        """``data: {chunk}`` lines until ``data: [DONE]``; usage comes in a last chunk."""
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # comments, event names, ids
            data = line[5:].strip()
            if data == b"[DONE]":
                # Asked once the answer is whole: llama-cpp-python's server interrupts a
                # running generation when another request arrives, and a down host would
                # cost a second timeout before the chat.
                handle.stats.context_window = self._window_or_none()
                return
            try:
                chunk = json.loads(data)
            except ValueError:
                raise StreamError(f"vLLM sent an event that is not JSON: {data[:120]!r}",
                                  hint="The text received so far is kept.", backend="vLLM",
                                  host=self.host, partial_text=handle.text) from None
            if "error" in chunk:
                message = http.message_from_body(chunk)
                raise StreamError(f"vLLM stopped with an error: {message}",
                                  hint="The text received so far is kept.",
                                  server_message=message, status_code=200, backend="vLLM",
                                  host=self.host, partial_text=handle.text)
            usage = chunk.get("usage") or {}
            if usage:
                handle.stats.prompt_tokens = usage.get("prompt_tokens")
                handle.stats.output_tokens = usage.get("completion_tokens")
                handle.stats.thinking_tokens = reasoning_tokens(usage)
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                yield from chunk_fragments(reasoning(delta), delta.get("content"))
                if choice.get("finish_reason"):
                    handle.stats.done_reason = choice["finish_reason"]
        raise TruncatedStreamError(
            "The vLLM stream ended before the answer was complete (no [DONE]).",
            hint="The text received so far is kept.", backend="vLLM", host=self.host,
            partial_text=handle.text)

    def _post_chat(self, payload: dict[str, Any], abort: http.Abort | None = None,
                   partial_text: Callable[[], str] = str
                   ) -> contextlib.AbstractContextManager[_Reply]:
        """``POST /v1/chat/completions`` on this backend's path, its reply open while inside;
        an error status raises. ``abort`` gets the request's socket; ``partial_text`` is the
        text a broken stream keeps."""
        if self.uses_openai_sdk:
            return self._post_with_sdk(payload, abort, partial_text)
        return self._post_with_requests(payload, abort, partial_text)

    # -- Path A -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _post_with_sdk(self, payload: dict[str, Any], abort: http.Abort | None,
                       partial_text: Callable[[], str]) -> Iterator[_Reply]:
        client = openai_sdk.client(self._base_url, self._api_key, self.timeout)
        typed = {key: value for key, value in payload.items() if key in _SDK_ARGUMENTS}
        extra = {key: value for key, value in payload.items() if key not in _SDK_ARGUMENTS}
        errors = openai_sdk.map_errors(
            backend="vLLM", host=self.host, timeout=self.timeout,
            unreachable_hint=self.unreachable_hint, status_error=self._status_error,
            partial_text=partial_text)
        # Every failure, sending or reading, in Path B's words; the response closed inside.
        with errors, contextlib.ExitStack() as opened:
            with openai_sdk.hangup_on(abort):
                response = opened.enter_context(
                    client.chat.completions.with_streaming_response.create(
                        **typed, extra_body=extra or None))
            if abort is not None:  # before the connection goes back to the SDK's pool
                opened.callback(abort.release)
            # The SDK's typed ChatCompletion, as the same dict as Path B's body.
            yield _Reply(body=lambda: response.parse().model_dump(),
                         lines=lambda: http.split_lines(response.iter_bytes()))

    # -- Path B -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _post_with_requests(self, payload: dict[str, Any], abort: http.Abort | None,
                            partial_text: Callable[[], str]) -> Iterator[_Reply]:
        response = self._request("POST", "/v1/chat/completions", json_body=payload,
                                 stream=True, abort=abort)
        try:
            if response.status_code != 200:
                raise self._status_error(response.status_code, http.error_text(response))
            yield _Reply(body=response.json,
                         lines=lambda: http.iter_lines(response, backend="vLLM",
                                                       host=self.host,
                                                       partial_text=partial_text))
        finally:
            response.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else None
        return http.request(method, self._base_url + path, timeout=self.timeout, headers=headers,
                            unreachable_hint=self.unreachable_hint, backend="vLLM",
                            host=self.host, **kwargs)

    def _status_error(self, status: int, message: str,
                      check_models: bool = True) -> BackendStatusError:
        common: dict[str, Any] = {"server_message": message, "backend": "vLLM",
                                  "host": self.host}
        if status == 401:
            return AuthenticationError(
                f"vLLM at {self.host} refused the API key (HTTP 401: {message}).",
                hint="Set the key in the environment variable named by "
                     "backends.vllm.api_key_env in config.yaml.", status_code=401, **common)
        if status == 404 and check_models:
            served = self._served_models()
            if served is None or self.model not in served:
                listed = ", ".join(served) if served else "none could be listed"
                return ModelNotFoundError(
                    f"vLLM at {self.host} does not serve {self.model!r}.",
                    hint=f"Served models: {listed}. Set the model to one of them.",
                    model=self.model, available=served or [], **common)
        if status == 400 and ("context length" in message or "max_model_len" in message):
            return ContextLengthError(
                f"The prompt does not fit {self.model}'s context window on vLLM: {message}",
                hint=context_hint(message), status_code=status, **common)
        return BackendStatusError(f"vLLM answered HTTP {status}: {message}",
                                  hint="That is the server's own message.",
                                  status_code=status, **common)

    def _served_models(self) -> list[str] | None:
        try:
            return self.list_models()
        except (BackendConnectionError, BackendStatusError, ValueError, KeyError):
            return None


@dataclass(frozen=True)
class _Reply:
    """The answer to one chat completion request, on either path: its whole body (one
    piece), or its lines as they arrive (server-sent events)."""

    body: Callable[[], Any]
    lines: Callable[[], Iterator[bytes]]


# The request's keys the SDK's create() names; the others (vLLM's) go in its extra_body.
_SDK_ARGUMENTS = ("model", "messages", "max_tokens", "temperature", "stream", "stream_options",
                  "response_format")


def _say_the_sdk_is_missing() -> None:
    """Logged once: config.yaml asks for the openai SDK, and it is not installed."""
    state = shared()
    if not state.sdk_missing_said:
        state.sdk_missing_said = True
        log.warning("backends.vllm.client is openai, but the openai package is not installed: "
                    "vLLM's chat completions go through plain requests (Path B).")


def _say_the_key_wins(host: str) -> None:
    """Logged once per host: its user:password is not sent, the API key is."""
    said = shared().key_wins_said
    if host not in said:
        said.add(host)
        log.warning("vLLM at %s: the API key is sent (Authorization: Bearer) and the host's "
                    "user:password is not: both would use the Authorization header.", host)


def chat_body(model: str, prompt: str, system: str,
              sampling: Sampling = DEFAULT_SAMPLING,
              schema: Schema | None = None) -> dict[str, Any]:
    """The chat completion request body both paths, ``stream()`` and batch files send; a
    structured answer's schema as ``response_format`` (json_schema: vLLM's constrained
    decoding; its ``name`` is required)."""
    body = {"model": model, "messages": chat_messages(prompt, system),
            **sampling_fields(sampling)}
    if schema is not None:
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": str(schema.get("title") or "answer"), "schema": dict(schema)}}
    return body


def sampling_fields(sampling: Sampling) -> dict[str, Any]:
    """``Sampling`` as the body's fields: OpenAI's max_tokens and temperature, and vLLM's
    extensions: ``repetition_penalty`` (None sends nothing: the server's, 1.0) and Think
    ("" sends nothing: the chat template's default, Qwen3 thinks) as the template's
    ``enable_thinking`` and, for a level, gpt-oss's ``reasoning_effort``."""
    fields: dict[str, Any] = {"max_tokens": sampling.max_tokens,
                              "temperature": sampling.temperature}
    if sampling.repeat_penalty is not None:
        fields["repetition_penalty"] = sampling.repeat_penalty
    think = sampling.think
    if think:
        fields["chat_template_kwargs"] = {"enable_thinking": think != THINK_OFF}
        if think not in (THINK_ON, THINK_OFF):
            fields["reasoning_effort"] = think
    return fields


def prometheus_sum(text: str, name: str) -> float | None:
    """Sum of a metric's samples over its label sets in Prometheus text; None if absent."""
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            try:
                total += float(line.rsplit("}", 1)[-1].split()[0])
            except (ValueError, IndexError):
                continue
            found = True
    return total if found else None


def _answer_from_body(body: Any, elapsed: float) -> Answer:
    """A chat completion body as an ``Answer``: text, thinking, finish reason and token
    counts (``backends.completion``), the whole wait as its time to the first token."""
    completion = read_completion(body)
    stats = GenerationStats(
        time_to_first_token_s=elapsed,  # one piece: the first token arrives with the last
        total_time_s=elapsed,
        prompt_tokens=completion.prompt_tokens,
        output_tokens=completion.output_tokens,
        done_reason=completion.finish_reason,
        fragments=1,
        thinking_tokens=completion.thinking_tokens,
    )
    if completion.thinking:
        stats.time_to_first_thinking_s = elapsed
        stats.thinking_chars = len(completion.thinking)
    return Answer(completion.text, stats, completion.thinking)
