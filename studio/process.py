"""The one object that holds what this app process shares between its sessions, made in one
place.

Streamlit runs every page of every browser session in one Python process, and some things
must be shared by all of them: the fair capacity on the servers, the probe cache, the pulls
and batches going on, the exact prompt counts, the logins and the login throttle, and what the
backends learnt about servers (``backends.shared.Shared``: the token estimate, model info and
windows, the loaded embedded models). ``process()`` returns the ``Process`` that holds them,
made on first use. It lives in this module, not in ``st.cache_*`` (a client can clear that),
so a page's rerun finds the same one.

Who reaches it: only the top of the app (``app.py``, ``pages/``, ``ui/``). The modules below
(``studio.runs`` ...) hold no process-wide state: they define the classes, and the pages pass
the process's objects in (``Run(..., capacity=..., probes=...)``, ``launch(..., live=...)``).
The backends cannot import the app, so their part is an object of their own
(``backends.shared``) kept in their own slot: the app's ``Process`` holds the one in the slot,
and a fresh ``Process`` puts a fresh one there.

The history store is not here: it is one per database file, opened by ``ui.state`` through
``st.cache_resource`` (opening it again is harmless: it only marks dead processes' runs
interrupted, and a browser test takes that as the sign that a ``clear_cache`` arrived).

A test starts from a fresh process with ``fresh_process()`` (tests/conftest.py does so for
every test): nothing learnt, queued, pulled or logged in carries over.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from backends.shared import Shared, shared, use
from studio.runs.batch import LiveBatches
from studio.runs.capacity import Capacity
from studio.runs.connection import ProbeCache
from studio.runs.evaluation import LiveEvaluations
from studio.runs.pull import Pulls
from studio.runs.window import PromptCounts
from studio.settings.access import Logins, LoginThrottle


@dataclass
class Process:
    """Everything one app process shares between its sessions."""

    capacity: Capacity = field(default_factory=Capacity)  # configured by app.py
    probes: ProbeCache = field(default_factory=ProbeCache)
    pulls: Pulls = field(default_factory=Pulls)
    batches: LiveBatches = field(default_factory=LiveBatches)
    evaluations: LiveEvaluations = field(default_factory=LiveEvaluations)
    counts: PromptCounts = field(default_factory=PromptCounts)
    logins: Logins = field(default_factory=Logins)
    login_throttle: LoginThrottle = field(default_factory=LoginThrottle)
    backends: Shared = field(default_factory=Shared)

    def close(self) -> None:
        """Free what it holds (the embedded models, the pooled connections): a test's
        process, once replaced."""
        self.backends.close()


_lock = threading.Lock()
_current: Process | None = None


def process() -> Process:
    """This process's ``Process``: made on the first call, the same one after."""
    global _current
    with _lock:
        if _current is None:  # the backends' Shared already made is kept: nothing is lost
            _current = _install(Process(backends=shared()))
        return _current


def fresh_process() -> Process:
    """Replace the process object by a fresh one (tests), and return it."""
    global _current
    with _lock:
        _current = _install(Process())
        return _current


def _install(made: Process) -> Process:
    use(made.backends)
    return made
