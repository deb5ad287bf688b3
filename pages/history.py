"""History: every run kept. Find, read, compare two, re-open in the Playground, export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from studio.pv.checks import CHECKS_HELP, check_cell, check_run
from studio.records.render import dashes, literal, stamp
from studio.records.store import (
    SHARE_GROUP,
    SHARE_RUN,
    RunStore,
    StoredRun,
    export_csv_lines,
    export_json_lines,
    structured_shares,
)
from studio.runs.evaluation import PAGE as EVALUATION_PAGE
from studio.runs.request import AnswerFormat, status_label
from studio.runs.runner import Run
from studio.votes.tally import run_votes, vote_rows, votes_csv, votes_json
from ui.blind import hidden_groups
from ui.prompt_editor import load_prompts
from ui.recorded import read_run, run_column
from ui.share import group_title, group_word, share_action
from ui.sidebar import load_selection
from ui.state import history, require_frame, settings, viewer

PLAYGROUND = Path(__file__).resolve().parent / "playground.py"
ALL = "All"
PAGE_SIZE = 100
# Widths (px) that fit every column in the page at 1280 px with the sidebar open.
HISTORY_COLUMNS: dict[str, Any] = {
    "id": st.column_config.Column(width=40),
    "when (UTC)": st.column_config.Column(width=104),
    "page": st.column_config.Column(width=74),
    "user": st.column_config.Column(width=64),
    "backend": st.column_config.Column(width=64),
    "model": st.column_config.Column(width=76),
    "preset": st.column_config.Column(width=76),
    "status": st.column_config.Column(width=92),
    "notes": st.column_config.Column(width=50),
    "output tokens": st.column_config.Column("tokens", width=52, help="Output tokens"),
    "total s": st.column_config.Column(width=50, help="Total time, seconds"),
    "checks": st.column_config.Column(width=84, help=CHECKS_HELP),
    "answer": st.column_config.Column(width=48, help="The answer's start: open the run "
                                                     "to read it"),
}


def main() -> None:
    require_frame()
    if st.session_state.pop("goto_playground", False):
        st.switch_page(PLAYGROUND)
    st.title("🗂️ Run history")
    store = history()
    if store is None:
        return
    matching = filters(store)
    total = store.count_runs(**matching)
    runs = page_of_runs(store, matching, total)
    selected = open_runs(store, runs)
    exports(store, matching, total)
    structured = store.iter_runs(**matching, answer_format=AnswerFormat.STRUCTURED)
    if shares := structured_shares(structured):
        st.caption("🧾 Structured answers of the matching runs: " + " · ".join(
            f"{literal(label)}: {share}" for label, share in shares.items()))
    if len(selected) == 1:
        one_run(store, selected[0])
    elif len(selected) == 2:
        side_by_side(selected)
    votes_kept(store)


def filters(store: RunStore) -> dict[str, Any]:
    """The filter row; the filters chosen, as ``RunStore.list_runs`` takes them."""
    columns = st.columns([1, 1, 1, 1, 2])
    only = viewer().only  # on a shared server: this user's runs (admins: everyone's)
    chosen: dict[str, Any] = {"user": only}
    for column, name in zip(columns, ("backend", "model", "preset", "status"), strict=False):
        options = [ALL, *store.distinct_values(name, user=only)]
        value = column.selectbox(name.capitalize(), options, key=f"history_{name}",
                                 format_func=status_label if name == "status" else str)
        chosen[name] = None if value == ALL else value
    search = columns[4].text_input("Search prompts and answers", key="history_search")
    if hidden := hidden_groups():
        st.caption("The runs of your blind vote still to cast are left out until you vote.")
    return {**chosen, "search": search or None, "hidden_groups": hidden}


def page_of_runs(store: RunStore, matching: dict[str, Any], total: int) -> list[StoredRun]:
    """The table of one page of matching runs, newest first; the runs on it."""
    state = st.session_state
    pages = max(1, -(-total // PAGE_SIZE))
    if state.get("history_page", 1) > pages:  # fewer matches since: the last page there is
        state.history_page = pages
    number = 1
    if pages > 1:
        number = int(st.number_input(f"Page (of {pages})", 1, pages, key="history_page"))
    runs = store.list_runs(**matching, limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    first = (number - 1) * PAGE_SIZE + 1
    st.caption(f"Runs {first:,}–{first + len(runs) - 1:,} of {total:,}, newest first."
               if runs else "No runs match.")
    checks = [check_run(run.text, run, run.stats) for run in runs]
    st.dataframe(pd.DataFrame(dashes([{
        "id": run.id, "when (UTC)": stamp(run.created_at), "page": run.page,
        **({"user": run.user or "–"} if viewer().sees_all and viewer().user else {}),
        "backend": run.backend, "model": run.model, "preset": run.preset,
        "status": status_label(run.status), "notes": ", ".join(run.outcome.notes),
        "output tokens": run.output_tokens,
        "total s": round(run.total_time_s, 2) if run.total_time_s is not None else None,
        "checks": check_cell(check),
        "answer": run.text[:90].replace("\n", " "),
    } for run, check in zip(runs, checks, strict=True)])), hide_index=True, width="stretch",
        column_config=HISTORY_COLUMNS)
    return runs


def open_runs(store: RunStore, runs: list[StoredRun]) -> list[StoredRun]:
    """Pick one or two runs: from this page, kept from earlier pages, or by id."""
    state = st.session_state
    by_id = {run.id: run for run in runs}
    # Open runs stay open across pages and filters; deleted ones leave the selection.
    for run_id in state.get("history_open", []):
        if run_id not in by_id and (kept := visible(store, run_id)) is not None:
            by_id[run_id] = kept
    state.history_open = [run_id for run_id in state.get("history_open", []) if run_id in by_id]
    chooser, by_number = st.columns([4, 1])
    picked = chooser.multiselect(
        "Open runs: one to read it, two to see them side by side", list(by_id),
        max_selections=2, select_all=False, key="history_open",
        format_func=lambda run_id: f"#{run_id} · {by_id[run_id].backend} · "
        f"{by_id[run_id].model} · {status_label(by_id[run_id].status)}")
    by_number.number_input("Open run by id", min_value=1, step=1, value=None,
                           key="history_open_id", on_change=open_by_id, args=(store,),
                           placeholder="run id")
    if state.get("history_open_missing"):
        st.warning(f"There is no run #{state.history_open_missing}.", icon="🔎")
    return [by_id[run_id] for run_id in picked]


def exports(store: RunStore, matching: dict[str, Any], total: int) -> None:
    """Every run that matches the filters (not just this page), read and written when
    clicked."""
    columns = st.columns(2)
    columns[0].download_button(
        f"⬇ Export CSV ({total:,} runs)",
        lambda: "".join(export_csv_lines(store.iter_runs(**matching))),
        "pv-runs.csv", "text/csv", width="stretch", disabled=not total)
    columns[1].download_button(
        f"⬇ Export JSON ({total:,} runs)",
        lambda: "".join(export_json_lines(store.iter_runs(**matching))),
        "pv-runs.json", "application/json", width="stretch", disabled=not total)


def one_run(store: RunStore, run: StoredRun) -> None:
    read_run(run, group_note(run))
    for line in run_votes(store.votes(viewer().only), run.id):
        st.caption(f"🗳️ {literal(line)}")
    actions = st.columns([2, 1, 3])
    actions[0].button("Open in Playground", on_click=open_in_playground, args=(run,),
                      type="primary", width="stretch")
    if st.session_state.get("history_deleting") == run.id:
        actions[2].warning(f"Delete run #{run.id} for good? It cannot be undone.", icon="🗑️")
        actions[1].button("Yes, delete", on_click=delete, args=(store, run.id),
                          width="stretch")
        actions[2].button("Keep it", on_click=confirm_delete, args=(None,))
    else:
        actions[1].button("Delete…", width="stretch", on_click=confirm_delete, args=(run.id,))
    share_actions(store, run)


def share_actions(store: RunStore, run: StoredRun) -> None:
    """Share this run, and the Compare, Batch or Evaluation it belongs to, as read-only
    links."""
    share_action(SHARE_RUN, run.id, f"Run {run.id} · {run.backend} · {run.model}",
                 label="🔗 Share this run")
    if run.group_id is not None and (group := store.get_group(run.group_id)) is not None:
        share_action(SHARE_GROUP, group.id, group_title(group),
                     label=f"🔗 Share its {group_word(group.kind)}")


def side_by_side(runs: list[StoredRun]) -> None:
    for index, (column, run) in enumerate(zip(st.columns(2), runs, strict=True)):
        with column:
            run_column(run, f"**Run {run.id}** · {literal(run.backend)} · "
                            f"{literal(run.model)}", f"history_pane_{index}", group_note(run))


def votes_kept(store: RunStore) -> None:
    """The blind votes (this user's; an admin's: everyone's) with their prompt, location,
    pairing and runs; the Leaderboard ranks from them."""
    votes = store.votes(viewer().only)
    with st.expander(f"🗳️ Blind votes ({len(votes):,})"):
        if not votes:
            st.caption("No votes yet: turn on Blind vote on the Compare page, or vote on an "
                       "evaluation's answers on the Leaderboard page.")
            return
        st.dataframe(pd.DataFrame(vote_rows(votes, show_user=viewer().sees_all
                                            and bool(viewer().user))),
                     hide_index=True, width="stretch")
        st.caption("Open a vote's runs by id above; the exports hold each vote's prompts.")
        columns = st.columns(2)
        columns[0].download_button("⬇ Votes (CSV)", lambda: votes_csv(votes), "pv-votes.csv",
                                   "text/csv", width="stretch")
        columns[1].download_button("⬇ Votes (JSON)", lambda: votes_json(votes),
                                   "pv-votes.json", "application/json", width="stretch")


def group_note(run: StoredRun) -> str | None:
    """Where an evaluation's cell belongs: 'Evaluation #4, choice 2, location 7: opens
    whole on the Evaluate page (Earlier evaluations)'; None for other runs."""
    if run.page != EVALUATION_PAGE or run.group_id is None:
        return None
    return (f"A cell of evaluation #{run.group_id} (position {run.position + 1}): it opens "
            "whole on the Evaluate page, under Earlier evaluations.")


# -- callbacks (run before the page's next run) -------------------------------------------
def open_in_playground(run: StoredRun) -> None:
    """The sidebar and the Playground's editors take this run's settings, and its panel this
    run as it ended (not the Playground's last run); then go there."""
    load_selection(settings(), run.params())
    load_prompts("playground", run.system, run.prompt, run.preset, run.location)
    st.session_state.playground_run = Run.reopened_from(run)
    st.session_state.goto_playground = True


def open_by_id(store: RunStore) -> None:
    """Add the typed run id to the open runs, whatever page or filter shows it."""
    state = st.session_state
    wanted = state.get("history_open_id")
    if wanted is None:
        return
    found = visible(store, int(wanted))
    state.history_open_missing = None if found else int(wanted)
    if found is not None:
        state.history_open = [*state.get("history_open", []), found.id][-2:]


def visible(store: RunStore, run_id: int) -> StoredRun | None:
    """A run this viewer may open now: theirs (an admin: any), and not one of a blind vote
    still to cast."""
    run = store.get(run_id, viewer().only)
    return None if run is None or run.group_id in hidden_groups() else run


def confirm_delete(run_id: int | None) -> None:
    st.session_state.history_deleting = run_id


def delete(store: RunStore, run_id: int) -> None:
    store.delete(run_id, viewer().only)
    st.session_state.history_deleting = None


main()
