"""Leaderboard: the backend-and-model choices ranked from the blind votes (Compare's, and
those cast here on an evaluation's cells), with the votes behind each pair."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from studio.pv.library import load_system_prompts
from studio.records.render import literal, stamp
from studio.records.store import RunStore
from studio.runs.evaluation import KIND, Evaluation, EvaluationSpec, reopen
from studio.votes import tally
from studio.votes.ballot import Vote, pick_pair
from studio.votes.leaderboard import Battle, Leaderboard, leaderboard, to_csv, to_json
from ui.blind import Blind, blind_answers, blind_of, identities, set_blind, vote_form
from ui.state import history, require_frame, viewer

PAGE = "leaderboard"
ANY = "All"
EVALUATIONS = 30  # the evaluations offered to vote on


def main() -> None:
    require_frame()
    st.title("🏆 Leaderboard")
    store = history()
    if store is None:
        return
    blind = blind_of(PAGE)
    voting: tuple[Evaluation, int] | None = st.session_state.get("leaderboard_cells")
    if blind is not None and voting is not None:
        evaluation, row = voting
        if blind.hidden:
            cells_vote(evaluation, row, blind)
            return
        identities(blind, evaluation.contenders(row, blind.order))
    vote_on_evaluation(store)
    board(store)


def cells_vote(evaluation: Evaluation, row: int, blind: Blind) -> None:
    """Two of an evaluation's cells at one location, lettered at random, and the vote."""
    place = literal(evaluation.spec.scenarios[row].name)
    st.caption(f"Blind vote on evaluation #{evaluation.group_id}, location {row + 1} "
               f"({place}): two of its choices' answers in a random order. Which backend and "
               "model wrote each shows once you vote.")
    cells = [evaluation.cell(choice, row) for choice in blind.order]
    blind_answers([(cell.text, cell.check, "") for cell in cells])  # answered, each
    vote_form(PAGE, evaluation.ballot(row, blind.order))


def vote_on_evaluation(store: RunStore) -> None:
    """Pick an evaluation and a location; two of its answered cells go to a blind vote."""
    summaries = store.group_summaries(KIND, EVALUATIONS, viewer().only)
    with st.expander("🗳️ Vote blind on an evaluation's answers", expanded=False):
        if not summaries:
            st.caption("No evaluation yet: run one on the Evaluate page, then vote here on "
                       "its answers, two at a time.")
            return
        by_id = {summary.group.id: summary for summary in summaries}
        left, right = st.columns(2)
        # Numbers and dates only: the choices' names would tell the letters apart.
        group_id = left.selectbox(
            "Evaluation", list(by_id), key="leaderboard_evaluation",
            format_func=lambda gid: f"#{gid} · {stamp(by_id[gid].group.created_at)} UTC · "
                                    f"{by_id[gid].done} cells answered")
        spec = EvaluationSpec.from_json(by_id[group_id].group.spec) if group_id else None
        if spec is None or not spec.rows:
            return
        row = right.selectbox("Location", range(spec.rows), key="leaderboard_location",
                              format_func=lambda i: f"{i + 1}. {spec.scenarios[i].name}")
        st.button("Draw two answers to vote on", type="primary", on_click=draw,
                  args=(store, group_id, row or 0))
        if (problem := st.session_state.get("leaderboard_draw_problem")):
            st.warning(problem, icon="🗳️")


def draw(store: RunStore, group_id: int, row: int) -> None:
    """Reopen the evaluation and draw two of its answered cells at ``row`` in a random order."""
    state = st.session_state
    state.leaderboard_draw_problem = ""
    try:
        evaluation = reopen(store, group_id)
    except ValueError as exc:
        state.leaderboard_draw_problem = str(exc)
        return
    answered = evaluation.votable(row)
    if len(answered) < 2:
        state.leaderboard_draw_problem = (
            f"Fewer than two choices answered at this location ({len(answered)}): nothing "
            "to vote on. Pick another location, or resume the evaluation.")
        return
    state.leaderboard_cells = (evaluation, row)
    set_blind(PAGE, Blind(tuple(answered[i] for i in pick_pair(len(answered)))))


def board(store: RunStore) -> None:
    """The filters, the ranking, the votes behind each pair, and the exports."""
    own = viewer()
    everyone = True
    if not own.sees_all:
        everyone = st.radio("Votes", ["Everyone's", "Mine"], horizontal=True,
                            key="leaderboard_scope") == "Everyone's"
    votes = store.votes(None if everyone else own.user)
    readable = {vote.ballot.system for vote in votes if own.sees_all or vote.user == own.user}
    names = tally.system_prompt_names(votes, load_system_prompts(), readable)
    left, right = st.columns(2)
    location = left.selectbox("Location", [ANY, *tally.locations(votes)],
                              key="leaderboard_location_filter")
    system = right.selectbox("System prompt", [ANY, *names], key="leaderboard_system",
                             format_func=lambda text: text if text == ANY else names[text])
    chosen = tally.matching(votes, None if location == ANY else location,
                            None if system == ANY else system)
    battles = tally.battles(chosen)
    if not battles:
        st.info("No votes match yet. Turn on Blind vote on the Compare page, or vote on an "
                "evaluation's answers above.", icon="🏆")
        return
    result = ranked(tuple(battles))
    st.caption(f"{len(chosen)} votes, {len(battles)} pairwise battles. {result.method}")
    ranking(result)
    pairs(result, chosen, own.sees_all)
    downloads = st.columns(2)
    downloads[0].download_button("⬇ Leaderboard (CSV)", to_csv(result), "pv-leaderboard.csv",
                                 "text/csv", width="stretch")
    downloads[1].download_button("⬇ Leaderboard (JSON)", to_json(result),
                                 "pv-leaderboard.json", "application/json", width="stretch")


@st.cache_data(max_entries=16, show_spinner=False)
def ranked(battles: tuple[Battle, ...]) -> Leaderboard:
    """The leaderboard of these battles: 1000 refits take a few tenths of a second, so a
    rerun with the same votes (a filter put back, a pair picked) reuses it."""
    return leaderboard(list(battles))


def ranking(result: Leaderboard) -> None:
    """A row per choice: rank, rating and its interval, and its votes."""
    def number(value: float | None) -> str:
        return "insufficient votes" if value is None else f"{value:.1f}"

    st.dataframe(pd.DataFrame([{
        "Rank": row.rank if row.rank is not None else "–", "Choice": row.choice,
        "Rating": number(row.rating),
        "95% CI": ("insufficient votes" if row.ci_low is None or row.ci_high is None
                   else f"{row.ci_low:.1f} – {row.ci_high:.1f}"),
        "Battles": row.votes, "Won": row.wins, "Lost": row.losses, "Tied": row.ties,
    } for row in result.rows]), hide_index=True, width="stretch", column_config={
        "Battles": st.column_config.Column(help="Pairwise battles: a vote among three or "
                                                "four answers is one battle per pair it "
                                                "decides")})
    if result.reason:
        st.caption(literal(result.reason))


def pairs(result: Leaderboard, votes: list[Vote], sees_all: bool) -> None:
    """The votes behind each pair: the counts, and one pair's votes listed."""
    st.subheader("Votes behind each pair")
    st.dataframe(pd.DataFrame([{
        "Choice A": pair.a, "Choice B": pair.b, "A won": pair.a_wins, "B won": pair.b_wins,
        "Tie": pair.ties, "Both bad": pair.both_bad, "Votes": pair.total,
    } for pair in result.pairs]), hide_index=True, width="stretch")
    options = list(range(len(result.pairs)))
    picked = st.selectbox("List the votes of a pair", options, key="leaderboard_pair",
                          format_func=lambda i: f"{result.pairs[i].a}  vs  {result.pairs[i].b}")
    if picked is None:
        return
    pair = result.pairs[picked]
    user = viewer().user
    behind = tally.between(votes, pair.a, pair.b)
    st.dataframe(pd.DataFrame(tally.vote_rows(
        behind, show_user=sees_all and bool(user),
        show_reason={vote.id: sees_all or vote.user == user for vote in behind})),
        hide_index=True, width="stretch")


main()
