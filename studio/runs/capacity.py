"""Fair capacity on a shared server: at most N runs at once per backend and per user, the rest
queued in order of arrival, so that one visitor's 30-row batch cannot starve a live demo.

A run asks for a slot before it calls the server and gives it back when it ends. Waiters are
served first come, first served, except that a waiter whose user is at the user cap is
passed over (it does not hold up other users behind it). ``position()`` is what the page
shows while a run waits: how many runs are ahead of it. A user may have at most
``Limits.queued_per_user`` runs waiting (a Batch's rows aside: they are bounded by the batch's
concurrency); one more is refused with ``QueueFull`` before it is recorded or sent.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Limits:
    per_backend: int = 0  # runs at once against one backend (kind and host); 0: no cap
    per_user: int = 0  # runs at once by one user; 0: no cap
    queued_per_user: int = 0  # runs one user may have waiting (capped ones); 0: no cap


class QueueFull(Exception):
    """A user already has ``Limits.queued_per_user`` runs waiting: this one is refused."""


@dataclass(eq=False)
class Ticket:
    """One run's place: waiting (``position`` > 0) or admitted."""

    backend: str
    user: str
    number: int
    capped: bool = True  # counts against the user's queue cap (a Batch row does not)
    admitted: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False


class Capacity:
    """``with capacity.slot(backend, user, wait=...)`` runs the body once admitted."""

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._waiting: list[Ticket] = []
        self._running: list[Ticket] = []
        self._numbers = itertools.count(1)

    def configure(self, limits: Limits) -> None:
        with self._lock:
            self.limits = limits
            self._admit()

    def enter(self, backend: str, user: str, capped: bool = True) -> Ticket:
        """Queue a run; admitted at once when there is room (``ticket.admitted`` is set).
        Raises ``QueueFull`` when it would wait and ``user`` already has the most runs
        waiting that a user may (only ``capped`` runs count and are refused)."""
        with self._lock:
            ticket = Ticket(backend, user, next(self._numbers), capped)
            self._waiting.append(ticket)
            self._admit()
            cap = self.limits.queued_per_user
            if capped and cap and not ticket.admitted.is_set() and sum(
                    t.capped and t.user == user for t in self._waiting) > cap:
                self._waiting.remove(ticket)
                raise QueueFull(
                    f"You already have {cap} run{'s' if cap != 1 else ''} waiting for a slot "
                    f"on this server, the most one user may queue (app.max_queued_per_user). "
                    f"Wait for one to start, or stop one. Nothing was sent.")
            return ticket

    def leave(self, ticket: Ticket) -> None:
        """The run ended, or gave up waiting: its slot (or place) goes to the next."""
        with self._lock:
            ticket.cancelled = True
            if ticket in self._waiting:
                self._waiting.remove(ticket)
            if ticket in self._running:
                self._running.remove(ticket)
            self._admit()

    def wait(self, ticket: Ticket, give_up: Callable[[], bool], poll_s: float = 0.1) -> bool:
        """Block until admitted (True) or until ``give_up()`` says stop (False, place left)."""
        while True:
            admitted = ticket.admitted.wait(poll_s)
            if give_up():  # also when admitted meanwhile: the slot goes to the next
                self.leave(ticket)
                return False
            if admitted:
                return True

    def position(self, ticket: Ticket) -> int | None:
        """How many runs for the same backend wait ahead of this one (0: it is next); None
        when it is not waiting (admitted, or gone)."""
        with self._lock:
            if ticket.admitted.is_set() or ticket not in self._waiting:
                return None
            return sum(t.backend == ticket.backend
                       for t in self._waiting[:self._waiting.index(ticket)])

    def running(self, backend: str | None = None) -> int:
        with self._lock:
            return sum(backend is None or t.backend == backend for t in self._running)

    def _admit(self) -> None:
        """Let in every waiter that fits, oldest first (caller holds the lock)."""
        by_backend = Counter(t.backend for t in self._running)
        by_user = Counter(t.user for t in self._running)
        for ticket in list(self._waiting):
            if self.limits.per_backend and by_backend[ticket.backend] >= self.limits.per_backend:
                continue
            if self.limits.per_user and by_user[ticket.user] >= self.limits.per_user:
                continue
            self._waiting.remove(ticket)
            self._running.append(ticket)
            by_backend[ticket.backend] += 1
            by_user[ticket.user] += 1
            ticket.admitted.set()

