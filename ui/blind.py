"""A blind vote on a page (Compare's panes, an evaluation's cells): what stays hidden until
the vote, the answers by letter, the vote buttons, and the identities after.

Until the vote, nothing that names a backend, model or host is drawn: not the page's pickers,
not the sidebar (app.py asks ``hides_names``), not the figures, status lines or errors
(they name their server). Streamlit sends the client only what is drawn, so what is not drawn
is in neither the page nor the websocket.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from studio.pv.checks import AnswerCheck
from studio.records.render import literal
from studio.votes.ballot import Ballot, Contender, Vote
from ui.output import check_lines, show_answer
from ui.state import history, viewer

WAIT_POLL_S = 0.5
SIDEBAR_SLOT = "_sidebar_slot"  # session state: this run's slot of the sidebar's pickers
NOT_KEPT = ("The vote was not kept: the run history is unavailable (see the warning above). "
            "The identities are shown anyway.")


@dataclass
class Blind:
    """A page's blind round: letter i shows the page's item ``order[i]`` (a pane, a choice);
    hidden until the vote is cast or the analyst reveals without one."""

    order: tuple[int, ...]
    group_id: int | None = None  # the runs' group, held out of History meanwhile
    vote: Vote | None = None
    skipped: bool = False
    kept: bool = True  # the vote went into the history

    @property
    def hidden(self) -> bool:
        return self.vote is None and not self.skipped


BLIND_KEY = "_blind"  # session state: {page: its blind round}


def _rounds() -> dict[str, Blind]:
    rounds: dict[str, Blind] = st.session_state.setdefault(BLIND_KEY, {})
    return rounds


def blind_of(page: str) -> Blind | None:
    """This session's blind round on ``page`` (None: not blind)."""
    return _rounds().get(page)


def set_blind(page: str, blind: Blind | None) -> None:
    """A new round on the page: blind (its order) or not (None); the last one's goes."""
    rounds = _rounds()
    if blind is None:
        rounds.pop(page, None)
    else:
        rounds[page] = blind


def hides_names(page: str) -> bool:
    """Whether ``page`` has an answer still to vote on: then app.py draws no sidebar picker."""
    blind = blind_of(page)
    return blind is not None and blind.hidden


def keep_sidebar_slot(slot: DeltaGenerator) -> None:
    """app.py's slot of the sidebar's pickers in this run, for ``clear_names``."""
    st.session_state[SIDEBAR_SLOT] = slot


def clear_names(*slots: DeltaGenerator) -> None:
    """As a blind round starts: empty the page's ``slots`` and the sidebar's pickers that
    this run drew. The browser keeps what a run drew until the next run ends; emptied now,
    no name stays in it while the round runs."""
    sidebar: DeltaGenerator | None = st.session_state.get(SIDEBAR_SLOT)
    for slot in (*slots, *([sidebar] if sidebar is not None else [])):
        slot.empty()


def hidden_groups() -> list[int]:
    """The history groups of blind votes still to cast (any session's: ``hold_blind``):
    History leaves their runs out until then (a run's backend and model beside its answer
    would tell the letters)."""
    store = history()
    return store.blind_groups() if store is not None else []


def _release(blind: Blind) -> None:
    store = history()
    if store is not None and blind.group_id is not None:
        store.release_blind(blind.group_id)


def cast(page: str, ballot: Ballot, winner: str) -> None:
    """The vote button's callback: keep the vote (per user) and lift the blind."""
    blind = blind_of(page)
    if blind is None or not blind.hidden:
        return  # a second click, from a stale page: the first vote stands
    reason = str(st.session_state.get(f"{page}_vote_reason") or "").strip()
    vote = Vote(ballot, winner, reason, viewer().user)
    store = history()
    blind.kept = store is not None
    blind.vote = store.add_vote(vote) if store is not None else vote
    st.session_state[f"{page}_vote_reason"] = ""
    _release(blind)


def reveal(page: str) -> None:
    """Show the identities without a vote (nothing is kept)."""
    blind = blind_of(page)
    if blind is not None:
        blind.skipped = True
        _release(blind)


def blind_answers(answers: Sequence[tuple[str, AnswerCheck | None, str]]) -> None:
    """The answers by letter, each whole, with its figure check (it judges the answer, not
    who wrote it): (answer, check, why it is not in the vote or '') per letter."""
    for letter, column, (text, check, left_out) in zip("ABCD", st.columns(len(answers)),
                                                       answers, strict=False):
        with column:
            st.markdown(f"**{letter}**")
            with st.container(key=f"blind_answer_{letter}", border=True, height=560):
                if text.strip():
                    show_answer(text, st.empty(), check)
                else:
                    st.caption("No answer.")
            if left_out:
                st.caption(left_out)
            if check is not None:
                st.caption(check_lines(check))


def vote_form(page: str, ballot: Ballot | None) -> None:
    """The verdict buttons and an optional reason, then ``cast``; and Reveal without a vote.
    No ballot (fewer than two answers): only Reveal."""
    if ballot is None:
        st.info("Fewer than two answers came back (a failed or stopped pane is no model's "
                "loss): nothing to vote on.", icon="🗳️")
        st.button("Reveal", key=f"{page}_reveal", on_click=reveal, args=(page,))
        return
    st.markdown("**Which answer is better?** The backends, models and hosts appear once you "
                "vote.")
    st.text_input("Reason (optional)", key=f"{page}_vote_reason", max_chars=500,
                  placeholder="e.g. B's payback ignores the export rate")
    winners = ballot.winners()
    columns = st.columns(len(winners) + 1)
    for column, winner in zip(columns, winners, strict=False):
        column.button(ballot.verdict_label(winner), key=f"{page}_vote_{winner}",
                      on_click=cast, args=(page, ballot, winner), width="stretch",
                      type="primary" if winner in ballot.letters else "secondary")
    columns[-1].button("Reveal, no vote", key=f"{page}_reveal", on_click=reveal, args=(page,),
                       width="stretch", help="Show who wrote which answer; no vote is kept.")


def identities(blind: Blind, contenders: Sequence[Contender]) -> None:
    """After the vote: who each letter was, and the vote as kept."""
    lines = [f"**{c.letter}** was {literal(c.label)}" + (f" on {literal(c.host)}" if c.host
                                                         else "")
             for c in contenders]
    st.markdown(" · ".join(lines))
    if blind.vote is not None:
        vote = blind.vote
        st.success(literal(f"Your vote: {vote.verdict}" + (f". Reason: {vote.reason}"
                                                          if vote.reason else "")), icon="🗳️")
        if not blind.kept:
            st.warning(NOT_KEPT, icon="🗄️")


@st.fragment(run_every=WAIT_POLL_S)
def wait_for_all(done: Callable[[], bool], started: datetime) -> None:
    """Until every answer is in, one line with one clock for all (no answer's speed shows);
    then the whole page again. A fragment, so the page's run ends meanwhile: Streamlit
    removes what the last run drew (the pickers, the sidebar) only once a run ends."""
    if done():
        st.rerun(scope="app")
    waited = (datetime.now(UTC) - started).total_seconds()
    st.caption(f"Waiting for every answer… {waited:.0f} s")
