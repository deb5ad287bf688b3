"""What every backend shares: the error types, the run statistics and the stream handle.

The error hierarchy lets a caller catch precisely (like openai-python's): a connection problem,
a missing model, or anything else the server said. Every error carries a ``hint``, the one line
an analyst needs in order to act ("run `ollama serve`", "ollama pull llama3.1:8b").
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

from .context import ContextFit
from .repetition import RepetitionGuard
from .thinking import Thinking, ThinkSplitter

# How a run ended. "stop" and "length" are the servers' own words; the others are ours.
DONE_STOP = "stop"
DONE_LENGTH = "length"
DONE_CANCELLED = "cancelled"
DONE_ERROR = "error"
DONE_REPETITION = "repetition"  # stopped by us: the answer's tail was looping


COLD_START_S = 1.0  # a model load this long means the model was not loaded before the run


class BackendError(Exception):
    """Base of every error a backend raises. ``hint`` says what the user can do about it."""

    def __init__(self, message: str, *, hint: str = "", backend: str = "", host: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.backend = backend
        self.host = host

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


class BackendConnectionError(BackendError, ConnectionError):
    """The host could not be reached (refused, DNS, connect timeout)."""


class InvalidHostError(BackendError, ValueError):
    """The host URL is malformed (no scheme, a path, a bad port): no request was sent."""


class BackendTimeoutError(BackendConnectionError):
    """The host was reached but sent nothing within the read timeout."""


class BackendStatusError(BackendError, RuntimeError):
    """The server answered with an error. ``server_message`` is the server's own text; the
    message always carries it too, so whatever shows the error shows the server's words."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        server_message: str = "",
        partial_text: str = "",
        **kwargs: Any,
    ) -> None:
        if server_message and server_message not in message:
            message = f"{message} The server said: {server_message}"
        super().__init__(message, **kwargs)
        self.status_code = status_code
        self.server_message = server_message
        # Text generated before the error (mid-stream failures): never thrown away.
        self.partial_text = partial_text


class ModelNotFoundError(BackendStatusError):
    """The server does not have the requested model (HTTP 404)."""

    def __init__(self, message: str, *, model: str, available: list[str] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, status_code=404, **kwargs)
        self.model = model
        self.available = available or []


class ContextLengthError(BackendStatusError):
    """The server refused a prompt and answer that do not fit the model's window (HTTP 400:
    Ollama 0.30+ without context shift, vLLM always)."""


class AuthenticationError(BackendStatusError):
    """The server wants an API key that was missing or wrong (HTTP 401)."""


class StreamError(BackendStatusError):
    """The server reported an error, or the stream broke, after text had started to arrive."""


class TruncatedStreamError(StreamError):
    """The stream ended before the server said it was done: the answer is incomplete."""


@dataclass
class GenerationStats:
    """Figures of one run. Times are seconds measured by the client; ``server_*`` are the
    server's own (Ollama reports integer nanoseconds, converted here to seconds). A reasoning
    model's thinking has its own figures; ``output_tokens`` counts thinking and answer (the
    servers count them together)."""

    time_to_first_token_s: float | None = None  # the first token of the answer
    total_time_s: float | None = None
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    done_reason: str | None = None  # stop | length | cancelled | error | repetition
    server_total_s: float | None = None
    server_load_s: float | None = None
    server_prompt_eval_s: float | None = None
    server_eval_s: float | None = None
    fragments: int = 0
    context_window: int | None = None  # tokens the run's context held (prompt + answer)
    prompt_truncated: bool = False  # the server cut the prompt to fit (it said nothing)
    time_to_first_thinking_s: float | None = None
    thinking_chars: int = 0
    thinking_tokens: int | None = None  # as the server counts them (None: not reported)

    @property
    def thinking_s(self) -> float | None:
        """From the first thinking token to the first answer token (or the end)."""
        if self.time_to_first_thinking_s is None:
            return None
        until = self.time_to_first_token_s
        if until is None:
            until = self.total_time_s
        return None if until is None else max(until - self.time_to_first_thinking_s, 0.0)

    @property
    def cold_start(self) -> bool:
        """The server loaded the model for this run (Ollama's load_duration: a few ms when
        it was loaded already, seconds when not)."""
        return (self.server_load_s or 0.0) >= COLD_START_S

    @property
    def client_tokens_per_s(self) -> float | None:
        """Output tokens over the time from first token to the end, as the client saw it
        (over the whole wait for an answer that arrived in one piece)."""
        if not self.output_tokens or self.total_time_s is None:
            return None
        # From the first token of either channel: output_tokens counts thinking too.
        firsts = [t for t in (self.time_to_first_token_s, self.time_to_first_thinking_s)
                  if t is not None]
        span = self.total_time_s - (min(firsts) if firsts else 0.0)
        if self.fragments == 1 or span <= 0:
            span = self.total_time_s  # one piece: every token came with the whole wait
        return self.output_tokens / span if span > 0 else None

    @property
    def server_tokens_per_s(self) -> float | None:
        """Decode speed the server reports (Ollama: eval_count / eval_duration)."""
        if not self.output_tokens or not self.server_eval_s:
            return None
        return self.output_tokens / self.server_eval_s

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["client_tokens_per_s"] = self.client_tokens_per_s
        data["server_tokens_per_s"] = self.server_tokens_per_s
        data["cold_start"] = self.cold_start
        data["thinking_s"] = self.thinking_s
        return data


@dataclass(frozen=True)
class ModelState:
    """What a server says about itself and one model now: the status line's facts."""

    server_version: str | None = None
    loaded: bool | None = None  # None: the server does not say
    window: int | None = None  # the window the model is loaded with, or serves
    cpu_share: float | None = None  # share of the loaded model held in CPU memory (0..1)
    expires_at: str | None = None  # when an idle model will be unloaded
    # The Think settings this backend and model take (THINK_* values); () for no control.
    think_options: tuple[str, ...] = ()

    def notes(self) -> list[str]:
        """Short phrases for a status line: version, loaded or cold start, partly on CPU."""
        version = self.server_version or ""
        notes = [f"v{version}" if version[:1].isdigit() else version] if version else []
        if self.loaded is True:
            notes.append("model loaded" + (f" ({self.window:,}-token window)"
                                           if self.window else ""))
        elif self.loaded is False:
            notes.append("model not loaded: the next run starts cold")
        elif self.window:
            notes.append(f"{self.window:,}-token window")
        if self.cpu_share:
            notes.append("on CPU" if self.cpu_share >= 0.999
                         else f"partly on CPU ({self.cpu_share:.0%})")
        return notes


@dataclass(frozen=True)
class PullProgress:
    """One line of a model pull: a status, and for a layer its bytes done and total."""

    status: str
    completed: int | None = None
    total: int | None = None
    digest: str = ""

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min((self.completed or 0) / self.total, 1.0)


class Answer(str):
    """What ``generate()`` returns: the answer text (a plain ``str`` to any caller) that also
    carries the run's statistics as ``.stats`` and a reasoning model's ``.thinking``, so
    concurrent callers never share state."""

    stats: GenerationStats
    thinking: str

    def __new__(cls, text: str, stats: GenerationStats, thinking: str = "") -> Answer:
        answer = super().__new__(cls, text)
        answer.stats = stats
        answer.thinking = thinking
        return answer


class TokenStream:
    """An iterable of text fragments, in order, with ``close()`` and, once exhausted,
    ``stats``.

    ``close()`` may be called from any thread: it marks the stream cancelled and runs the
    backend's abort action (for HTTP backends: shut the socket, which stops generation on the
    server). The text received so far stays in ``text``.

    Every backend's stream passes through here, so the repetition guard lives here too: when
    the answer's tail loops, the stream ends after that fragment (the server is told to stop,
    as on a close) with stop reason ``repetition``, and the text is kept.

    Thinking never comes out of the iteration: a backend yields it as ``Thinking`` fragments,
    inline ``<think>`` tags are taken out of the content here, and it grows ``thinking``
    (which a page polls, as it polls ``text``).
    """

    def __init__(self, fragments: Callable[[TokenStream], Iterator[str]],
                 abort: Callable[[], None] | None = None) -> None:
        self.stats = GenerationStats()
        self._parts: list[str] = []
        self._thinking: list[str] = []
        self._splitter = ThinkSplitter()
        self._input_over = False
        self._abort = abort
        self._cancelled = threading.Event()
        self._guard = RepetitionGuard()
        self._looping = False
        self._started = time.perf_counter()
        self._iterator = fragments(self)

    @property
    def text(self) -> str:
        """All text received so far (the whole answer once exhausted)."""
        return "".join(self._parts)

    @property
    def thinking(self) -> str:
        """A reasoning model's thinking so far (never part of ``text``)."""
        return "".join(self._thinking)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def finished(self) -> bool:
        return self.stats.total_time_s is not None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while True:
            if self._looping:
                self._end_generation()
                self._finish(DONE_REPETITION)
                raise StopIteration
            if self._input_over:
                self._finish(DONE_CANCELLED if self.cancelled else None)
                raise StopIteration
            try:
                fragment = next(self._iterator)
                parts: list[str] = [fragment] if isinstance(fragment, Thinking) \
                    else self._splitter.feed(fragment)
            except StopIteration:
                self._input_over = True
                parts = self._splitter.flush()  # text held back in case it was a tag
            except Exception:
                self._take(self._splitter.flush())
                if self.cancelled:
                    # A socket we shut ourselves breaks the read: the cancel, not an error.
                    self._finish(DONE_CANCELLED)
                    raise StopIteration from None
                self._finish(DONE_ERROR)
                raise
            answer = self._take(parts)
            if not answer:
                continue  # thinking only: it grew ``thinking``; wait for answer text
            if not self._parts:
                self.stats.time_to_first_token_s = time.perf_counter() - self._started
            self._parts.append(answer)
            self.stats.fragments += 1
            self._looping = self._guard.feed(answer)
            return answer

    def _take(self, parts: list[str]) -> str:
        """Record the thinking parts; the answer text among ``parts``."""
        answer = []
        for part in parts:
            if isinstance(part, Thinking):
                if not self._thinking:
                    self.stats.time_to_first_thinking_s = time.perf_counter() - self._started
                self._thinking.append(part)
                self.stats.thinking_chars += len(part)
            else:
                answer.append(part)
        return "".join(answer)

    def close(self) -> None:
        """Cancel the run. Safe to call twice, from another thread, or after the end."""
        if self.finished:
            return
        self._cancelled.set()
        self._end_generation()
        self._finish(DONE_CANCELLED)

    def _end_generation(self) -> None:
        """Tell the server to stop (shut the socket) and close the backend's generator."""
        if self._abort is not None:
            with contextlib.suppress(OSError):
                self._abort()
        # ValueError: "generator already executing" - the iterating thread sees the flag.
        with contextlib.suppress(ValueError, AttributeError):
            self._iterator.close()  # type: ignore[attr-defined]

    def read_all(self) -> Answer:
        """Drain the stream and return the whole answer with its statistics."""
        for _ in self:
            pass
        return Answer(self.text.strip(), self.stats, self.thinking.strip())

    def _finish(self, outcome: str | None) -> None:
        """Record the end once: ``outcome`` is cancelled/error, or None for a normal end."""
        if self.stats.total_time_s is None:
            self.stats.total_time_s = time.perf_counter() - self._started
        if outcome is not None:
            self.stats.done_reason = outcome
        elif self.stats.done_reason is None:
            self.stats.done_reason = DONE_STOP

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self.finished:
                self.close()
        except Exception:
            pass


@runtime_checkable
class Backend(Protocol):
    """The contract every backend meets, and what it can do. Callers ask a backend (or its
    class, before one is built) about a capability; they never compare its name.
    """

    name: ClassVar[str]  # its key in config.yaml: ollama | vllm | embedded
    label: ClassVar[str]  # its name on the page
    default_host: ClassVar[str]  # "" when it needs no server
    default_model: ClassVar[str]
    streams: ClassVar[bool]  # stream() yields token by token unless told otherwise
    can_stream_sse: ClassVar[bool]  # stream(sse=True) turns a one-piece answer into tokens
    can_pull_models: ClassVar[bool]  # its server can fetch a model it lacks
    model: str
    host: str

    def generate(self, prompt: str, system: str = "", max_tokens: int = 2048,
                 temperature: float = 0.2, *, repeat_penalty: float | None = None,
                 think: str = "") -> str: ...

    def stream(self, prompt: str, system: str = "", max_tokens: int = 2048,
               temperature: float = 0.2, *, repeat_penalty: float | None = None,
               sse: bool = False, think: str = "") -> TokenStream: ...

    def list_models(self) -> list[str]: ...

    def context_fit(self, prompt: str, system: str = "", max_tokens: int = 2048) -> ContextFit:
        """Whether prompt and answer fit the window this run would get (asks the server)."""
        ...

    def model_state(self) -> ModelState:
        """The server's version and the model's state (loaded, window, on CPU)."""
        ...

    @classmethod
    def missing_model_hint(cls, model: str) -> str:
        """What to do about a model the server does not have."""
        ...

    @classmethod
    def is_demo_model(cls, model: str) -> bool:
        """Whether this model only demonstrates the pipeline (its figures are no advice)."""
        ...

    @classmethod
    def find_model(cls, model: str, models: Sequence[str]) -> str | None:
        """The server's name for ``model`` in its list ``models`` (Ollama: a name without a
        tag is ``name:latest``), None when it is not there. Every check of a model against a
        server's list goes through this."""
        ...


@runtime_checkable
class ModelPuller(Protocol):
    """A backend whose server can fetch a model it lacks (``can_pull_models``)."""

    def pull(self, model: str) -> PullStream: ...


@runtime_checkable
class PrefixCacheReporter(Protocol):
    """A backend whose server counts prefix-cache lookups and hits (vLLM's ``/metrics``)."""

    def prefix_cache_counters(self) -> tuple[float, float] | None: ...


class PullStream:
    """A model pull's progress lines, in order; ``close()`` (any thread) cancels it, and an
    error line from the server raises ``BackendStatusError``."""

    def __init__(self, lines: Iterator[PullProgress], abort: Callable[[], None]) -> None:
        self._lines = lines
        self._abort = abort
        self.cancelled = False

    def __iter__(self) -> Iterator[PullProgress]:
        return self

    def __next__(self) -> PullProgress:
        try:
            return next(self._lines)
        except BackendError:
            if self.cancelled:
                raise StopIteration from None
            raise

    def close(self) -> None:
        self.cancelled = True
        with contextlib.suppress(OSError):
            self._abort()


# Think settings a run may ask for. "" (the default) sends nothing: the server decides.
THINK_OFF, THINK_ON = "off", "on"
THINK_LEVELS = ("low", "medium", "high")
THINK_SETTINGS = ("", THINK_OFF, THINK_ON, *THINK_LEVELS)


def needs_server(backend: type[Backend] | Backend) -> bool:
    """A backend with a host to reach (the embedded model runs in this process)."""
    return bool(backend.default_host)


def delivery(backend: type[Backend] | Backend, sse: bool = False) -> str:
    """How a run's answer arrives: 'stream', 'stream (SSE)' or 'one piece'."""
    if backend.streams:
        return DELIVERY_STREAM
    return DELIVERY_SSE if sse and backend.can_stream_sse else DELIVERY_ONE_PIECE


DELIVERY_STREAM, DELIVERY_SSE, DELIVERY_ONE_PIECE = "stream", "stream (SSE)", "one piece"


def chat_messages(prompt: str, system: str) -> list[dict[str, str]]:
    """The OpenAI/Ollama chat message list: an optional system message, then the prompt."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    return messages

