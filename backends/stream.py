"""What a run produces while it runs: the stream handle every backend returns (TokenStream),
its statistics (GenerationStats), the answer (Answer: str + .stats + .thinking), and a model
pull's progress stream.

TokenStream is the one place every backend's chunks arrive, so it times them: each non-empty
chunk, thinking or answer, as ``vllm bench serve``'s client times each streamed chunk
(``GenerationStats.chunk_times_s``; the figures themselves: ``studio.runs.serving``).
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import BackendError
from .status import Status
from .thinking import Thinking, ThinkSplitter

COLD_START_S = 1.0  # a model load this long means the model was not loaded before the run
# Chunk arrival times are kept to 0.1 ms (cut down, never up: a chunk is never recorded after
# the answer's first token or the end), and the first CHUNK_TIMES_CAP of them: about 9 bytes
# each in the history's JSON, 150 kB for the longest runs; past the cap only the count and
# the last time grow (the inter-chunk gaps after it are not kept).
CHUNK_TIME_STEPS_PER_S = 10_000
CHUNK_TIMES_CAP = 16_384


class SameChunk(str):
    """An answer fragment that came in the same chunk as the fragment before it (a chunk that
    carries thinking and answer text both): the chunk's arrival is timed once."""


def chunk_fragments(thinking: str | None, content: str | None) -> Iterator[str]:
    """The fragments of one chunk from the wire, as a backend yields them: its thinking,
    then its answer text (marked ``SameChunk`` after thinking). Empty parts yield nothing."""
    if thinking:
        yield Thinking(thinking)
    if content:
        yield SameChunk(content) if thinking else content


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
    done_reason: str | None = None  # a Status stop reason (or a server's own word)
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
    # The serving figures' timings (studio.runs.serving): every non-empty chunk, thinking or
    # answer, counted; the arrival of the first CHUNK_TIMES_CAP, in seconds since the stream
    # opened (cut to 0.1 ms); the last one's (the end-to-end latency).
    chunks: int = 0
    chunk_times_s: list[float] = field(default_factory=list)
    last_chunk_s: float | None = None
    # Which exact model answered, as its server gives it ('sha256:...'; None: it gives
    # none, or it was not known by the end of the run): filled in by studio.runs.runner.
    model_digest: str | None = None

    @property
    def first_chunk_s(self) -> float | None:
        """Time to the first chunk of either kind (TTFT as ``vllm bench serve`` measures it);
        ``time_to_first_token_s`` is the answer's first."""
        return self.chunk_times_s[0] if self.chunk_times_s else None

    @property
    def inter_chunk_s(self) -> list[float]:
        """The gaps between consecutive chunks (ITL: one per chunk after the first, not per
        token), as far as their times were kept (``CHUNK_TIMES_CAP``)."""
        return [later - earlier for earlier, later in itertools.pairwise(self.chunk_times_s)]

    def chunk_arrived(self, elapsed_s: float) -> None:
        """Record a non-empty chunk that arrived ``elapsed_s`` after the stream opened."""
        at = math.floor(elapsed_s * CHUNK_TIME_STEPS_PER_S) / CHUNK_TIME_STEPS_PER_S
        self.chunks += 1
        self.last_chunk_s = at
        if len(self.chunk_times_s) < CHUNK_TIMES_CAP:
            self.chunk_times_s.append(at)

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
        """The figures as recorded and exported: the fields and the derived ones."""
        data = asdict(self)
        data["client_tokens_per_s"] = self.client_tokens_per_s
        data["server_tokens_per_s"] = self.server_tokens_per_s
        data["cold_start"] = self.cold_start
        data["thinking_s"] = self.thinking_s
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GenerationStats:
        """``to_dict()``'s inverse: the figures of a recorded dict (the derived ones, and
        keys it does not know, left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


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

    A caller may end it early (``stop_when``): the runner's repetition guard does, when the
    answer's tail loops. The stream carries that out; it judges no text itself.

    Thinking never comes out of the iteration: a backend yields it as ``Thinking`` fragments,
    inline ``<think>`` tags are taken out of the content here, and it grows ``thinking``
    (which a page polls, as it polls ``text``).

    Every non-empty fragment a backend yields is a chunk that arrived from the server, and is
    timed here (``GenerationStats.chunk_arrived``), but an answer fragment marked
    ``SameChunk``: a backend yields one chunk's thinking and answer through
    ``chunk_fragments``. Times count from the stream's opening, as ``time_to_first_token_s``
    and ``total_time_s`` do: the backend's work before its request (Ollama's ``/api/ps``
    query, the embedded model's load and lock) is inside them.
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
        self._checks: list[tuple[Callable[[str], bool], Status]] = []
        self._ending: Status | None = None  # the stop reason a check asked to end with
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

    def stop_when(self, check: Callable[[str], bool], reason: Status) -> TokenStream:
        """End the stream after the answer fragment for which ``check`` (fed every answer
        fragment, in order) says True: the server is told to stop, as on a close, the text
        is kept, and ``reason`` is the done reason. Returns the stream."""
        self._checks.append((check, reason))
        return self

    def __next__(self) -> str:
        while True:
            if self._ending is not None:
                self._end_generation()
                self._finish(self._ending)
                raise StopIteration
            if self._input_over:
                self._finish(Status.CANCELLED if self.cancelled else None)
                raise StopIteration
            try:
                fragment = next(self._iterator)
                now = time.perf_counter() - self._started
                if fragment and not isinstance(fragment, SameChunk):
                    self.stats.chunk_arrived(now)
                parts: list[str] = [fragment] if isinstance(fragment, Thinking) \
                    else self._splitter.feed(fragment)
            except StopIteration:
                self._input_over = True
                now = time.perf_counter() - self._started
                parts = self._splitter.flush()  # text held back in case it was a tag
            except Exception:
                self._take(self._splitter.flush(), time.perf_counter() - self._started)
                if self.cancelled:
                    # A socket we shut ourselves breaks the read: the cancel, not an error.
                    self._finish(Status.CANCELLED)
                    raise StopIteration from None
                self._finish(Status.ERROR)
                raise
            answer = self._take(parts, now)
            if not answer:
                continue  # thinking only: it grew ``thinking``; wait for answer text
            if not self._parts:
                self.stats.time_to_first_token_s = now
            self._parts.append(answer)
            self.stats.fragments += 1
            for check, reason in self._checks:
                if check(answer) and self._ending is None:
                    self._ending = reason
            return answer

    def _take(self, parts: list[str], now: float) -> str:
        """Record the thinking parts (``now``: when they arrived); the answer text among
        ``parts``."""
        answer = []
        for part in parts:
            if isinstance(part, Thinking):
                if not self._thinking:
                    self.stats.time_to_first_thinking_s = now
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
        self._finish(Status.CANCELLED)

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

    def _finish(self, outcome: Status | None) -> None:
        """Record the end once: ``outcome`` is cancelled/error or a check's reason, or None
        for a normal end."""
        if self.stats.total_time_s is None:
            self.stats.total_time_s = time.perf_counter() - self._started
        if outcome is not None:
            self.stats.done_reason = outcome
        elif self.stats.done_reason is None:
            self.stats.done_reason = Status.STOP

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
