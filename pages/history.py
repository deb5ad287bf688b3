"""History: every run kept. Find, read, compare two, re-open in the Playground, export."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pandas as pd
import streamlit as st

from backends.base import GenerationStats
from studio.grounding import check
from studio.presets import load_locations
from studio.runner import STATUS_LABELS
from studio.store import StoredRun, export_csv, export_json
from ui.backend_picker import seed_picker
from ui.output import answer_pane, show_answer, show_stats
from ui.state import history, require_frame, settings

require_frame()
state = st.session_state
PLAYGROUND = Path(__file__).resolve().parent / "playground.py"
ALL = "All"
_STAT_FIELDS = {f.name for f in fields(GenerationStats)}

if state.pop("goto_playground", False):
    st.switch_page(PLAYGROUND)

st.title("🗂️ Run history")
store = history()
if store is None:
    st.stop()


def open_in_playground(run: StoredRun) -> None:
    """Callback: the sidebar and the Playground's editors take this run's settings."""
    config = settings()
    seed_picker("", config, run.backend, run.host, run.model)
    state.max_tokens, state.temperature = run.max_tokens, run.temperature
    state.repeat_penalty = run.repeat_penalty
    state.playground_system, state.playground_user = run.system, run.prompt
    if run.preset in {location.name for location in load_locations()}:
        state.playground_location = run.preset
    state.fallback_notice = ""
    state.goto_playground = True


def delete(run_id: int) -> None:
    store.delete(run_id)  # type: ignore[union-attr]


def stats_of(run: StoredRun) -> GenerationStats:
    return GenerationStats(**{k: v for k, v in run.stats.items() if k in _STAT_FIELDS})


filters = st.columns([1, 1, 1, 1, 2])
chosen: dict[str, str | None] = {}
for column, name in zip(filters, ("backend", "model", "preset", "status"), strict=False):
    options = [ALL, *store.distinct_values(name)]
    value = column.selectbox(name.capitalize(), options, key=f"history_{name}")
    chosen[name] = None if value == ALL else value
search = filters[4].text_input("Search prompts and answers", key="history_search")
runs = store.list_runs(backend=chosen["backend"], model=chosen["model"],
                       preset=chosen["preset"], status=chosen["status"],
                       search=search or None, limit=500)
total = store.count_runs(backend=chosen["backend"], model=chosen["model"],
                         preset=chosen["preset"], status=chosen["status"], search=search or None)

st.caption(f"Showing {len(runs)} of {total} runs, newest first.")
table = pd.DataFrame([{
    "id": run.id, "when (UTC)": run.created_at[:19].replace("T", " "), "page": run.page,
    "backend": run.backend, "model": run.model, "preset": run.preset,
    "status": STATUS_LABELS.get(run.status, run.status), "output tokens": run.output_tokens,
    "total s": round(run.total_time_s, 2) if run.total_time_s is not None else None,
    "answer": run.text[:90].replace("\n", " "),
} for run in runs])
st.dataframe(table, hide_index=True, width="stretch")
by_id = {run.id: run for run in runs}
# Runs filtered out or deleted since they were picked leave the selection.
state.history_open = [run_id for run_id in state.get("history_open", []) if run_id in by_id]
picked = st.multiselect(
    "Open runs: one to read it, two to see them side by side", list(by_id), max_selections=2,
    key="history_open",
    format_func=lambda run_id: f"#{run_id} · {by_id[run_id].backend} · {by_id[run_id].model}"
    f" · {STATUS_LABELS.get(by_id[run_id].status, by_id[run_id].status)}")
selected = [by_id[run_id] for run_id in picked]

exports = st.columns(2)
exports[0].download_button("⬇ Export CSV", export_csv(runs), "pv-runs.csv", "text/csv",
                           width="stretch", disabled=not runs)
exports[1].download_button("⬇ Export JSON", export_json(runs), "pv-runs.json",
                           "application/json", width="stretch", disabled=not runs)

if len(selected) == 1:
    (run,) = selected
    st.subheader(f"Run {run.id} · {run.backend} · {run.model}")
    st.caption(f"{run.created_at[:19].replace('T', ' ')} UTC · {run.page} · {run.host or '–'} "
               f"· preset {run.preset or '–'} · max tokens {run.max_tokens} · "
               f"temperature {run.temperature}")
    if run.error:
        st.error(run.error, icon="⚠️")
    elif run.status == "interrupted":
        st.warning("Interrupted: the app stopped while this run was going. The partial "
                   "answer is kept.", icon="⏸️")
    with st.expander("Prompts"):
        st.text_area("System prompt", run.system, disabled=True, key=f"sys_{run.id}")
        st.text_area("User prompt", run.prompt, height=250, disabled=True, key=f"usr_{run.id}")
    with st.container(key="history_answer", border=True):
        show_answer(run.text, st.empty())
    show_stats(stats_of(run), STATUS_LABELS.get(run.status, run.status),
               streamed=run.backend != "vllm")
    actions = st.columns([1, 1, 4])
    actions[0].button("Open in Playground", on_click=open_in_playground, args=(run,),
                      type="primary", width="stretch")
    actions[1].button("Delete", on_click=delete, args=(run.id,), width="stretch")
elif len(selected) == 2:
    for index, (column, run) in enumerate(zip(st.columns(2), selected, strict=True)):
        with column:
            progress, answer, footer = answer_pane(
                f"**Run {run.id}** · {run.backend} · {run.model}", key=f"history_pane_{index}")
            progress.caption(f"{STATUS_LABELS.get(run.status, run.status)} · "
                             f"{run.created_at[:19].replace('T', ' ')} UTC")
            report = check(run.text, run.prompt)
            show_answer(run.text, answer, report)
            footer.caption(f"Grounding: {report.summary()}")
