"""One generation running on a worker thread, watched and stopped from the UI thread.

Streamlit allows no Streamlit calls from other threads, so the worker only talks to the
backend; the page polls ``text``/``done`` and repaints. The same ``Run`` serves every page:
streaming backends fill ``text`` fragment by fragment, one-piece backends (vLLM) all at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from backends.base import (
    DELIVERY_ONE_PIECE,
    DONE_LENGTH,
    DONE_REPETITION,
    Backend,
    BackendError,
    BackendStatusError,
    GenerationStats,
    TokenStream,
)
from backends.http import redact
from studio.capacity import CAPACITY, Capacity, Ticket
from studio.connection import run_ended
from studio.request import (
    ERROR,
    FINISHED,
    LENGTH,
    REPETITION,
    RUNNING,
    STATUS_LABELS,
    STOPPED,
    RunRequest,
)

if TYPE_CHECKING:
    from studio.store import RunStore

SAVE_EVERY_S = 0.5  # text saved this often while it grows: a crash loses at most this much
HEARTBEAT_S = 5.0  # and this often while it does not, so a live run never looks abandoned


@dataclass(frozen=True)
class Recording:
    """Where a run is recorded: the history store, the page, and its Compare/Batch group."""

    store: RunStore
    page: str
    group_id: int | None = None
    position: int = 0
    user: str = ""  # who runs it, on a shared server ('' without a login)


class Run:
    """Start with ``Run(backend, request).start()``; poll ``text``, ``done``; ``stop()``."""

    def __init__(self, backend: Backend, request: RunRequest,
                 recording: Recording | None = None, capacity: Capacity = CAPACITY) -> None:
        self.backend = backend
        self.request = request
        self.recording = recording
        # A slot on the shared server (studio.capacity); no caps configured: always one.
        self.capacity = capacity
        self._ticket: Ticket | None = None
        self.run_id: int | None = None  # its row in the history, once recorded
        self.record_error: str | None = None
        # Whether text arrives piece by piece (vLLM answers whole unless asked for SSE; a
        # backend with only the seed's generate() answers whole).
        self.streams = hasattr(backend, "stream") and request.delivery != DELIVERY_ONE_PIECE
        self.started_at = datetime.now(UTC)
        self.error: BackendError | None = None
        self._stats = GenerationStats()
        self._text = ""
        self._thinking = ""
        self._stream: TokenStream | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        self._finish_lock = threading.Lock()
        self._started = time.monotonic()
        self._ended: float | None = None
        # (seconds since start, characters received): the Compare page's timeline chart.
        self.timeline: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._work, name="generation", daemon=True)

    def start(self) -> Run:
        if self._done.is_set():  # stopped before it started: nothing to send
            return self
        self._started = time.monotonic()
        recording = self.recording
        if recording is not None:
            self._store(lambda store: setattr(self, "run_id", store.start_run(
                self.request, recording.page, recording.group_id, recording.position,
                recording.user)))
        self._thread.start()
        if self.run_id is not None:
            threading.Thread(target=self._save_while_running, name="recorder",
                             daemon=True).start()
        return self

    def _save_while_running(self) -> None:
        """Written as it grows, so a closed tab or a killed app loses at most a moment."""
        run_id = self.run_id
        assert run_id is not None
        saved, saved_at = ("", ""), time.monotonic()
        while not self._done.wait(SAVE_EVERY_S):
            both, now = (self.text, self.thinking), time.monotonic()
            if both != saved or now - saved_at >= HEARTBEAT_S:
                if not self._store(partial(_save_progress, run_id=run_id, text=both[0],
                                           thinking=both[1])):
                    return
                saved, saved_at = both, now
        # The final write is _finish()'s, before the run reports done.

    def _store(self, action: Callable[[RunStore], object]) -> bool:
        """Run a history write; a failing database never breaks the generation itself."""
        assert self.recording is not None
        try:
            action(self.recording.store)
        except (sqlite3.Error, RuntimeError, ValueError) as exc:
            self.record_error = f"Not saved to the history: {exc}"
            return False
        return True

    # -- what the page reads ----------------------------------------------------------------
    @property
    def text(self) -> str:
        """The answer so far (all of it once done)."""
        stream = self._stream
        return stream.text if stream is not None else self._text

    @property
    def thinking(self) -> str:
        """A reasoning model's thinking so far (never part of ``text``)."""
        stream = self._stream
        return stream.thinking if stream is not None else self._thinking

    @property
    def stats(self) -> GenerationStats:
        return self._stream.stats if self._stream is not None else self._stats

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def start_time(self) -> float:
        """``time.monotonic()`` when the run started."""
        return self._started

    @property
    def end_time(self) -> float | None:
        """``time.monotonic()`` when the run ended, None while it runs."""
        return self._ended

    @property
    def elapsed(self) -> float:
        return (self._ended or time.monotonic()) - self._started

    @property
    def status(self) -> str:
        return self._outcome() if self.done else RUNNING

    def _outcome(self) -> str:
        """How the run ended (or would, if it ended now)."""
        if self._stop.is_set():
            return STOPPED
        if self.error is not None:
            return ERROR
        reason = self.stats.done_reason
        if reason == DONE_REPETITION:
            return REPETITION
        return LENGTH if reason == DONE_LENGTH else FINISHED

    @property
    def status_label(self) -> str:
        return STATUS_LABELS[self.status]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the run ends or ``timeout`` passes; True when it has ended."""
        return self._done.wait(timeout)

    # -- control ----------------------------------------------------------------------------
    def stop(self) -> None:
        """Cancel: the stream closes its connection (the server stops generating); the
        partial text stays. A one-piece request is abandoned and its answer ignored."""
        if self.done:
            return
        self._stop.set()
        if self._stream is not None:
            self._stream.close()
        else:  # a plain generate() cannot be interrupted: abandon it
            self._finish()

    @property
    def queue_position(self) -> int:
        """Runs ahead of this one for its backend while it waits for a slot (0: not waiting)."""
        ticket = self._ticket
        return self.capacity.position(ticket) if ticket is not None else 0

    def _work(self) -> None:
        request = self.request
        args = (request.prompt, request.system, request.max_tokens, request.temperature)
        user = self.recording.user if self.recording is not None else ""
        self._ticket = self.capacity.enter(f"{request.backend} {redact(request.host)}", user)
        try:
            if not self.capacity.wait(self._ticket, give_up=self._stop.is_set):
                return  # stopped while queued: nothing was sent
            self._call(args)
        finally:
            self.capacity.leave(self._ticket)
            self._finish()

    def _call(self, args: tuple[str, str, int, float]) -> None:
        request = self.request
        try:
            stream = getattr(self.backend, "stream", None)
            if stream is not None:
                self._stream = stream(*args, repeat_penalty=request.repeat_penalty,
                                      sse=request.sse, think=request.think)
                if self._stop.is_set():
                    self._stream.close()
                received = 0
                for fragment in self._stream:
                    received += len(fragment)
                    self.timeline.append((time.monotonic() - self._started, received))
            else:
                answer = self.backend.generate(*args)  # a backend without stream()
                if not self._stop.is_set():
                    self._text = str(answer)
                    self._thinking = str(getattr(answer, "thinking", ""))
                    self._stats = getattr(answer, "stats", GenerationStats())
                    self.timeline.append((time.monotonic() - self._started, len(self._text)))
        except BackendError as exc:
            if self._stop.is_set():
                return  # the analyst stopped it: what fails afterwards is no error of the run
            self.error = exc
            if isinstance(exc, BackendStatusError) and exc.partial_text and not self.text:
                self._text = exc.partial_text
        except Exception as exc:  # never let a worker die silently: the page shows it
            if self._stop.is_set():
                return
            self.error = BackendError(f"Unexpected error: {type(exc).__name__}: {exc}",
                                      backend=request.backend, host=redact(request.host))

    def _finish(self) -> None:
        with self._finish_lock:
            if self._done.is_set():
                return
            if self._ended is None:
                self._ended = time.monotonic()
            if self.stats.total_time_s is None:
                self.stats.total_time_s = self._ended - self._started
            run_id = self.run_id
            if run_id is not None:  # stored before the run says done: waiters see it saved
                self._store(lambda store: store.finish_run(
                    run_id, self.text, self._outcome(),
                    str(self.error) if self.error else None, self.stats.to_dict(),
                    thinking=self.thinking))
            # The run may have loaded the model: its status line asks the server again.
            run_ended(self.request.backend, self.request.host, self.request.model)
            self._done.set()

    # -- export -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Prompts, parameters, backend, host, model, answer and statistics (JSON download)."""
        request = self.request
        return {
            "started_at": self.started_at.isoformat(),
            "backend": request.backend, "host": redact(request.host), "model": request.model,
            "preset": request.preset,
            "parameters": {"max_tokens": request.max_tokens,
                           "temperature": request.temperature,
                           "repeat_penalty": request.repeat_penalty,
                           "think": request.think},
            "system_prompt": request.system, "user_prompt": request.prompt,
            "thinking": self.thinking, "answer": self.text, "status": self.status,
            "error": str(self.error) if self.error else None,
            "statistics": self.stats.to_dict(),
        }


def _save_progress(store: RunStore, run_id: int, text: str, thinking: str) -> None:
    store.save_progress(run_id, text, thinking)
