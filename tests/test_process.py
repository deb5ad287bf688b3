"""The one process object (studio.process): made once, shared by every rerun and session, a
fresh one for every test, and reached only from the top of the app."""

from __future__ import annotations

import ast

from backends.shared import shared
from studio.process import Process, fresh_process, process
from studio.runs.capacity import Limits
from tests.test_architecture import graph, modules

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


def test_every_run_a_page_starts_takes_the_process_capacity_and_probes() -> None:
    """Run, Comparison and launch() fall back to an uncapped capacity of their own (for
    tests and the bench): a page that forgot to pass the process's would skip a shared
    server's caps. Every call of them in pages/ and ui/ passes both (by keyword, or Run's
    fourth and fifth argument)."""
    calls = []
    for name, path in modules().items():
        if not name.startswith(("pages", "ui")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                callee = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if callee in ("Run", "Comparison", "launch"):
                    given = {k.arg for k in node.keywords}
                    if callee == "Run" and len(node.args) >= 5:
                        given |= {"capacity", "probes"}
                    calls.append((f"{path.name}:{node.lineno}", {"capacity", "probes"} <= given))
    assert len(calls) >= 3, calls  # the Playground, Compare and Batch pages at least
    assert all(passed for _, passed in calls), calls
