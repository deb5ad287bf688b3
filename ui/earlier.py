"""Earlier work of a page's kind (batches, evaluations) that is not on screen: a running one
to watch (another tab's, a closed tab's), an interrupted one said so."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import streamlit as st

from backends.status import Status
from studio.records.render import literal
from studio.records.store import GroupSummary
from studio.runs.job import LiveJobs


def running_and_interrupted(summaries: Sequence[GroupSummary], states: Mapping[int, Status],
                            live: LiveJobs[Any], describe: Callable[..., str], *,
                            key: str, kept: str) -> None:
    """A line per running group, with Watch where this process runs it (it becomes the
    page's ``st.session_state[key]``), and per interrupted one; ``kept`` says what of it
    is kept ("rows", "cells")."""
    for busy in (s for s in summaries if states[s.group.id] == Status.RUNNING):
        job = live.get(busy.group.id)
        line, action = st.columns([5, 1])
        line.info(f"Running: {literal(describe(busy))}" + ("" if job else
                  " (in another app process: watch or stop it there)"), icon="⏳")
        if job is not None and action.button("Watch", key=f"{key}_watch_{busy.group.id}",
                                             width="stretch"):
            st.session_state[key] = job
            st.rerun()
    for cut in (s for s in summaries if states[s.group.id] == Status.INTERRUPTED):
        st.warning(f"Interrupted: {literal(describe(cut, Status.INTERRUPTED))}. Its app "
                   f"process ended while it ran; its answered {kept} are kept. Resume it "
                   "below to run the rest.", icon="⏸️")
