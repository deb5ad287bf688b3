"""The one process object (studio.process): made once, shared by every rerun and session, a
fresh one for every test, and reached only from the top of the app."""

from __future__ import annotations

from backends.shared import shared
from studio.process import Process, fresh_process, process
from studio.runs.capacity import Limits
from tests.test_architecture import graph

TOP = ("app", "pages.", "ui.")  # the modules that may reach the process object


def test_the_process_object_is_made_once(app_process: Process) -> None:
    """A page's rerun (app.py runs again) finds the same object, and with it what the
    backends keep."""
    assert process() is process() is app_process
    assert app_process.backends is shared()


def test_a_fresh_process_knows_nothing_of_the_last(app_process: Process) -> None:
    app_process.capacity.configure(Limits(per_backend=1))
    texts = ["Size a PV system for San Diego. " * 20]
    shared().estimator.observe("http://h", "m", texts, 100)
    assert shared().estimator.calibrated("http://h", "m")
    fresh = fresh_process()
    try:
        assert fresh is process() and fresh is not app_process
        assert fresh.capacity.limits == Limits() and fresh.backends is shared()
        assert not shared().estimator.calibrated("http://h", "m")
        assert app_process.backends.estimator.calibrated("http://h", "m")  # the old one's own
    finally:
        fresh.close()


def test_only_the_top_of_the_app_reaches_the_process_object() -> None:
    """Below the pages, modules hold no process-wide state: they are given the process's
    objects, so each can be tested with its own."""
    reaching = sorted(name for name, targets in graph().items() if "studio.process" in targets)
    assert reaching and all(name.startswith(TOP) for name in reaching), reaching
