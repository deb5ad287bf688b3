"""Batch: the PV locations (or an uploaded CSV) through one backend, N at a time."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pandas as pd
import streamlit as st

from backends.status import Status
from studio.process import process
from studio.pv.checks import FIGURES_HELP, GROUNDING_HELP
from studio.pv.library import load_system_prompts
from studio.pv.prompt import LAYOUT_HELP, LAYOUTS
from studio.records.batch_files import (
    MAX_FILE_BYTES,
    UTF8_FIX,
    BatchFileError,
    export_jsonl,
    import_results,
)
from studio.records.render import literal, stamp
from studio.records.store import GroupSummary, RunStore
from studio.records.uploads import UploadError, read_upload
from studio.runs.batch import (
    MAX_CONCURRENCY,
    RESUMABLE,
    Batch,
    BatchRunning,
    BatchSpec,
    earlier_rows,
    earlier_state,
    launch,
)
from studio.runs.connection import build
from studio.runs.request import RunParams
from ui import fit_check
from ui.earlier import running_and_interrupted
from ui.scenarios import scenarios_picker, sendable
from ui.sidebar import show_fallback_notice
from ui.state import current_selection, history, require_frame, settings, viewer

PAGE = "batch"
RESUMING = "batch_resuming"  # the window check of a resume, held apart from a new batch's
FITTING = "fitting"
REFRESH_S = 0.5
# Every column in view at 1280 px with the sidebar open; the tokens/s columns named as the
# History CSV names them, shown shorter.
BATCH_COLUMNS: dict[str, Any] = {
    "#": st.column_config.Column(width=36),
    "location": st.column_config.Column(width=104),
    "status": st.column_config.Column(width=100),
    "attempts": st.column_config.Column("tries", width=44, help="Attempts"),
    "time s": st.column_config.Column(width=56, help="Total time, seconds"),
    "thinking s": st.column_config.Column(width=64, help="Thinking time, seconds"),
    "output tokens": st.column_config.Column("tokens", width=52, help="Output tokens"),
    "client_tokens_per_s": st.column_config.Column(
        "client tok/s", width=72, help="Tokens/s measured by the app (client_tokens_per_s)"),
    "server_tokens_per_s": st.column_config.Column(
        "server tok/s", width=76, help="Tokens/s the server reports (server_tokens_per_s)"),
    "figures_right": st.column_config.Column("figures", width=64, help=FIGURES_HELP),
    "grounding": st.column_config.Column(width=72, help=GROUNDING_HELP),
    "structured": st.column_config.Column(
        width=90, help="A structured answer: valid, or why not (invalid JSON, incomplete, "
                       "does not match the schema)"),
    "notes": st.column_config.Column(width=60),
    "error": st.column_config.Column(width=80),
}


def main() -> None:
    require_frame()
    selection, store = current_selection(), history()
    st.title("📦 Batch")
    show_fallback_notice()
    st.caption(header(selection, st.session_state.get("batch")))
    scenarios = scenarios_picker(PAGE)
    system_prompts = load_system_prompts()
    left, middle, right = st.columns(3)
    system_name = left.selectbox("System prompt", list(system_prompts), key="batch_system")
    if "batch_layout" not in st.session_state:
        st.session_state.batch_layout = settings().prompt_layout
    layout = middle.selectbox(
        "Prompt layout", list(LAYOUTS), key="batch_layout", format_func=LAYOUTS.__getitem__,
        help=LAYOUT_HELP)
    concurrency = int(right.number_input(
        "Concurrency", 1, MAX_CONCURRENCY, value=4, key="batch_concurrency",
        help="Requests in flight at once. 1 = one after another, as the seed's batch ran."))

    batch: Batch | None = st.session_state.get("batch")
    running = batch is not None and not batch.done
    spec = BatchSpec(**selection.param_fields(), scenarios=scenarios,
                     system=system_prompts[system_name], concurrency=concurrency,
                     layout=layout)
    buttons = st.columns([1, 1, 2, 2])
    buttons[3].download_button(
        "⬇ Batch file (JSONL)", lambda: export_jsonl(spec), "pv-batch-input.jsonl",
        "application/jsonl", disabled=not scenarios, width="stretch",
        help="OpenAI batch input: run it with vLLM's run_batch on any node, or any "
             "OpenAI-compatible Batch API (README: Beyond one machine).")
    if buttons[0].button("Run batch", type="primary", disabled=running or not scenarios,
                         width="stretch") and sendable(spec) and fits(spec):
        begin(store, spec)
    # One place for the window check, always drawn and cleared at a choice: what follows
    # keeps its place, so a new batch's progress replaces the last one's results at once.
    notice = st.empty()
    # Max tokens aside (one choice lowers it), a held-back batch is still the one on screen.
    pending = fit_check.current(PAGE, spec.with_sampling(max_tokens=0))
    resuming = fit_check.current(RESUMING, st.session_state.get("batch_resume"))
    if pending is not None and not running:
        over = {misfit.index for misfit in pending.misfits}
        fitting = len(scenarios) - len(over)
        choice = fit_check.ask(PAGE, pending, lower_max_tokens, extra={
            FITTING: f"Run the {fitting} rows that fit"} if fitting else None, slot=notice)
        if choice == FITTING:
            begin(store, replace(spec, scenarios=[s for index, s in enumerate(scenarios)
                                                  if index not in over]))
        elif choice == fit_check.ANYWAY:
            begin(store, spec.flag(over))
        elif choice == fit_check.LOWER:
            begin(store, spec)
    elif (resuming is not None and not running and store is not None
          and fit_check.ask(RESUMING, resuming, None, slot=notice) == fit_check.ANYWAY):
        # A resume runs the stored definition: its rows, prompts and max tokens as they were.
        group_id = resuming.what
        begin(store, stored_spec(store, group_id, selection).flag(
            misfit.index for misfit in resuming.misfits), group_id)
    if running and batch is not None:
        buttons[1].button("Stop", on_click=batch.stop, width="stretch")
    # The progress first: at the same place on the page whether the batch runs or has ended,
    # so the rerun at its end replaces it rather than showing a second one for a moment.
    # Below it, earlier batches and the import: drawn before the progress follows a running
    # batch, and empty then, so nothing of the page before the start stays under it.
    results, earlier = st.container(), st.empty()
    if batch is not None:
        with results:
            progress(batch, running)
    if store is not None and not running:
        with earlier.container():
            earlier_batches(store, selection)
            import_results_file(store)


def header(selection: RunParams, batch: Batch | None) -> str:
    """Where a batch's settings come from: the sidebar's for a new one; the batch on screen
    (a resumed one too) runs with its own, as they were stored."""
    sidebar = run_settings(selection)
    if batch is None:
        return f"Backend, model and parameters come from the sidebar: {sidebar}."
    return (f"The batch below {'ran' if batch.done else 'runs'} with its own settings: "
            f"{run_settings(batch.spec)}. A new batch takes the sidebar's: {sidebar}.")


def run_settings(params: RunParams) -> str:
    """'ollama · llama3.1:8b · max tokens 512 · temperature 0.2' (the model as literal text)."""
    sampling = params.sampling
    return (f"{params.backend} · {literal(params.model)} · max tokens {sampling.max_tokens} · "
            f"temperature {sampling.temperature} · {params.answer_format.label}")


def fits(spec: BatchSpec) -> bool:
    """Check every row's window before the start; hold the batch back to ask when some
    rows do not fit (they are flagged)."""
    misfits = fit_check.row_misfits(settings(), spec, range(len(spec.scenarios)))
    if misfits:
        st.session_state.pop(fit_check.pending_key(RESUMING), None)
        fit_check.hold(PAGE, fit_check.Pending(spec.with_sampling(max_tokens=0), misfits))
    return not misfits


def stored_spec(store: RunStore, group_id: int, selection: RunParams) -> BatchSpec:
    """A recorded batch's definition; the stored host has no credentials: the sidebar's,
    for the same server."""
    group = store.get_group(group_id)
    assert group is not None
    return BatchSpec.from_json(group.spec).with_host(selection.host)


def resume(store: RunStore, group_id: int, selection: RunParams) -> None:
    """Resume a batch: its rows not answered yet go through the window check first, as a new
    batch's do (the rows that do not fit are held back to ask, then flagged)."""
    spec = stored_spec(store, group_id, selection)
    answered, _ = earlier_rows(store, group_id)
    todo = [index for index in range(len(spec.scenarios)) if index not in answered]
    misfits = fit_check.row_misfits(settings(), spec, todo)
    if not misfits:
        begin(store, spec, group_id)
        return
    st.session_state.pop(fit_check.pending_key(PAGE), None)
    fit_check.hold(RESUMING, fit_check.Pending(group_id, misfits))
    st.rerun()  # the warning goes where a new batch's does, above the progress


def lower_max_tokens(max_tokens: int) -> None:
    st.session_state.max_tokens = max_tokens  # the sidebar's value: before it is drawn


def begin(store: RunStore | None, spec: BatchSpec, group_id: int | None = None) -> None:
    """Start (or resume) a batch for this session; say so when a live worker has it."""
    config, shared = settings(), process()
    try:
        st.session_state.batch = launch(
            spec, store=store, group_id=group_id, user=viewer().user, live=shared.batches,
            capacity=shared.capacity, probes=shared.probes,
            # Built here: the batch's threads make no Streamlit calls.
            build=lambda: build(config, spec.backend, spec.host, spec.model))
    except BatchRunning as exc:
        st.warning(str(exc), icon="⏳")
    else:
        st.rerun()


def describe(summary: GroupSummary, state: str = "") -> str:
    """'#8 · 2026-12-01 22:30 UTC · ollama · llama3.1:8b · 2 done · 1 failed of 8 ·
    interrupted'."""
    spec = BatchSpec.from_json(summary.group.spec)
    when = stamp(summary.group.created_at)
    state_word = f" · {state}" if state in (Status.RUNNING, *RESUMABLE) else ""
    failed = f" · {summary.failed} failed" if summary.failed else ""
    return (f"#{summary.group.id} · {when} UTC · {spec.backend} · {spec.model} · "
            f"{summary.done} done{failed} of {len(spec.scenarios)}{state_word}")


def earlier_batches(store: RunStore, selection: RunParams) -> None:
    """Running batches to watch (another tab's, a closed tab's), interrupted ones (their
    process ended) said so; the ones with rows left to run, to resume."""
    summaries = store.group_summaries("batch", limit=20, user=viewer().only)
    states = {earlier.group.id: earlier_state(earlier) for earlier in summaries}
    running_and_interrupted(summaries, states, process().batches, describe,
                            key="batch", kept="rows")
    resumable = {earlier.group.id: earlier for earlier in summaries
                 if states[earlier.group.id] in RESUMABLE}
    with st.expander("Resume an earlier batch"):
        if not resumable:
            st.caption("No earlier batches to resume.")
            return
        labels = {group_id: describe(earlier, states[group_id])
                  for group_id, earlier in resumable.items()}
        chosen = st.selectbox("Batch", list(labels), format_func=labels.__getitem__,
                              key="batch_resume")
        if st.button("Resume", disabled=chosen is None) and chosen is not None:
            resume(store, chosen, selection)


def import_results_file(store: RunStore) -> None:
    """A batch runner's output file (with the input file it ran) into the history."""
    with st.expander("Import batch results (JSONL)"):
        st.caption("The batch file you exported and the output file of vLLM's run_batch (or "
                   "an OpenAI-compatible Batch API): each result becomes a History run, marked "
                   f"imported. Up to {settings().max_import_rows:,} results an import; the "
                   "same files are imported once.")
        left, right = st.columns(2)
        sent = left.file_uploader("Batch input (.jsonl)", type=["jsonl", "json"],
                                  key="batch_import_input")
        results = right.file_uploader("Results (.jsonl)", type=["jsonl", "json"],
                                      key="batch_import_output")
        if st.button("Import into History", disabled=not (sent and results),
                     key="batch_import"):
            assert sent is not None and results is not None
            try:
                imported = import_results(
                    store, read_upload(sent.name, sent.getvalue(), MAX_FILE_BYTES, UTF8_FIX),
                    read_upload(results.name, results.getvalue(), MAX_FILE_BYTES, UTF8_FIX),
                    label=results.name, user=viewer().user, input_name=sent.name,
                    output_name=results.name, max_rows=settings().max_import_rows)
            except (UploadError, BatchFileError) as exc:
                st.error(literal(str(exc)), icon="⚠️")
                return
            failed = sum(row.status == Status.ERROR for row in imported.rows)
            ids = imported.run_ids
            runs = f"runs #{ids[0]}–#{ids[-1]}" if len(ids) > 1 else f"run #{ids[0]}"
            answers = "1 result" if len(imported.rows) == 1 else f"{len(imported.rows)} results"
            st.success(f"Imported {answers} into History ({runs}, marked "
                       f"imported from {literal(' and '.join(imported.runners))}); {failed} "
                       "failed.", icon="📥")
            if imported.duplicates:
                count = len(imported.duplicates)
                st.warning(f"{count:,} custom_id{'s have' if count != 1 else ' has'} more than "
                           "one result; one is kept (an answer before an error, else the "
                           "later line):\n\n"
                           + "\n".join(f"- {literal(str(duplicate))}"
                                       for duplicate in imported.duplicates[:20])
                           + ("\n- …" if count > 20 else ""), icon="⚠️")
            if imported.missing:
                count = len(imported.missing)
                st.warning(f"{count:,} row{'s have' if count != 1 else ' has'} no result: "
                           + literal(", ".join(imported.missing[:20])), icon="⚠️")
            st.dataframe(pd.DataFrame(imported.table()), hide_index=True, width="stretch")


def progress(batch: Batch, running: bool) -> None:
    """Progress and the rows' table, live while it runs; then the summary and downloads.
    The summary's slot is drawn (empty) while it runs: the last batch's figures and
    downloads go the moment this one starts."""
    progress_slot, failures_slot = st.empty(), st.empty()
    table_slot, outcome_slot = st.empty(), st.empty()

    def paint() -> None:
        cache = batch.prefix_cache()
        cached = f" · {cache}" if cache is not None else ""
        figures = batch.progress()
        # The bar counts the rows that ended, answered or failed; the failures are said
        # apart, in red when none answered, so a full bar never reads as all done.
        ended = figures["done"] + figures["failed"]
        total = figures["total"]
        progress_slot.progress(figures["fraction"], text=f"{ended} of {total} "
                               f"row{'s' if total != 1 else ''} ended: "
                               f"{batch.progress_line()}{cached}")
        if (failures := batch.failures()) is None:
            failures_slot.empty()
        elif figures["done"] == 0 and not figures["running"] and not figures["remaining"]:
            failures_slot.error(failures, icon="⚠️")
        else:
            failures_slot.warning(failures, icon="⚠️")
        table_slot.dataframe(pd.DataFrame(batch.page_table()), hide_index=True,
                             width="stretch", column_config=BATCH_COLUMNS)

    if running:
        paint()
        while not batch.wait(REFRESH_S):
            paint()
        st.rerun()  # redraw finished: summary and downloads
    paint()
    summary = batch.summary()
    with outcome_slot.container():
        cells = st.columns(5)
        cells[0].metric("Wall time", f"{summary['wall_s']:.1f} s" if summary["wall_s"] else "–")
        cells[1].metric("Sum of row times", f"{summary['sum_row_s']:.1f} s")
        cells[2].metric("Speedup", f"{summary['speedup']:.1f}×" if summary["speedup"] else "–")
        cells[3].metric("Throughput", f"{summary['throughput_tokens_per_s']:.1f} tok/s"
                        if summary["throughput_tokens_per_s"] else "–")
        cells[4].metric("Failures", str(summary["failed"]))
        if (coverage := batch.coverage()) is not None:
            st.caption(coverage)
        if share := batch.valid_share():
            st.caption(f"🧾 {literal(batch.spec.label)}: {share} (the rest: see the table's "
                       "structured column)")
        if batch.stopped:
            st.info("Stopped: finished rows are kept; resume it from 'Resume an earlier "
                    "batch'.")
        downloads = st.columns(2)
        downloads[0].download_button("⬇ Table (CSV)", batch.to_csv(), "pv-batch.csv",
                                     "text/csv", width="stretch")
        downloads[1].download_button("⬇ Answers (ZIP)", batch.to_zip(), "pv-batch.zip",
                                     "application/zip", width="stretch")


main()
