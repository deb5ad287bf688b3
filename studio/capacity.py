"""Fair capacity on a shared server: at most N runs at once per backend and per user, the rest
queued in order of arrival, so that one visitor's 30-row batch cannot starve a live demo.

A run asks for a slot before it calls the server and gives it back when it ends. Waiters are
served first come, first served, except that a waiter whose user is at the user cap is
passed over (it does not hold up other users behind it). ``position()`` is what the page
shows while a run waits.
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


@dataclass(eq=False)
class Ticket:
    """One run's place: waiting (``position`` > 0) or admitted."""

    backend: str
    user: str
    number: int
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

    def enter(self, backend: str, user: str) -> Ticket:
        """Queue a run; admitted at once when there is room (``ticket.admitted`` is set)."""
        with self._lock:
            ticket = Ticket(backend, user, next(self._numbers))
            self._waiting.append(ticket)
            self._admit()
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

    def position(self, ticket: Ticket) -> int:
        """0 when admitted; else the waiters ahead of it for the same backend, plus one."""
        with self._lock:
            if ticket.admitted.is_set() or ticket not in self._waiting:
                return 0
            ahead = [t for t in self._waiting[:self._waiting.index(ticket)]
                     if t.backend == ticket.backend]
            return len(ahead) + 1

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


# One per app process: every session's runs share the servers.
CAPACITY = Capacity()
