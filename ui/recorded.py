"""A recorded run read back, with nothing to run, edit or delete: alone (its settings,
prompts, thinking, answer, figure check, notes and statistics) or as one column of several
side by side. History and the Shared page show runs this way."""

from __future__ import annotations

import streamlit as st

from backends.http import redact
from backends.status import Status
from studio.pv.checks import check_run
from studio.records.render import literal, stamp
from studio.records.store import StoredRun
from studio.runs.request import status_label
from ui.output import (
    answer_pane,
    check_lines,
    show_answer,
    show_notes,
    show_stats,
    show_thinking,
    structured_line,
    structured_status,
)


def when(created_at: str) -> str:
    """'2026-12-05 04:46:11 UTC' from a stored time."""
    return f"{stamp(created_at, seconds=True)} UTC" if created_at else "–"


def read_run(run: StoredRun, note: str | None = None, key: str = "history_answer") -> None:
    """One run in full under its subheader (``note``: where it belongs, a caption; ``key``:
    its answer box's)."""
    st.subheader(f"Run {run.id} · {literal(run.backend)} · {literal(run.model)}")
    st.caption(literal(f"{when(run.created_at)} · {run.page} · "
                       f"{redact(run.host) or '–'} · preset {run.preset or '–'} · max tokens "
                       f"{run.sampling.max_tokens} · temperature {run.sampling.temperature} · "
                       f"{run.delivered or run.delivery}"))
    if note is not None:
        st.caption(note)
    if run.error:
        st.error(literal(run.error), icon="⚠️")
    elif run.status == Status.INTERRUPTED:
        st.warning("Interrupted: the app stopped while this run was going. The partial "
                   "answer is kept.", icon="⏸️")
    with st.expander("Prompts"):
        st.text_area("System prompt", run.system, disabled=True, key=f"sys_{run.id}")
        st.text_area("User prompt", run.prompt, height=250, disabled=True, key=f"usr_{run.id}")
    show_thinking(st.empty(), run.thinking, run.stats.get("thinking_s"))
    # Figures the answer states that the prompt's data does not hold are highlighted, as in
    # the Playground (not graded when the server cut the prompt).
    check = check_run(run.text, run, run.stats)
    with st.container(key=key, border=True):
        show_answer(run.text, st.empty(), check, structured=structured_status(run, run.status))
    if check is not None:
        st.caption(check_lines(check))
    if (line := structured_line(run, run.text, run.status)) is not None:
        st.caption(f"🧾 {literal(line)}")
    show_notes(run.stats)
    show_stats(run.outcome.stats, status_label(run.status), streamed=run.streamed)


def run_column(run: StoredRun, title: str, key: str, note: str | None = None) -> None:
    """One run as a column of answers side by side: ``title`` (markdown: names in it through
    ``literal``), its status and time, thinking, answer, error and checks."""
    pane = answer_pane(title, key=key)
    pane.progress.caption(f"{status_label(run.status)} · {when(run.created_at)}"
                          + (f" · {note}" if note else ""))
    if run.error:
        st.error(literal(run.error), icon="⚠️")
    check = check_run(run.text, run, run.stats)
    show_thinking(pane.thinking, run.thinking, run.stats.get("thinking_s"))
    show_answer(run.text, pane.answer, check, structured=structured_status(run, run.status))
    line = structured_line(run, run.text, run.status)
    lines = ([check_lines(check)] if check is not None else []) + (
        [f"🧾 {literal(line)}"] if line else [])
    if lines:
        pane.footer.caption("\n\n".join(lines))
