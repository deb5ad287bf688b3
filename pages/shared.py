"""Shared: a read-only link opened (a run, or a Compare, Batch or Evaluation with its runs),
with nothing to run, edit or delete; without a link, your shared links and Revoke."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from studio.pv.checks import check_cell, check_run
from studio.records.render import dashes, literal
from studio.records.store import SHARE_RUN, Group, RunStore, Share, StoredRun
from studio.runs.evaluation import KIND as EVALUATION_KIND
from studio.runs.evaluation import EvaluationSpec
from studio.runs.request import status_label
from ui.recorded import read_run, run_column, when
from ui.share import group_word, share_url
from ui.state import history, require_frame, viewer

UNKNOWN = "No shared item has this link: check it was copied whole."
GONE = ("What this link shared was deleted from the history since. Ask its owner for a new "
        "link.")


def main() -> None:
    require_frame()
    store = history()
    if store is None:
        return
    token = st.query_params.get("token")
    if token is not None:
        shared_item(store, str(token))
    elif not viewer().anonymous:  # a session let in without a login sees one item, no list
        your_links(store)


# -- a link opened ---------------------------------------------------------------------------
def shared_item(store: RunStore, token: str) -> None:
    """The item of this token, read-only; the token checked against the history on every
    run, so a link revoked meanwhile stops at the next click."""
    share = store.get_share(token)
    if share is None:
        st.title("🔗 Shared")
        st.error(UNKNOWN, icon="🔎")
        return
    if share.revoked:
        st.title("🔗 Shared")
        st.error(f"This link was revoked on {when(share.revoked_at)}; ask its owner for a new "
                 "one.", icon="🚫")
        return
    runs = store.shared_runs(share)
    group = store.get_group(share.target_id) if share.kind != SHARE_RUN else None
    if not runs:
        st.title("🔗 Shared")
        st.warning(GONE, icon="🗑️")
        return
    st.title(f"🔗 {literal(share.title) or 'Shared'}")
    st.caption(f"Shared read-only by {literal(share.owner) or 'this app'} on "
               f"{when(share.created_at)}.")
    if group is None:
        read_run(runs[0], key="shared_answer")
    elif group.kind == "compare":
        comparison(runs)
    elif group.kind == EVALUATION_KIND:
        evaluation(group, runs)
    else:
        rows(group, runs)


def comparison(runs: list[StoredRun]) -> None:
    """A Compare's panes side by side, a tab per round (a pane's runs in order)."""
    panes: dict[int, list[StoredRun]] = {}
    for run in runs:
        panes.setdefault(run.position, []).append(run)
    rounds = max(len(pane) for pane in panes.values())
    st.caption(f"{len(panes)} panes · {rounds} round{'s' if rounds != 1 else ''}: the same "
               "prompt on each pane at once.")
    with st.expander("Prompts"):
        st.text_area("System prompt", runs[0].system, disabled=True, key="shared_system")
        st.text_area("User prompt", runs[0].prompt, height=250, disabled=True,
                     key="shared_user")
    tabs = st.tabs([f"Round {number + 1}" for number in range(rounds)]) if rounds > 1 \
        else [st.container()]
    for number, tab in enumerate(tabs):
        with tab:
            shown = [(position, pane[number]) for position, pane in sorted(panes.items())
                     if number < len(pane)]
            for column, (position, run) in zip(st.columns(len(shown)), shown, strict=True):
                with column:
                    run_column(run, f"**Pane {position + 1}** · {literal(run.backend)} · "
                                    f"{literal(run.model)}", f"shared_pane_{number}_{position}")


def evaluation(group: Group, runs: list[StoredRun]) -> None:
    """An evaluation's cells: a table of every cell, then one location's cells side by
    side (a column per choice)."""
    try:
        spec: EvaluationSpec | None = EvaluationSpec.from_json(group.spec)
    except (ValueError, KeyError, TypeError):
        spec = None
    if spec is None or not spec.rows:
        rows(group, runs)
        return
    labels = spec.labels
    cells = _last_attempts(runs)
    by_location: dict[int, dict[int, StoredRun]] = {}
    for position, run in cells.items():
        choice, row = spec.cell_of(position)
        by_location.setdefault(row, {})[choice] = run
    st.caption(f"{len(labels)} choices over {spec.rows} locations: "
               + " · ".join(literal(label) for label in labels))
    st.dataframe(pd.DataFrame(dashes([{
        "location": spec.scenarios[row].name if row < spec.rows else f"row {row + 1}",
        **{f"choice {choice + 1}": _cell(by_location[row].get(choice))
           for choice in range(len(labels))}} for row in sorted(by_location)])),
        hide_index=True, width="stretch")
    row = st.selectbox("Read one location's answers", sorted(by_location),
                       format_func=lambda index: spec.scenarios[index].name
                       if index < spec.rows else f"row {index + 1}", key="shared_location")
    chosen = sorted(by_location[row].items())
    for column, (choice, run) in zip(st.columns(len(chosen)), chosen, strict=True):
        with column:
            label = labels[choice] if choice < len(labels) else f"Choice {choice + 1}"
            run_column(run, f"**{literal(label)}**", f"shared_cell_{choice}")


def rows(group: Group, runs: list[StoredRun]) -> None:
    """A Batch's rows (the last attempt at each): a table, then one row read in full."""
    cells = _last_attempts(runs)
    st.caption(f"A {literal(group_word(group.kind))} of {len(cells)} rows.")
    st.dataframe(pd.DataFrame(dashes([{
        "row": position + 1, "preset": run.preset, "backend": run.backend, "model": run.model,
        "status": status_label(run.status), "checks": _cell(run),
        "answer": run.text[:90].replace("\n", " ")} for position, run in cells.items()])),
        hide_index=True, width="stretch")
    position = st.selectbox("Read one row", list(cells), key="shared_row",
                            format_func=lambda index: f"Row {index + 1} · {cells[index].preset}")
    read_run(cells[position], key="shared_answer")


def _last_attempts(runs: list[StoredRun]) -> dict[int, StoredRun]:
    """Each position's last run (a retried row's last attempt), in position order."""
    last: dict[int, StoredRun] = {}
    for run in runs:
        last[run.position] = run
    return dict(sorted(last.items()))


def _cell(run: StoredRun | None) -> str | None:
    """A table cell: the status and the checks."""
    if run is None:
        return None
    checks = check_cell(check_run(run.text, run, run.stats))
    return status_label(run.status) + (f" · {checks}" if checks else "")


# -- your links ------------------------------------------------------------------------------
def your_links(store: RunStore) -> None:
    """The links this user made (an admin: everyone's), each with its state and Revoke."""
    st.title("🔗 Your shared links")
    who = viewer()
    shares = store.list_shares(who.only)
    if not shares:
        st.info("You have shared nothing yet. Share a run, or the comparison, batch or "
                "evaluation it belongs to, from History.", icon="🔗")
        return
    st.caption("Whoever has a link reads its run or group and can run, edit or delete "
               "nothing. A revoked link says so to whoever opens it.")
    for share in shares:
        with st.container(border=True):
            one_link(store, share, show_owner=who.sees_all and bool(who.user))


def one_link(store: RunStore, share: Share, show_owner: bool) -> None:
    kind = "run" if share.kind == SHARE_RUN else "group"
    state = (f"revoked {when(share.revoked_at)}"
             + (f" by {literal(share.revoked_by)}" if share.revoked_by else "")
             if share.revoked else "live")
    st.markdown(f"**{literal(share.title) or kind}** · {kind} · made {when(share.created_at)}"
                + (f" by {literal(share.owner) or '–'}" if show_owner else "")
                + f" · {state}")
    if share.revoked:
        return
    st.code(share_url(share.token), language=None)
    confirming = st.session_state.get("shared_revoking") == share.token
    if confirming:
        st.warning("Revoke this link? Whoever opens it then reads that it was revoked.",
                   icon="🚫")
        yes, no = st.columns(2)
        yes.button("Yes, revoke", key=f"revoke_yes_{share.token}", on_click=revoke,
                   args=(store, share.token), type="primary")
        no.button("Keep it", key=f"revoke_no_{share.token}", on_click=confirm_revoke,
                  args=(None,))
    else:
        st.button("Revoke…", key=f"revoke_{share.token}", on_click=confirm_revoke,
                  args=(share.token,))


def confirm_revoke(token: str | None) -> None:
    st.session_state.shared_revoking = token


def revoke(store: RunStore, token: str) -> None:
    who = viewer()
    if not who.anonymous:
        store.revoke_share(token, user=who.user, only=who.only)
    st.session_state.shared_revoking = None


main()
