"""One generation running on a worker thread, watched and stopped from the UI thread.

Streamlit allows no Streamlit calls from other threads, so the worker only talks to the
backend; the page polls ``text``/``done`` and repaints. The same ``Run`` serves every page:
streaming backends fill ``text`` fragment by fragment, one-piece backends (vLLM) all at once.
Every answer passes the repetition guard here, whichever backend gave it: a looping answer is
ended (a stream) or marked (one piece) with stop reason ``repetition``.

A page's run (Playground, Compare) has a ``Watcher``: when nobody watches it any more (its
browser tab closed), it is stopped, so that it gives its slot on a shared server back. A
Batch's rows have none: a batch belongs to its process and goes on without a tab.
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

from backends.base import DELIVERY_ONE_PIECE, Backend
from backends.errors import BackendError, BackendStatusError
from backends.http import redact, scrub
from backends.repetition import guard_stream, mark_looping
from backends.status import Status
from backends.stream import GenerationStats, TokenStream
from studio.pv.checks import check_dict, check_run
from studio.pv.structured import SCHEMA
from studio.records.columns import columns_of, json_of, request_columns, structured_columns
from studio.runs.capacity import Capacity, QueueFull, Ticket
from studio.runs.connection import ProbeCache
from studio.runs.request import Outcome, RunRequest, status_label

if TYPE_CHECKING:
    from studio.records.store import RunStore, StoredRun

SAVE_EVERY_S = 0.5  # text saved this often while it grows: a crash loses at most this much
HEARTBEAT_S = 5.0  # and this often while it does not, so a live run never looks abandoned
WATCH_EVERY_S = 0.5  # how often a watched run asks whether anybody still watches it
# How long a run that answered waits at its end for its model's digest (the server's list, or
# a file read once per process); a digest that takes longer is left out, never the run.
DIGEST_WAIT_S = 1.0
ABANDONED = ("Stopped: its browser tab closed, and nobody watched it for {grace:g} s "
             "(app.stop_unwatched_after_s), so it gave its slot back.")


class Watcher:
    """Whether anybody still watches a page's runs. ``present()`` asks (for a Streamlit page:
    is the browser session that started them still connected?); once it has said no for
    ``grace_s`` seconds running (a tab that reconnects comes back within them), the runs are
    abandoned. ``grace_s`` 0: never. One watcher serves every run its page starts."""

    def __init__(self, present: Callable[[], bool], grace_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.present, self.grace_s, self._clock = present, grace_s, clock
        self._lock = threading.Lock()
        self._gone_since: float | None = None

    def abandoned(self) -> bool:
        if self.grace_s <= 0:
            return False
        present = self.present()
        with self._lock:
            if present:
                self._gone_since = None
                return False
            now = self._clock()
            if self._gone_since is None:
                self._gone_since = now
            return now - self._gone_since >= self.grace_s


@dataclass(frozen=True)
class Recording:
    """Where a run is recorded: the history store, the page, and its Compare/Batch group;
    and who watches it (a page's run stops once nobody does, and counts against its user's
    queue cap; None: it belongs to its process, as a Batch's rows do)."""

    store: RunStore
    page: str
    group_id: int | None = None
    position: int = 0
    user: str = ""  # who runs it, on a shared server ('' without a login)
    watcher: Watcher | None = None


class Run:
    """Start with ``Run(backend, request).start()``; poll ``text``, ``done``; ``stop()``."""

    def __init__(self, backend: Backend | None, request: RunRequest,
                 recording: Recording | None = None, capacity: Capacity | None = None,
                 probes: ProbeCache | None = None) -> None:
        """``backend`` None: a run that is never started (``reopened``). ``capacity`` and
        ``probes`` are the process's (``studio.process``): the slots every run shares, and the
        probe cache told when the run ends. Without them (a test, the bench) the run has a
        capacity of its own, with no caps, and tells no cache."""
        self.backend = backend
        self.request = request
        self.recording = recording
        # A slot on the shared server (studio.runs.capacity); no caps configured: always one.
        self.capacity = capacity if capacity is not None else Capacity()
        self.probes = probes
        self._ticket: Ticket | None = None
        self.run_id: int | None = None  # its row in the history, once recorded
        self.record_error: str | None = None
        # Whether text arrives piece by piece (vLLM answers whole unless asked for SSE; a
        # backend with only the seed's generate() answers whole).
        self.streams = hasattr(backend, "stream") and request.delivery != DELIVERY_ONE_PIECE
        self.started_at = datetime.now(UTC)
        self.reopened = False  # a run of the history shown again, not run now
        # A reopened run's outcome as recorded: its status, and the statistics' marks that
        # GenerationStats does not hold (imported from a batch runner): see ``statistics``.
        self._recorded: Outcome | None = None
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
        self.abandoned = False  # stopped because nobody watched it any more
        # (seconds since start, characters received): the Compare page's timeline chart.
        self.timeline: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._work, name="generation", daemon=True)

    @classmethod
    def reopened_from(cls, stored: StoredRun) -> Run:
        """A run of the history shown again (History's Open in Playground), ended as it was
        recorded: its answer, thinking, statistics, status and error. Nothing is sent."""
        run = cls(None, stored.to_request())
        run.reopened, run.run_id, run.streams = True, stored.id, stored.streamed
        run.started_at = datetime.fromisoformat(stored.created_at)
        outcome = run._recorded = stored.outcome
        run._text, run._thinking, run._stats = outcome.text, outcome.thinking, outcome.stats
        if stored.error:
            run.error = BackendError(stored.error, backend=stored.backend)
        run._ended = run._started + (run._stats.total_time_s or 0.0)
        run._done.set()
        return run

    def start(self) -> Run:
        """Queue for a slot and run on a worker thread. Nothing is recorded or sent when the
        run was stopped before, its page is no longer watched, or its user's queue is full
        (then ``error`` says so)."""
        if self._done.is_set():  # stopped before it started: nothing to send
            return self
        self._started = time.monotonic()
        recording = self.recording
        watcher = recording.watcher if recording is not None else None
        if watcher is not None and watcher.abandoned():  # e.g. a Compare round after the tab
            self._abandon()
            return self
        request = self.request
        try:
            self._ticket = self.capacity.enter(f"{request.backend} {redact(request.host)}",
                                               recording.user if recording else "",
                                               capped=watcher is not None)
        except QueueFull as exc:
            self.error = BackendError(str(exc), backend=request.backend,
                                      host=redact(request.host))
            self._finish()
            return self
        if recording is not None:
            self._store(lambda store: setattr(self, "run_id", store.start_run(
                self.request, recording.page, recording.group_id, recording.position,
                recording.user)))
        self._thread.start()
        if self.run_id is not None:
            threading.Thread(target=self._save_while_running, name="recorder",
                             daemon=True).start()
        if watcher is not None:
            threading.Thread(target=self._watch, args=(watcher,), name="watcher",
                             daemon=True).start()
        return self

    def _watch(self, watcher: Watcher) -> None:
        """Stop the run once nobody watches it: queued, it leaves the queue; running, its
        stream closes and its slot goes to the next run."""
        while not self._done.wait(WATCH_EVERY_S):
            if watcher.abandoned():
                self._abandon()
                return

    def _abandon(self) -> None:
        self.abandoned = True
        self.stop()

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
    def statistics(self) -> dict[str, Any]:
        """The statistics as a dict, as the history records them: a reopened run's keep their
        marks (``imported_from``: not run by this app) that ``stats`` has no field for."""
        recorded = self._recorded.statistics if self._recorded is not None else {}
        return {**recorded, **self.stats.to_dict()}

    @property
    def outcome(self) -> Outcome:
        """What the run has produced so far (its answer grows while it runs); once done,
        what the history records."""
        return self._outcome_as(self.status)

    def _outcome_as(self, status: Status) -> Outcome:
        return Outcome(status, self.text, self.thinking, self._error_text(), self.statistics)

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
    def status(self) -> Status:
        if not self.done:
            return Status.RUNNING
        return self._recorded.status if self._recorded is not None else self._ending()

    def _ending(self) -> Status:
        """How the run ended (or would, if it ended now)."""
        if self._stop.is_set():
            return Status.STOPPED
        if self.error is not None:
            return Status.ERROR
        return Status.of_answer(self.stats.done_reason)

    @property
    def status_label(self) -> str:
        return status_label(self.status)

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
    def queue_position(self) -> int | None:
        """Runs ahead of this one for its backend while it waits for a slot (0: it is next);
        None when it is not waiting."""
        ticket = self._ticket
        return self.capacity.position(ticket) if ticket is not None else None

    def _work(self) -> None:
        ticket = self._ticket
        assert ticket is not None  # start() took it
        try:
            if not self.capacity.wait(ticket, give_up=self._stop.is_set):
                return  # stopped while queued: nothing was sent
            self._call()
            if not self._stop.is_set() and self.error is None and self.backend is not None:
                # After the answer, on its connection: nothing delays the request itself.
                self.stats.model_digest = _digest_of(self.backend, DIGEST_WAIT_S)
        finally:
            self.capacity.leave(ticket)
            self._finish()

    def _call(self) -> None:
        request = self.request
        backend = self.backend
        assert backend is not None  # only a reopened run has none, and it never starts
        try:
            stream = getattr(backend, "stream", None)
            if stream is not None:
                # Structured: the report's schema, for the server's constrained decoding.
                asked = {"schema": SCHEMA} if request.structured else {}
                self._stream = stream(request.prompt, request.system, request.sampling,
                                      sse=request.sse, **asked)
                guard_stream(self._stream)  # on every backend's stream: a looping answer ends
                if self._stop.is_set():
                    self._stream.close()
                received = 0
                for fragment in self._stream:
                    received += len(fragment)
                    self.timeline.append((time.monotonic() - self._started, received))
            else:
                # A backend without stream() has the seed's generate(): max tokens and
                # temperature are all it takes.
                answer = backend.generate(request.prompt, request.system,
                                          request.sampling.max_tokens,
                                          request.sampling.temperature)
                if not self._stop.is_set():
                    self._text = str(answer)
                    self._thinking = str(getattr(answer, "thinking", ""))
                    self._stats = getattr(answer, "stats", GenerationStats())
                    mark_looping(self._text, self._stats)
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
            # Its text may quote the URL, with the host's credentials: taken out.
            self.error = BackendError(
                f"Unexpected error: {type(exc).__name__}: {scrub(str(exc), request.host)}",
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
                outcome = self._outcome_as(self._ending())
                self._store(lambda store: store.finish(run_id, outcome))
            # The run may have loaded the model: its status line asks the server again.
            if self.probes is not None:
                self.probes.run_ended(self.request.backend, self.request.host,
                                      self.request.model)
            self._done.set()

    def _error_text(self) -> str | None:
        """What the history keeps as the run's error (an abandoned run: why it stopped)."""
        watcher = self.recording.watcher if self.recording is not None else None
        if self.abandoned and watcher is not None:
            return ABANDONED.format(grace=watcher.grace_s)
        return str(self.error) if self.error else None

    # -- export -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Prompts, parameters, backend, host, model, answer and statistics (JSON download):
        the history's JSON export of a run, without the history's fields."""
        outcome = self.outcome
        check = check_run(outcome.text, self.request, outcome.statistics)
        return json_of({"started_at": self.started_at.isoformat(),
                        **request_columns(self.request), **columns_of(outcome),
                        **structured_columns(self.request, outcome), **check_dict(check)})


def _save_progress(store: RunStore, run_id: int, text: str, thinking: str) -> None:
    store.save_progress(run_id, text, thinking)


def _digest_of(backend: Backend, wait_s: float) -> str | None:
    """``backend.model_digest()``, asked on a thread of its own and waited for at most
    ``wait_s``: None when the server gives none, when asking fails, or when it takes longer
    (the answer is then kept by the backend's cache for the next run). A digest is a record
    of which weights answered: it never fails or holds up a run."""
    found: list[str | None] = []

    def ask() -> None:
        try:
            found.append(backend.model_digest())
        except Exception:  # any failure: no digest, never the run's error
            found.append(None)

    thread = threading.Thread(target=ask, name="model digest", daemon=True)
    thread.start()
    thread.join(wait_s)
    return found[0] if found else None
