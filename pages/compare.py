"""Compare: the same prompt on two to four backends at once, side by side, with figures."""

from __future__ import annotations

from dataclasses import replace

import pandas as pd
import streamlit as st

from backends import BACKENDS, BackendError, backend_class
from studio.process import process
from studio.records.render import literal
from studio.records.store import SHARE_GROUP
from studio.runs.compare import MAX_PANES, MAX_REPEATS, SPEEDS, TIMINGS, Comparison, pane_labels
from studio.runs.connection import build
from studio.runs.prompt_check import prompt_problem
from studio.runs.request import ANSWERED, RunParams, RunRequest, no_thinking_note
from studio.runs.runner import Recording, Run
from studio.settings.config import Settings
from studio.votes.ballot import shuffled
from ui import fit_check
from ui.backend_picker import backend_picker, picker_keys, seed_picker
from ui.blind import (
    Blind,
    blind_answers,
    blind_of,
    clear_names,
    identities,
    set_blind,
    vote_form,
    wait_for_all,
)
from ui.output import (
    answer_pane,
    check_lines,
    follow_all,
    show_answer,
    show_thinking,
    structured_line,
    structured_status,
)
from ui.prompt_editor import Prompts, prompt_editor
from ui.share import share_action
from ui.sidebar import answer_format_input, sampling_inputs, show_fallback_notice
from ui.state import current_selection, history, keep, require_frame, settings, viewer, watcher

PAGE = "compare"
DEFAULT_KINDS = tuple(reversed(BACKENDS))  # new panes: embedded first, it always answers
PANES_PER_ROW = 2  # the pane settings: four across cut the backends' names short at 1280 px
FIGURES_WIDTH, FIGURE_COLUMN = 800, 170  # the measurements table's width (px) at 1280 px


def main() -> None:
    require_frame()
    st.title("⚖️ Compare backends")
    state = st.session_state
    comparison: Comparison | None = state.get("comparison")
    blind = blind_of(PAGE)
    hidden = comparison is not None and blind is not None and blind.hidden
    # Slots that a blind round's start empties at once: what the browser shows of the last
    # run stays until the next run ends, and these name backends and models.
    notices = st.empty()
    if not hidden:  # the notices name the sidebar's backend and model
        with notices.container():
            show_fallback_notice()
    prompts = prompt_editor("compare", user_height=200)
    config, selection = settings(), current_selection()
    seed_panes(config, selection)
    if hidden and comparison is not None and blind is not None:
        blind_round(comparison, blind)  # no pane settings: they name every pane's model
        return
    settings_slot = st.empty()
    with settings_slot.container():
        panes, repeats, blind_wanted = pane_settings(config, selection)

    running = comparison is not None and not comparison.done
    buttons = st.columns([1, 1, 4])
    clicked = buttons[0].button("Compare", type="primary", disabled=running, width="stretch")
    # One place for a prompt problem or the window check, always drawn and cleared when the
    # comparison starts: the new comparison's panes replace the last one's results at once.
    notice, results = st.empty(), st.empty()
    go = False
    if clicked and (problem := prompt_problem(prompts.system, prompts.user,
                                                   config.max_prompt_chars)):
        notice.warning(problem, icon="✏️")
    elif clicked:
        go = fits(config, panes, prompts)
    # Max tokens aside (one choice lowers it), a held-back comparison is the one on screen.
    what = ([pane.with_sampling(max_tokens=0) for pane in panes], prompts.system, prompts.user)
    pending = fit_check.current(PAGE, what)
    if pending is not None and not running and fit_check.ask(PAGE, pending, lower_max_tokens,
                                                             slot=notice):
        go = True
    if go:
        comparison = state.comparison = start(config, panes, prompts, repeats, blind_wanted)
        set_blind(PAGE, Blind(shuffled(len(panes)), comparison.group_id) if blind_wanted
                  else None)
        blind = blind_of(PAGE)
        if blind_wanted:
            clear_names(notices, settings_slot)
            st.rerun()  # drawn again without the settings, before any answer shows
        running = True
    if running and comparison is not None:
        buttons[1].button("Stop all", on_click=comparison.stop, width="stretch")
    if comparison is not None:
        with results.container():
            if blind is not None and comparison.done:
                identities(blind, comparison.contenders(blind.order))
            answers(comparison, running)


def blind_round(comparison: Comparison, blind: Blind) -> None:
    """A blind comparison before its vote: the answers as A-D in a random order, shown whole
    once every pane is done (a stream against one piece, or who finished first, would give
    panes away), each with its figure check; then the vote."""
    st.caption("Blind comparison: the panes are lettered in a random order. Backends, "
               "models, hosts, timings and status lines stay hidden until you vote, and the "
               "answers appear together once every pane is done.")
    if not comparison.done:
        st.button("Stop all", on_click=comparison.stop)
        wait_for_all(lambda: comparison.done, comparison.started_at)
        return
    runs = comparison.shown_round
    blind_answers([(runs[index].text, comparison.check(index), left_out_note(runs[index]))
                   for index in blind.order])
    vote_form(PAGE, comparison.ballot(blind.order))


def left_out_note(run: Run) -> str:
    """Why a blind pane is not in the vote ('' when it is): its error names its server, so
    it shows after the vote."""
    if run.error is not None:
        return ("This answer ended with an error, so it is not in the vote. The error names "
                "its server: it shows after the vote.")
    if run.status not in ANSWERED or not run.text.strip():
        return "Stopped before it answered, so it is not in the vote."
    return ""


def seed_panes(config: Settings, selection: RunParams) -> None:
    """First visit: pane 1 is the sidebar's backend, the others the other backends."""
    state = st.session_state
    if "compare_panes" not in state:
        state.compare_panes, state.compare_repeats = 2, 1
        state.compare_sync, state.compare_sse = True, False
        state.compare_blind_mode = False
        for index in range(MAX_PANES):
            prefix = f"pane{index}_"
            if index == 0:
                seed_picker(prefix, config, selection.backend, selection.host, selection.model)
            else:
                others = [k for k in DEFAULT_KINDS if k != selection.backend]
                seed_picker(prefix, config, others[(index - 1) % len(others)])
            state[f"{prefix}max_tokens"] = selection.sampling.max_tokens
            state[f"{prefix}temperature"] = selection.sampling.temperature
            state[f"{prefix}answer_format"] = selection.answer_format.value
    keep("compare_panes", "compare_repeats", "compare_sync", "compare_sse", "compare_blind_mode",
         *(key for index in range(MAX_PANES) for key in (
             *picker_keys(f"pane{index}_"), f"pane{index}_max_tokens",
             f"pane{index}_temperature", f"pane{index}_answer_format")))


def pane_settings(config: Settings,
                  selection: RunParams) -> tuple[list[RunParams], int, bool]:
    """The option row and a picker per pane; each pane's parameters, the repeats, and
    whether the comparison is blind."""
    options = st.columns(5)
    pane_count = int(options[0].number_input("Panes", 2, MAX_PANES, key="compare_panes"))
    blind = options[4].toggle("Blind vote", key="compare_blind_mode",
                              help="Label the panes A-D in a random order and hide which "
                                   "backend and model wrote each answer until you vote for "
                                   "the better one. Votes feed the Leaderboard. One round.")
    repeats = int(options[1].number_input("Repeat", 1, MAX_REPEATS, key="compare_repeats",
                                          disabled=blind,
                                          help="Median, min and max over the runs; the first "
                                               "may be a cold start (model loading)."))
    sync = options[2].toggle("Sync settings", key="compare_sync",
                             help="All panes use the sidebar's max tokens, temperature and "
                                  "answer format. The sidebar's repeat penalty applies to "
                                  "every pane.")
    sse = options[3].toggle("Stream vLLM", key="compare_sse",
                            help="Stream vLLM's answer too (server-sent events), for a fair "
                                 "time-to-first-token comparison. Off: vLLM answers in one "
                                 "piece, as in production.")
    panes: list[RunParams] = []
    columns = [column for start in range(0, pane_count, PANES_PER_ROW)
               for column in st.columns(PANES_PER_ROW)][:pane_count]
    for index, column in enumerate(columns):
        prefix = f"pane{index}_"
        with column, st.container(border=True):
            st.markdown(f"**Pane {index + 1}**")
            picked = backend_picker(config, prefix)
            sampling = replace(selection.sampling, think=picked.think)
            answer_format = selection.answer_format
            if not sync:
                max_tokens, temperature = sampling_inputs(prefix)
                sampling = replace(sampling, max_tokens=max_tokens, temperature=temperature)
                answer_format = answer_format_input(prefix)
            panes.append(RunParams(picked.kind, picked.host, picked.model, sampling,
                                   sse=sse and backend_class(picked.kind).can_stream_sse,
                                   answer_format=answer_format))
    return panes, 1 if blind else repeats, blind


def fits(config: Settings, panes: list[RunParams], prompts: Prompts) -> bool:
    """Check every pane's window; hold the comparison back to ask when one does not fit."""
    checks = []
    for pane, label in zip(panes, pane_labels(panes), strict=True):
        try:
            backend = build(config, pane.backend, pane.host, pane.model)
        except (BackendError, ValueError):
            continue  # the pane will show why it cannot run
        request = RunRequest(**pane.param_fields(), system=prompts.system, prompt=prompts.user)
        checks.append((label, backend, request))
    misfits = fit_check.misfits(checks)
    if misfits:
        what = ([pane.with_sampling(max_tokens=0) for pane in panes], prompts.system, prompts.user)
        fit_check.hold(PAGE, fit_check.Pending(what, misfits))
    return not misfits


def lower_max_tokens(max_tokens: int) -> None:
    """Every pane's max tokens, and the sidebar's (synced panes use it): before they are
    drawn."""
    state = st.session_state
    state.max_tokens = max_tokens
    for index in range(MAX_PANES):
        state[f"pane{index}_max_tokens"] = max_tokens


def start(config: Settings, panes: list[RunParams], prompts: Prompts,
          repeats: int, blind: bool) -> Comparison:
    """Start the comparison; ``blind``: its runs are held out of History until the vote."""
    store = history()
    user, watching, shared = viewer().user, watcher(), process()
    group = store.create_group("compare", preset=prompts.preset, user=user) \
        if store is not None else None
    if blind and store is not None and group is not None:
        store.hold_blind(group)
    return Comparison(
        panes, prompts.system, prompts.user, repeats=repeats, preset=prompts.preset,
        location=prompts.location,
        build=lambda pane: build(config, pane.backend, pane.host, pane.model),
        # Built here: the coordinator thread must make no Streamlit calls.
        record=lambda index: Recording(store, "compare", group, index, user, watching)
        if store else None,
        capacity=shared.capacity, probes=shared.probes, group_id=group,
    ).start()


def answers(comparison: Comparison, running: bool) -> None:
    """The panes' answers side by side, each with its own Stop: live while they run, then
    highlighted, a failed pane's error with its fix; the measurements below once done."""
    shown = comparison.panes
    panes = []
    for index, column in enumerate(st.columns(len(shown))):
        with column:
            panes.append(answer_pane(f"**{literal(comparison.labels[index])}** · "
                                     f"{shown[index].delivery}", key=f"pane_answer_{index}"))
    progress_slots = [pane.progress for pane in panes]
    footers = [pane.footer for pane in panes]
    answer_slots = [pane.answer for pane in panes]
    figures_slot = st.empty()  # the last comparison's figures go as this one starts
    if running:
        for index, pane in enumerate(panes):
            if not comparison.pane_stopped(index):
                pane.control.button(f"Stop pane {index + 1}", key=f"compare_stop_{index}",
                                    on_click=comparison.stop_pane, args=(index,))
        follow_all(lambda: comparison.shown_round, answer_slots, progress_slots,
                   comparison.wait, [pane.thinking for pane in panes])
        st.rerun()  # redraw finished: figures, charts, highlights, downloads
    for index, run in enumerate(comparison.shown_round):
        check = comparison.check(index)
        show_thinking(panes[index].thinking, run.thinking, run.stats.thinking_s)
        show_answer(run.text, answer_slots[index], check,
                    structured=structured_status(run.request, run.status))
        progress_slots[index].caption(f"{run.status_label} · {run.elapsed:.1f} s")
        lines = [] if check is None else [check_lines(check)]
        if (line := structured_line(run.request, run.text, run.status)) is not None:
            lines.append(f"🧾 {literal(line)}")
        if (missing := no_thinking_note(run.request.sampling.think, run.thinking, run.status)):
            lines.append(f"💭 {missing}")
        with footers[index].container():
            if run.error is not None:
                st.error(f"{literal(run.error.message)}\n\n{literal(run.error.hint)}",
                         icon="⚠️")
            if lines:
                st.caption("\n\n".join(lines))
    with figures_slot.container():
        measurements(comparison)


def measurements(comparison: Comparison) -> None:
    """The table, the charts and the report downloads."""
    st.subheader("Measurements")
    wall = comparison.wall_time
    if wall is not None:
        slowest = max((run.elapsed for run in comparison.current_round), default=0.0)
        rounds = len(comparison.round_walls)
        st.caption(f"Wall time of the last round: {wall:.2f} s (slowest pane {slowest:.2f} s)"
                   + (f" · all rounds: {comparison.wall_summary()}" if rounds > 1 else "")
                   + (" · round 1 may be a cold start" if comparison.repeats > 1 else "")
                   + (" · stopped" if comparison.stopped else ""))
    # A row per figure, a column per pane: every figure in view at 1280 px, four panes too.
    table = pd.DataFrame(comparison.table()).set_index("Pane").T.reset_index(names="Figure")
    width = (FIGURES_WIDTH - FIGURE_COLUMN) // len(comparison.panes)
    st.dataframe(table, hide_index=True, width="stretch", height="content", column_config={
        "Figure": st.column_config.Column(width=FIGURE_COLUMN),
        **{label: st.column_config.Column(width=width) for label in comparison.labels}})

    unmeasured = comparison.unmeasured()
    if len(unmeasured) == len(comparison.panes):
        st.caption("Nothing was measured: no run finished with an answer (see Runs in the "
                   "table), so there is nothing to chart.")
    else:
        charts(comparison, unmeasured)

    downloads = st.columns(2)
    downloads[0].download_button("⬇ Report (HTML)", comparison.to_html(),
                                 "comparison.html", "text/html", width="stretch")
    downloads[1].download_button("⬇ Report (JSON)", comparison.to_json(),
                                 "comparison.json", "application/json",
                                 width="stretch")
    if comparison.group_id is not None and comparison.done:
        share_action(SHARE_GROUP, comparison.group_id, f"Comparison #{comparison.group_id}",
                     label="🔗 Share this comparison")


def charts(comparison: Comparison, unmeasured: list[str]) -> None:
    """The bar charts of the measured panes' medians, and the characters over time."""
    columns = st.columns(2)
    with columns[0]:
        if unmeasured:
            st.caption(literal("Nothing measured for " + ", ".join(unmeasured)
                               + ": no run finished with an answer, so no bars."))
        st.caption("Timings (s, median of the measured runs: finished, with an answer; runs "
                   "cut at max tokens, empty, stopped or failed are counted apart)")
        st.bar_chart(pd.DataFrame.from_dict(comparison.medians(TIMINGS), orient="index"),
                     stack=False)
        if speeds := comparison.medians(SPEEDS):
            st.caption("Tokens/s (median)")
            st.bar_chart(pd.DataFrame.from_dict(speeds, orient="index"), stack=False)
    with columns[1]:
        st.caption("Characters received over time (latest round)")
        series = [pd.Series({t: n for t, n in points}, name=name)
                  for name, points in comparison.timelines().items() if points]
        if series:
            st.line_chart(pd.concat(series, axis=1).sort_index().ffill(), x_label="seconds",
                          y_label="characters")


main()
