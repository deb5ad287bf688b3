"""Batch: the PV locations (or an uploaded CSV) through one backend, N at a time."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import streamlit as st

from studio.batch import MAX_CONCURRENCY, Batch, BatchSpec
from studio.connection import build
from studio.presets import COLUMNS, load_locations, load_system_prompts, parse_locations_csv
from studio.runner import ANSWERED, Recording
from studio.store import RunStore, StoredRun
from ui.sidebar import show_fallback_notice
from ui.state import current_selection, history, require_frame, settings

require_frame()
state = st.session_state
config = settings()
selection = current_selection()
store = history()
MAX_UPLOAD_BYTES = 1_000_000
REFRESH_S = 0.5

st.title("📦 Batch")
show_fallback_notice()
st.caption(f"Backend, model and parameters come from the sidebar: {selection.kind} · "
           f"{selection.model} · max tokens {selection.max_tokens} · "
           f"temperature {selection.temperature}.")

source = st.radio("Scenarios", ["Preset locations", "Upload a CSV"], horizontal=True,
                  key="batch_source")
scenarios = load_locations()
if source == "Upload a CSV":
    upload = st.file_uploader("Scenarios CSV", type=["csv"], key="batch_upload",
                              help=f"Columns as in presets/locations.csv: {', '.join(COLUMNS)}")
    scenarios = []
    if upload is not None:
        if upload.size > MAX_UPLOAD_BYTES:
            st.error(f"{upload.name} is {upload.size:,} bytes; the limit is "
                     f"{MAX_UPLOAD_BYTES:,}.", icon="⚠️")
        else:
            try:
                text: str | None = upload.getvalue().decode("utf-8-sig")
            except UnicodeDecodeError:
                text = None
                st.error(f"{upload.name} is not UTF-8 text.", icon="⚠️")
            scenarios, problems = parse_locations_csv(text) if text is not None else ([], [])
            if problems:
                st.warning(f"{len(problems)} row(s) skipped:\n\n"
                           + "\n".join(f"- {problem}" for problem in problems[:50]), icon="⚠️")
            if scenarios:
                st.success(f"{len(scenarios)} scenario(s) ready.")
else:
    names = st.multiselect("Locations", [s.name for s in scenarios],
                           default=[s.name for s in scenarios], key="batch_locations")
    scenarios = [s for s in scenarios if s.name in names]

system_prompts = load_system_prompts()
left, right = st.columns(2)
system_name = left.selectbox("System prompt", list(system_prompts), key="batch_system")
concurrency = int(right.number_input(
    "Concurrency", 1, MAX_CONCURRENCY, value=4, key="batch_concurrency",
    help="Requests in flight at once. 1 = one after another, as the seed's batch ran."))

batch: Batch | None = state.get("batch")
running = batch is not None and not batch.done
buttons = st.columns([1, 1, 4])


def start(spec: BatchSpec, history_store: RunStore | None, group_id: int | None,
          finished: Mapping[int, StoredRun] | None = None) -> Batch:
    return Batch(
        spec, build=lambda: build(config, spec.backend, spec.host, spec.model),
        # Built here: the batch's threads must make no Streamlit calls.
        recording=lambda index: Recording(history_store, "batch", group_id, index)
        if history_store is not None else None,
        finished_before=finished, group_id=group_id).start()


if buttons[0].button("Run batch", type="primary", disabled=running or not scenarios,
                     width="stretch"):
    spec = BatchSpec(scenarios, selection.kind, selection.host, selection.model,
                     system_prompts[system_name], selection.max_tokens, selection.temperature,
                     concurrency, repeat_penalty=selection.repeat_penalty)
    group = store.create_group("batch", spec.to_json()) if store is not None else None
    batch = state.batch = start(spec, store, group)
    running = True
if running and batch is not None:
    buttons[1].button("Stop", on_click=batch.stop, width="stretch")

if store is not None and not running:
    with st.expander("Resume an earlier batch"):
        groups = store.list_groups("batch")[:20]
        if not groups:
            st.caption("No earlier batches.")
        labels = {}
        for earlier in groups:
            runs = store.group_runs(earlier.id)
            finished = {run.position for run in runs if run.status in ANSWERED}
            total = len(BatchSpec.from_json(earlier.label).scenarios)
            labels[earlier.id] = (f"#{earlier.id} · {earlier.created_at[:16].replace('T', ' ')}"
                                  f" UTC · {len(finished)}/{total} done")
        if labels:
            chosen = st.selectbox("Batch", list(labels), format_func=labels.__getitem__,
                                  key="batch_resume")
            if st.button("Resume", disabled=chosen is None):
                spec = BatchSpec.from_json(store.get_group(chosen).label)  # type: ignore[union-attr]
                done_before = {run.position: run for run in store.group_runs(chosen)
                               if run.status in ANSWERED}
                batch = state.batch = start(spec, store, chosen, done_before)
                st.rerun()

if batch is not None:
    progress_slot, table_slot = st.empty(), st.empty()

    def paint(active: Batch) -> None:
        figures = active.progress()
        eta = f" · about {figures['eta_s']:.0f} s left" if figures["eta_s"] else ""
        progress_slot.progress(figures["fraction"], text=(
            f"{figures['done']} done · {figures['failed']} failed · {figures['running']} "
            f"running · {figures['remaining']} remaining{eta}"))
        table_slot.dataframe(pd.DataFrame(active.table()), hide_index=True, width="stretch")

    if running:
        while not batch.wait(REFRESH_S):
            paint(batch)
        st.rerun()  # redraw finished: summary and downloads
    paint(batch)
    summary = batch.summary()
    cells = st.columns(5)
    cells[0].metric("Wall time", f"{summary['wall_s']:.1f} s" if summary["wall_s"] else "–")
    cells[1].metric("Sum of row times", f"{summary['sum_row_s']:.1f} s")
    cells[2].metric("Speedup", f"{summary['speedup']:.1f}×" if summary["speedup"] else "–")
    cells[3].metric("Throughput", f"{summary['throughput_tokens_per_s']:.1f} tok/s"
                    if summary["throughput_tokens_per_s"] else "–")
    cells[4].metric("Failures", str(summary["failed"]))
    if batch.stopped:
        st.info("Stopped: finished rows are kept; resume it from 'Resume an earlier batch'.")
    downloads = st.columns(2)
    downloads[0].download_button("⬇ Table (CSV)", batch.to_csv(), "pv-batch.csv", "text/csv",
                                 width="stretch")
    downloads[1].download_button("⬇ Answers (ZIP)", batch.to_zip(), "pv-batch.zip",
                                 "application/zip", width="stretch")
