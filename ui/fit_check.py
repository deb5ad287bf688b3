"""The context-window check before a run, shared by every page: a warning with the numbers
and the choices (lower max tokens, shorten the prompt, a longer window, run anyway).

A page asks ``needs_confirming`` when Run is clicked. When something does not fit, the page
keeps a ``Pending`` (what it was about to run) in the session, and ``ask`` draws the warning
on every rerun until the analyst picks a choice or changes what would run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from backends.base import Backend
from backends.errors import BackendError
from studio.process import process
from studio.records.render import literal
from studio.runs.batch import BatchSpec
from studio.runs.connection import build
from studio.runs.request import RunRequest
from studio.runs.window import FitProblem, check_fit, fit_problem
from studio.settings.config import Settings

LOWER, ANYWAY = "lower", "anyway"
SHOWN = 3  # misfits listed: the warning and its buttons fit a laptop's screen (1280x800)


@dataclass(frozen=True)
class Misfit:
    label: str  # which pane or row ("" for the Playground's single run)
    problem: FitProblem
    index: int = 0  # the pane's or row's position


@dataclass(frozen=True)
class Pending:
    """A run (or comparison, or batch) held back by the check, and why."""

    what: Any  # the page's own description of what would run, to compare with the current
    misfits: tuple[Misfit, ...]

    @property
    def lower_to(self) -> int | None:
        """Max tokens that fit every misfit (None when a prompt alone is too long)."""
        values = [m.problem.lower_to for m in self.misfits]
        return min(v for v in values if v) if values and all(values) else None


def misfits(checks: Sequence[tuple[str, Backend, RunRequest]]) -> tuple[Misfit, ...]:
    """Check each (label, backend, request); the ones that do not fit."""
    found: list[Misfit] = []
    with st.spinner("Checking that the prompt fits the model's context window…"):
        for index, (label, backend, request) in enumerate(checks):
            problem = fit_problem(check_fit(backend, request, process().counts), request.model)
            if problem is not None:
                found.append(Misfit(label, problem, index))
    return tuple(found)


def row_misfits(config: Settings, spec: BatchSpec, rows: Sequence[int],
                label: str = "") -> tuple[Misfit, ...]:
    """The rows (indexes) of a batch (or an evaluation's choice: ``label`` before each
    row's name) whose prompt and answer do not fit the model's window; none when the
    backend cannot be built (its rows will say why they cannot run)."""
    try:
        backend = build(config, spec.backend, spec.host, spec.model)
    except (BackendError, ValueError):
        return ()
    checks = [(f"{label}#{index + 1} {spec.scenarios[index].name}", backend,
               spec.request(spec.scenarios[index])) for index in rows]
    return tuple(replace(misfit, index=rows[misfit.index]) for misfit in misfits(checks))


def ask(key: str, pending: Pending, on_lower: Callable[[int], None] | None,
        extra: dict[str, str] | None = None, slot: DeltaGenerator | None = None,
        advice: str = "Run it anyway as it was defined, or cancel.") -> str | None:
    """The warning and its buttons; the choice clicked (LOWER, ANYWAY, a key of ``extra``),
    or None. ``on_lower(max_tokens)`` runs before the rerun, so it may set widget values
    (None: lowering is not offered; ``advice`` says what can be done instead). Drawn in
    ``slot`` (the page's place for it, or a new placeholder), which is cleared at the click:
    the run that starts does not run under it."""
    box = slot if slot is not None else st.empty()
    shown = pending.misfits[:SHOWN]
    lines = [f"- **{literal(m.label)}**: {literal(m.problem.message)}" if m.label
             else literal(m.problem.message) for m in shown]
    more = len(pending.misfits) - len(shown)
    if more:
        lines.append(f"- … and {more} more")
    lower = pending.lower_to if on_lower is not None else None
    if on_lower is None:  # what runs is fixed (a resume runs the batch as it was stored)
        choices = advice
    elif lower:
        choices = (f"Lower max tokens to {lower:,}, shorten the prompt, get a longer window "
                   "(above), or run anyway.")
    else:
        choices = "Shorten the prompt, get a longer window (above), or run anyway."
    inside = box.container(key=f"{key}_fit_warning")
    inside.warning("**The context window is too small.**\n\n" + "\n".join(lines)
                   + f"\n\n{choices}", icon="📏")
    options = [*([(LOWER, f"Lower max tokens to {lower:,} and run")] if lower else []),
               *(extra or {}).items(), (ANYWAY, "Run anyway"), ("cancel", "Cancel")]
    clicked = None
    for column, (choice, label) in zip(inside.columns(len(options) + 1), options,
                                       strict=False):
        on_click = partial(on_lower, lower) if choice == LOWER and lower and on_lower \
            else None
        if column.button(label, key=f"{key}_fit_{choice}", on_click=on_click,
                         width="stretch"):
            clicked = choice
    if st.session_state.pop(_new_key(key), False) and clicked is None:
        # Just held back by a click low on the page (Generate sits under the prompts): the
        # warning would be drawn below the fold, and nothing visible would change.
        with inside:
            _scroll_into_view(f"st-key-{key}_fit_warning")
    if clicked is not None:
        st.session_state.pop(pending_key(key), None)
        box.empty()
    return None if clicked == "cancel" else clicked


def _scroll_into_view(css_class: str) -> None:
    """Scroll the page so the element of ``css_class`` (ours, never a user's text) shows."""
    st.html(f"<script>document.querySelector('.{css_class}')"
            "?.scrollIntoView({block: 'center', behavior: 'smooth'});</script>",
            unsafe_allow_javascript=True)


def pending_key(key: str) -> str:
    return f"{key}_pending_fit"


def current(key: str, what: Any) -> Pending | None:
    """The pending check of this page, if it is still about ``what`` would run now (an
    edited prompt or another model makes it stale: it is dropped)."""
    pending: Pending | None = st.session_state.get(pending_key(key))
    if pending is not None and pending.what != what:
        st.session_state.pop(pending_key(key), None)
        return None
    return pending


def _new_key(key: str) -> str:
    return f"{key}_pending_fit_new"


def hold(key: str, pending: Pending) -> None:
    st.session_state[pending_key(key)] = pending
    st.session_state[_new_key(key)] = True  # the first drawing brings it into view
