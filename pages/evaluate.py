"""Evaluate: every location on 2 to 4 backend and model choices, one scorecard, a matrix."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import streamlit as st

from backends import BACKENDS, backend_class, needs_server
from backends.status import Status
from studio.process import process
from studio.pv.library import load_system_prompts
from studio.pv.prompt import LAYOUT_HELP, LAYOUTS
from studio.records.render import literal, stamp
from studio.records.store import SHARE_GROUP, GroupSummary, RunStore
from studio.runs.batch import MAX_CONCURRENCY, RESUMABLE
from studio.runs.connection import build
from studio.runs.evaluation import (
    DEFAULT_LEVELS,
    DEFINITIONS,
    KIND,
    MAX_CHOICES,
    MIN_CHOICES,
    STAR,
    Choice,
    Evaluation,
    EvaluationRunning,
    EvaluationSpec,
    cell_line,
    evaluation_state,
    launch,
    reopen,
    schedule_lines,
)
from studio.runs.request import RunParams, status_label
from studio.runs.serving import ServiceLevels
from studio.settings.config import BACKEND_KINDS, Settings
from ui import fit_check
from ui.backend_picker import backend_picker, picker_keys, seed_picker
from ui.earlier import running_and_interrupted
from ui.output import (
    answer_pane,
    check_lines,
    show_answer,
    show_thinking,
    structured_line,
    structured_status,
)
from ui.scenarios import scenarios_picker, sendable
from ui.share import share_action
from ui.sidebar import answer_format_input, sampling_inputs, show_fallback_notice
from ui.state import current_selection, history, keep, require_frame, settings, viewer

PAGE = "evaluate"
LEADERBOARD = Path(__file__).resolve().parent / "leaderboard.py"
DEFAULT_KINDS = tuple(reversed(BACKENDS))  # new choices: embedded first, it always answers
CHOICES_PER_ROW = 2  # the choices' settings, two to a row (four cut names short at 1280 px)
REFRESH_S = 0.5  # the progress bars' repaint
FIGURES_EVERY_S = 2.0  # the scorecard's and matrix's repaint while it runs
# The tables' widths (px): every column in view at 1280 px with the sidebar open, four
# choices too; the goodput row's name is the longest figure.
TABLE_WIDTH, FIGURE_COLUMN = 800, 280
LOCATION_COLUMN, BEST_COLUMN, NUMBER_COLUMN = 130, 56, 36
ANSWER_HEIGHT = 480  # a cell's answer box (px)
EARLIER = 20  # earlier evaluations listed
# The smallest service levels: 0 would be met by no request (goodput 0 for every choice).
MIN_LEVEL_S, MIN_LEVEL_MS = 0.1, 1.0


def main() -> None:
    require_frame()
    st.title("🏁 Evaluate")
    show_fallback_notice()
    st.caption("Every location on 2 to 4 backend and model choices: a scorecard with the "
               "serving figures as vLLM's benchmark defines them, a matrix of the cells, "
               "and each cell's answer. Recorded in History as one evaluation, resumable.")
    config, selection, store = settings(), current_selection(), history()
    seed_choices(config, selection)
    choices = choice_settings(config, selection)
    scenarios = scenarios_picker(PAGE)
    system_prompts = load_system_prompts()
    left, middle = st.columns(2)
    system_name = left.selectbox("System prompt", list(system_prompts), key="evaluate_system")
    if "evaluate_layout" not in st.session_state:
        st.session_state.evaluate_layout = config.prompt_layout
    layout = middle.selectbox("Prompt layout", list(LAYOUTS), key="evaluate_layout",
                              format_func=LAYOUTS.__getitem__, help=LAYOUT_HELP)
    levels = service_levels()
    spec = EvaluationSpec(choices=tuple(choices), scenarios=scenarios,
                          system=system_prompts[system_name], layout=layout, levels=levels)
    st.caption("\n\n".join(literal(line) for line in
                           [f"{spec.cells} cells: {spec.rows} locations on "
                            f"{len(choices)} choices.", *schedule_lines(spec)]))

    state = st.session_state
    evaluation: Evaluation | None = state.get("evaluation")
    # A reopened evaluation never started: it shows, it does not run.
    running = evaluation is not None and evaluation.started is not None and not evaluation.done
    buttons = st.columns([1, 1, 4])
    clicked = buttons[0].button("Start evaluation", type="primary",
                                disabled=running or not scenarios, width="stretch")
    # One place for what holds a start back, cleared at each run: the evaluation that
    # starts never runs under the last one's message.
    notice = st.empty()
    if clicked:
        with notice.container():
            if sendable(spec.batch_spec(0)) and fits(config, spec):
                begin(store, spec)
    pending = fit_check.current(PAGE, spec)
    if pending is not None and not running and fit_check.ask(
            PAGE, pending, None, slot=notice,
            advice="Lower that choice's max tokens, shorten the prompt, get a longer window, "
                   "or run anyway (the cells that do not fit will fail or be cut).") \
            == fit_check.ANYWAY:
        begin(store, spec)
    if running and evaluation is not None:
        buttons[1].button("Stop", on_click=evaluation.stop, width="stretch")
    # What follows keeps its place whether one runs or not: a new evaluation's progress
    # replaces the last one's figures at once, and nothing below describes another one.
    results, earlier = st.container(), st.empty()
    if evaluation is not None:
        with results:
            show(evaluation, running, levels)
    if store is not None and not running:
        with earlier.container():
            earlier_evaluations(store, config, choices)


def seed_choices(config: Settings, selection: RunParams) -> None:
    """First visit: choice 1 is the sidebar's backend, the others the other backends."""
    state = st.session_state
    if "evaluate_choices" not in state:
        state.evaluate_choices, state.evaluate_sse = MIN_CHOICES, True
        for index in range(MAX_CHOICES):
            prefix = choice_prefix(index)
            if index == 0:
                seed_picker(prefix, config, selection.backend, selection.host, selection.model)
            else:
                others = [kind for kind in DEFAULT_KINDS if kind != selection.backend]
                seed_picker(prefix, config, others[(index - 1) % len(others)])
            state[f"{prefix}max_tokens"] = selection.sampling.max_tokens
            state[f"{prefix}temperature"] = selection.sampling.temperature
            state[f"{prefix}answer_format"] = selection.answer_format.value
            state[f"{prefix}concurrency"] = 1
    keep("evaluate_choices", "evaluate_sse", "evaluate_ttft_s", "evaluate_tpot_ms",
         "evaluate_e2el_s",
         *(key for index in range(MAX_CHOICES) for key in (
             *picker_keys(choice_prefix(index)),
             *(f"{choice_prefix(index)}{name}" for name in (
                 "max_tokens", "temperature", "answer_format", "concurrency")))))


def choice_prefix(index: int) -> str:
    return f"eval{index}_"


def choice_settings(config: Settings, selection: RunParams) -> list[Choice]:
    """The option row and a picker per choice; each choice's parameters."""
    options = st.columns(4)
    count = int(options[0].number_input("Choices", MIN_CHOICES, MAX_CHOICES,
                                        key="evaluate_choices"))
    sse = options[1].toggle("Stream vLLM", key="evaluate_sse",
                            help="vLLM streams its answers (server-sent events), as vllm "
                                 "bench serve measures them: its time to first token is the "
                                 "first chunk's. Off: it answers in one piece, and its TTFT is "
                                 "its end-to-end latency.")
    choices: list[Choice] = []
    columns = [column for start in range(0, count, CHOICES_PER_ROW)
               for column in st.columns(CHOICES_PER_ROW)][:count]
    for index, column in enumerate(columns):
        prefix = choice_prefix(index)
        with column, st.container(border=True):
            st.markdown(f"**Choice {index + 1}**")
            picked = backend_picker(config, prefix)
            max_tokens, temperature = sampling_inputs(prefix)
            sampling = replace(selection.sampling, max_tokens=max_tokens,
                               temperature=temperature, think=picked.think)
            answer_format = answer_format_input(prefix)
            concurrency = int(st.number_input(
                "Concurrency", 1, MAX_CONCURRENCY, key=f"{prefix}concurrency",
                help="This choice's requests in flight at once."))
            params = RunParams(picked.kind, picked.host, picked.model, sampling,
                               sse=sse and backend_class(picked.kind).can_stream_sse,
                               answer_format=answer_format)
            choices.append(Choice.of(params, concurrency))
    return choices


def service_levels() -> ServiceLevels:
    """The service levels goodput is measured against (the shown evaluation's scorecard is
    scored again when they change; nothing runs again)."""
    state = st.session_state
    if "evaluate_ttft_s" not in state:
        set_levels(DEFAULT_LEVELS)
    shown = state.get("evaluation")
    if shown is not None and state.get("evaluate_levels_of") != id(shown):
        # An evaluation newly on screen (opened, watched, started) is scored against the
        # levels it ran with, until they are changed here.
        state.evaluate_levels_of = id(shown)
        set_levels(shown.spec.levels)
    st.markdown("**Service levels** (goodput: the answered requests per second that met "
                "every level set; empty: not a level)")
    ttft, tpot, e2el = st.columns(3)
    # value=None: a level may be emptied (the session's value is kept over it).
    ttft_s = ttft.number_input("TTFT ≤ s", min_value=MIN_LEVEL_S, value=None, step=1.0,
                               key="evaluate_ttft_s", placeholder="not a level",
                               help=DEFINITIONS["TTFT"])
    tpot_ms = tpot.number_input("TPOT ≤ ms", min_value=MIN_LEVEL_MS, value=None, step=10.0,
                                key="evaluate_tpot_ms", placeholder="not a level",
                                help=DEFINITIONS["TPOT"])
    e2el_s = e2el.number_input("E2EL ≤ s", min_value=MIN_LEVEL_S, value=None, step=10.0,
                               key="evaluate_e2el_s", placeholder="not a level",
                               help=DEFINITIONS["E2EL"])
    return ServiceLevels(ttft_ms=None if ttft_s is None else float(ttft_s) * 1000,
                         tpot_ms=None if tpot_ms is None else float(tpot_ms),
                         e2el_ms=None if e2el_s is None else float(e2el_s) * 1000)


def set_levels(levels: ServiceLevels) -> None:
    """The level inputs set to ``levels`` (before they are drawn); a level of 0 or less,
    which no request meets, is no level."""
    state = st.session_state
    state.evaluate_ttft_s = _seconds(levels.ttft_ms)
    state.evaluate_tpot_ms = levels.tpot_ms if levels.tpot_ms and levels.tpot_ms > 0 else None
    state.evaluate_e2el_s = _seconds(levels.e2el_ms)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None or ms <= 0 else ms / 1000


def fits(config: Settings, spec: EvaluationSpec) -> bool:
    """Check every cell's window before the start; hold the evaluation back to ask when
    some do not fit (each choice has its own max tokens: no one lower value is offered)."""
    misfits = tuple(misfit for index in range(len(spec.choices))
                    for misfit in fit_check.row_misfits(
                        config, spec.batch_spec(index), range(spec.rows),
                        f"Choice {index + 1} · "))
    if misfits:
        fit_check.hold(PAGE, fit_check.Pending(spec, misfits))
    return not misfits


def begin(store: RunStore | None, spec: EvaluationSpec, group_id: int | None = None) -> None:
    """Start (or resume) an evaluation for this session; say so when a live worker has it."""
    config, shared = settings(), process()
    try:
        st.session_state.evaluation = launch(
            spec, store=store, group_id=group_id, user=viewer().user, live=shared.evaluations,
            capacity=shared.capacity, probes=shared.probes,
            # Built here: the evaluation's threads make no Streamlit calls.
            build=lambda choice: build(config, choice.backend, choice.host, choice.model))
    except EvaluationRunning as exc:
        st.warning(literal(str(exc)), icon="⏳")
    else:
        st.rerun()


# -- the evaluation on screen ----------------------------------------------------------------
def show(evaluation: Evaluation, running: bool, levels: ServiceLevels) -> None:
    """Progress per choice, the scorecard and the matrix, live while it runs; then a cell's
    answers and the downloads. Every slot is drawn from the start (empty while it runs): the
    last evaluation's figures go the moment this one starts."""
    header_slot, progress_slot, failures_slot = st.empty(), st.empty(), st.empty()
    card_slot = st.empty()
    schedule_slot = st.empty()
    differences = st.toggle("Differences only", key="evaluate_differs",
                            help="Only the locations where the choices' figures right or "
                                 "statuses differ.")
    matrix_slot, after_slot = st.empty(), st.empty()

    def paint(figures: bool) -> None:
        header_slot.caption(header(evaluation))
        with progress_slot.container():
            for index, label in enumerate(evaluation.labels):
                fraction, line = evaluation.choice_progress(index)
                st.progress(fraction, text=literal(f"{label}: {line}"))
        with failures_slot.container():
            failures(evaluation)
        if figures:
            with card_slot.container():
                scorecard(evaluation, levels)
            schedule_slot.caption("\n\n".join(
                literal(line) for line in ["Schedule:", *schedule_lines(evaluation.spec)]))
            with matrix_slot.container():
                matrix(evaluation, differences)

    if running:
        paint(True)
        painted = time.monotonic()
        while not evaluation.wait(REFRESH_S):
            due = time.monotonic() - painted >= FIGURES_EVERY_S
            paint(due)
            if due:
                painted = time.monotonic()
        st.rerun()  # redraw finished: a cell's answers and the downloads
    paint(True)
    with after_slot.container():
        if evaluation.stopped:
            st.info("Stopped: the answered cells are kept; resume it from Earlier "
                    "evaluations below.", icon="⏹️")
        open_cell(evaluation)
        if evaluation.group_id is not None:
            st.page_link(LEADERBOARD, icon="🗳️",
                         label=f"Vote blind on evaluation #{evaluation.group_id}'s answers, "
                               "two at a time (Leaderboard)")
        downloads(evaluation, levels)


def failures(evaluation: Evaluation) -> None:
    """A line per choice with failed cells, with the first one's reason: in red when none of
    its cells answered (a wrong host, a missing model), said apart from the progress bars."""
    for label, batch in zip(evaluation.labels, evaluation.batches, strict=True):
        figures = batch.progress()
        if not figures["failed"]:
            continue
        reason = next((row.error for row in batch.rows
                       if row.status == Status.FAILED and row.error), "")
        line = literal(f"{label}: {figures['failed']} of {figures['total']} cells failed"
                       + (f": {reason}" if reason else "."))
        if figures["done"] == 0 and not figures["running"] and not figures["remaining"]:
            st.error(line, icon="⚠️")
        else:
            st.warning(line, icon="⚠️")


def header(evaluation: Evaluation) -> str:
    """'Evaluation #4 · 3 choices · 30 locations · 57 of 90 cells done · 2 failed · 41.0 s'."""
    counts = evaluation.counts()
    number = f"#{evaluation.group_id}" if evaluation.group_id is not None else ""
    where = (" · reopened from the history, as far as it got" if evaluation.reopened
             else f" · {evaluation.wall_s:.1f} s" if evaluation.wall_s is not None else "")
    state = ("" if evaluation.reopened else " · running" if not evaluation.done
             else " · stopped" if evaluation.stopped else " · ended")
    failed = f" · {counts['failed']} failed" if counts["failed"] else ""
    return literal(f"Evaluation {number} · {len(evaluation.labels)} choices · "
                   f"{evaluation.spec.rows} locations · {counts['done']} of {counts['total']} "
                   f"cells answered{failed}{state}{where}")


def scorecard(evaluation: Evaluation, levels: ServiceLevels) -> None:
    """A line per figure, a column per choice, the best marked; what the figures mean."""
    card = evaluation.scorecard(levels)
    st.subheader("Scorecard")
    width = (TABLE_WIDTH - FIGURE_COLUMN) // len(card.labels)
    st.dataframe(pd.DataFrame(card.table()), hide_index=True, width="stretch",
                 height="content", column_config={
                     "Figure": st.column_config.Column(width=FIGURE_COLUMN),
                     **{label: st.column_config.Column(width=width) for label in card.labels}})
    st.caption(f"{STAR} the best value of a row. TTFT, TPOT, ITL, E2EL, throughput and "
               "goodput are named and computed as vllm bench serve does "
               "(vllm/benchmarks/serve.py calculate_metrics), over each choice's answered "
               f"requests; {literal(card.levels_text())}.")
    with st.expander("How the figures are defined"):
        st.markdown("\n".join(f"- **{name}**: {text}" for name, text in DEFINITIONS.items()))


def matrix(evaluation: Evaluation, differences: bool) -> None:
    """Locations down, choices across: each cell's figures right, time and marks; the best
    choice per location."""
    labels = evaluation.labels
    lines = evaluation.matrix()
    shown = [line for line in lines if line.differs] if differences else lines
    st.subheader("Locations")
    if not shown:
        st.caption("No location where the choices differ." if lines else "No locations.")
        return
    table = pd.DataFrame([{"#": line.index + 1, "Location": line.location,
                           **dict(zip(labels, line.cells, strict=True)), "Best": line.best}
                          for line in shown])
    width = (TABLE_WIDTH - LOCATION_COLUMN - BEST_COLUMN - NUMBER_COLUMN) // len(labels)
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "#": st.column_config.Column(width=NUMBER_COLUMN),
        "Location": st.column_config.Column(width=LOCATION_COLUMN),
        **{label: st.column_config.Column(width=width) for label in labels},
        "Best": st.column_config.Column(width=BEST_COLUMN, help="The choice with the most "
                                        "figures right, then the quickest")})
    st.caption("A cell: figures right, time, marks (a cold start, a cut prompt, how it "
               "ended). Open one below.")


def open_cell(evaluation: Evaluation) -> None:
    """One location's answers from one or two choices, side by side."""
    st.subheader("Open a cell")
    spec, labels = evaluation.spec, evaluation.labels
    if not spec.rows:
        return
    # Picked for another evaluation, with more locations or choices: back to the first.
    state = st.session_state
    if state.get("evaluate_cell_location", 0) >= spec.rows:
        del state["evaluate_cell_location"]
    if any(choice >= len(labels) for choice in state.get("evaluate_cell_choices", [])):
        del state["evaluate_cell_choices"]
    left, right = st.columns([1, 2])
    row = left.selectbox("Location", range(spec.rows), key="evaluate_cell_location",
                         format_func=lambda index: f"{index + 1}. {spec.scenarios[index].name}")
    picked = right.multiselect("Choices (one, or two side by side)", range(len(labels)),
                               default=[0], max_selections=2, key="evaluate_cell_choices",
                               format_func=labels.__getitem__)
    if row is None or not picked:
        return
    for index, (column, choice) in enumerate(zip(st.columns(len(picked)), picked,
                                                 strict=True)):
        cell = evaluation.cell(choice, row)
        with column:
            pane = answer_pane(f"**{literal(labels[choice])}**", key=f"evaluate_cell_{index}",
                               height=ANSWER_HEIGHT)
            pane.progress.caption(literal(cell_line(cell) or status_label(cell.status)))
            if cell.error:
                pane.control.error(literal(cell.error), icon="⚠️")
            show_thinking(pane.thinking, cell.thinking, cell.thinking_s)
            show_answer(cell.text, pane.answer, cell.check,
                        structured=structured_status(cell.request, cell.status))
            lines = [check_lines(cell.check)] if cell.check is not None and cell.text else []
            if (line := structured_line(cell.request, cell.text, cell.status)) is not None \
                    and cell.text:
                lines.append(f"🧾 {literal(line)}")
            if lines:
                pane.footer.caption("\n\n".join(lines))


def downloads(evaluation: Evaluation, levels: ServiceLevels) -> None:
    """The cells and the scorecard as CSV, everything as JSON, and the HTML report."""
    stem = f"pv-evaluation-{evaluation.group_id}" if evaluation.group_id else "pv-evaluation"
    columns = st.columns(4)
    columns[0].download_button("⬇ Cells (CSV)", evaluation.cells_csv(), f"{stem}-cells.csv",
                               "text/csv", width="stretch")
    columns[1].download_button("⬇ Scorecard (CSV)", evaluation.scorecard(levels).to_csv(),
                               f"{stem}-scorecard.csv", "text/csv", width="stretch")
    columns[2].download_button("⬇ Report (JSON)", evaluation.to_json(levels), f"{stem}.json",
                               "application/json", width="stretch")
    columns[3].download_button("⬇ Report (HTML)", evaluation.to_html(levels), f"{stem}.html",
                               "text/html", width="stretch")
    if evaluation.group_id is not None:
        share_action(SHARE_GROUP, evaluation.group_id, f"Evaluation #{evaluation.group_id}",
                     label="🔗 Share this evaluation")


# -- earlier evaluations ---------------------------------------------------------------------
def describe(summary: GroupSummary, state: str = "") -> str:
    """'#4 · 2026-12-01 22:30 UTC · 1. Ollama · llama3.1:8b, 2. vLLM · smollm2 · 57 done ·
    1 failed of 90 · interrupted' (plain text: models are a user's)."""
    spec = EvaluationSpec.from_json(summary.group.spec)
    when = stamp(summary.group.created_at)
    state_word = f" · {state}" if state in (Status.RUNNING, *RESUMABLE) else ""
    failed = f" · {summary.failed} failed" if summary.failed else ""
    return (f"#{summary.group.id} · {when} UTC · {', '.join(spec.labels)} · "
            f"{summary.done} done{failed} of {spec.cells}{state_word}")


def known_hosts(config: Settings, choices: list[Choice]) -> list[str]:
    """The hosts a resumed evaluation may take back its credentials from: config.yaml's,
    the sidebar's and the choices' pickers'."""
    state = st.session_state
    hosts = [host for kind in BACKEND_KINDS for host in config.backends[kind].allowed_hosts]
    hosts += [str(state.get(f"host_{kind}", "")) for kind in BACKEND_KINDS
              if needs_server(backend_class(kind))]
    return [*hosts, *(choice.host for choice in choices)]


def earlier_evaluations(store: RunStore, config: Settings, choices: list[Choice]) -> None:
    """Running evaluations to watch (another tab's, a closed tab's), interrupted ones said
    so; any to open again, the ones with cells left to resume."""
    summaries = store.group_summaries(KIND, limit=EARLIER, user=viewer().only)
    states = {summary.group.id: evaluation_state(summary) for summary in summaries}
    running_and_interrupted(summaries, states, process().evaluations, describe,
                            key="evaluation", kept="cells")
    with st.expander("Earlier evaluations", expanded=any(
            state in RESUMABLE for state in states.values())):
        if not summaries:
            st.caption("No earlier evaluations.")
            return
        labels = {s.group.id: describe(s, states[s.group.id]) for s in summaries}
        chosen = st.selectbox("Evaluation", list(labels), format_func=labels.__getitem__,
                              key="evaluate_earlier")
        left, right, _ = st.columns([1, 1, 4])
        if left.button("Open", disabled=chosen is None, width="stretch",
                       help="Show it again: its scorecard, matrix, cells and downloads, as "
                            "far as it got. Nothing runs.") and chosen is not None:
            if states[chosen] == Status.RUNNING and \
                    (live := process().evaluations.get(chosen)) is not None:
                st.session_state.evaluation = live
            else:
                st.session_state.evaluation = reopen(store, chosen)
            st.rerun()
        resumable = chosen is not None and states[chosen] in RESUMABLE
        if right.button("Resume", disabled=not resumable, width="stretch",
                        help="Run its cells not answered yet (answered cells are kept, "
                             "never run twice), with its own settings.") and chosen is not None:
            group = store.get_group(chosen)
            assert group is not None
            spec = EvaluationSpec.from_json(group.spec)
            begin(store, spec.with_hosts(known_hosts(config, choices)), chosen)


main()
