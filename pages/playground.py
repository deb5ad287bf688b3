"""Playground: pick a preset, edit the prompts, generate, watch the answer stream in."""

from __future__ import annotations

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from backends.errors import BackendError
from studio.process import process
from studio.pv.checks import check_run
from studio.records.render import literal
from studio.runs.connection import build
from studio.runs.prompt_check import prompt_problem
from studio.runs.request import RunRequest
from studio.runs.runner import Run
from ui import fit_check
from ui.output import (
    check_lines,
    follow,
    show_answer,
    show_outcome,
    show_thinking,
    structured_status,
)
from ui.prompt_editor import prompt_editor
from ui.sidebar import show_fallback_notice
from ui.state import current_selection, recording, require_frame, settings

PAGE = "playground"


def main() -> None:
    require_frame()
    st.title("☀️ PV Playground")
    show_fallback_notice()
    prompts = prompt_editor("playground")
    state = st.session_state
    run: Run | None = state.get("playground_run")
    running = run is not None and not run.done
    request = RunRequest(**current_selection().param_fields(), system=prompts.system,
                         prompt=prompts.user, preset=prompts.preset, location=prompts.location)
    buttons = st.columns([1, 1, 4])
    generate = buttons[0].button("Generate", type="primary", disabled=running,
                                 width="stretch")
    # One place for what stands between Generate and a run (a prompt problem, the window
    # check), always drawn: what follows keeps its place, so a new run replaces the old one's
    # answer and figures on screen the moment it starts.
    notice = st.empty()
    started = None
    if generate:
        # A new attempt: the last run's answer and figures leave the panel now, whether this
        # one starts, is refused or is held back by the window check (History keeps them).
        state.pop("playground_run", None)
        run = None
    if generate and (problem := prompt_problem(prompts.system, prompts.user,
                                                    settings().max_prompt_chars)):
        notice.warning(problem, icon="✏️")
    elif generate:
        started = start(request, notice, check=True)
    # Max tokens aside (one choice lowers it), a held-back run is still the one on screen.
    pending = fit_check.current(PAGE, request.with_sampling(max_tokens=0))
    if pending is not None and not running and fit_check.ask(PAGE, pending, lower_max_tokens,
                                                             slot=notice):
        started = start(request, notice, check=False)
    if started is not None:
        run = state.playground_run = started
        running = True
    if running and run is not None:
        # Drawn above the answer; the click runs the callback first, which closes the stream.
        buttons[1].button("Stop", on_click=run.stop, width="stretch")
    if run is not None:
        answer(run, running)


def start(request: RunRequest, notice: DeltaGenerator, check: bool) -> Run | None:
    """Build the backend and start the run; say why not (in ``notice``) when the backend
    cannot be used. With ``check``, a prompt and answer over the model's window are held
    back to ask."""
    try:
        backend = build(settings(), request.backend, request.host, request.model)
    except (BackendError, ValueError) as exc:  # e.g. a GGUF path that does not exist
        notice.error(f"Cannot use this backend: {literal(str(exc))}", icon="⚠️")
        return None
    if check and (misfits := fit_check.misfits([("", backend, request)])):
        fit_check.hold(PAGE, fit_check.Pending(request.with_sampling(max_tokens=0), misfits))
        # Drawn again from the top: the prompt editor, above, then shows the size the check
        # counted, the same number as the warning.
        st.rerun()
    shared = process()
    return Run(backend, request, recording(PAGE), shared.capacity, shared.probes).start()


def lower_max_tokens(max_tokens: int) -> None:
    st.session_state.max_tokens = max_tokens  # the sidebar's value: before it is drawn


def answer(run: Run, running: bool) -> None:
    """The answer panel: live while the run goes on, then whole with its outcome. A reasoning
    model's thinking has its own panel above it. Every part is a slot drawn on every run of
    the page, so a new run's empty slots replace the last run's outcome at once."""
    origin_slot = st.empty()
    thinking_slot = st.empty()
    with st.container(key="answer", border=True):
        answer_slot = st.empty()
    progress_slot, outcome_slot = st.empty(), st.empty()
    if running:
        follow(run, answer_slot, progress_slot, thinking_slot)
        st.rerun()  # redraw as finished: Generate enabled again, no Stop button
    if run.reopened:
        origin_slot.info(
            f"Reopened from History: run #{run.run_id} of {run.started_at:%Y-%m-%d %H:%M} UTC "
            f"({literal(run.request.label)}), as it ended then. Generate starts a new run.",
            icon="🗂️")
    show_thinking(thinking_slot, run.thinking, run.stats.thinking_s)
    structured = structured_status(run.request, run.status)
    show_answer(run.text, answer_slot, structured=structured)  # whole; the marks follow
    # Wrong figures struck through, figures the prompt's data does not hold highlighted (not
    # graded when the server cut the prompt: the model never saw all of the data).
    check = check_run(run.text, run.request, run.stats.to_dict())
    if check is not None:
        show_answer(run.text, answer_slot, check, structured=structured)
        progress_slot.caption(check_lines(check))
    with outcome_slot.container():
        show_outcome(run)


main()
