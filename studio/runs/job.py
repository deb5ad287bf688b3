"""Work that runs on a thread of its own while a page polls it, and that the page may stop."""

from __future__ import annotations

import threading
from typing import Generic, Self, TypeVar


class Job:
    """``start()`` runs ``_work()`` on a thread; ``done``, ``stopped``, ``wait()``, ``stop()``.

    Subclasses implement ``_work()`` (checking ``_stop`` between steps) and ``_cancel()``
    (what Stop interrupts right away, e.g. the runs in flight).
    """

    name = "job"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._done = threading.Event()

    def start(self) -> Self:
        threading.Thread(target=self._run, name=self.name, daemon=True).start()
        return self

    @property
    def done(self) -> bool:
        return self._done.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends or ``timeout`` passes; True when it has ended."""
        return self._done.wait(timeout)

    def stop(self) -> None:
        self._stop.set()
        self._cancel()

    def _run(self) -> None:
        try:
            self._work()
        finally:
            self._finished()
            self._done.set()

    def _work(self) -> None:
        raise NotImplementedError

    def _cancel(self) -> None:
        """Interrupt what is in flight (nothing by default)."""

    def _finished(self) -> None:
        """Called once when ``_work`` returns or raises, before ``done`` is set."""


J = TypeVar("J", bound=Job)


class LiveJobs(Generic[J]):
    """The jobs this process works on (batches, evaluations), by history group: every session
    of the app can watch and stop them (``studio.process`` holds one per kind)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, J] = {}

    def get(self, group_id: int) -> J | None:
        """The job of this process that works on the history group, while it runs."""
        with self._lock:
            return self._jobs.get(group_id)

    def add(self, group_id: int, job: J) -> None:
        with self._lock:
            self._jobs[group_id] = job

    def remove(self, group_id: int) -> None:
        with self._lock:
            self._jobs.pop(group_id, None)
