"""Blind votes without a page: the battles a vote stands for, the store, the filters, the
exports."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from studio.records.store import RunStore
from studio.votes import tally
from studio.votes.ballot import (
    BOTH_BAD,
    TIE,
    Ballot,
    Contender,
    Vote,
    pick_pair,
    shuffled,
)
from studio.votes.leaderboard import Battle


def ballot(*labels: str, location: str = "Fresno, CA", system: str = "sys") -> Ballot:
    return Ballot("compare", tuple(Contender("ABCD"[i], label) for i, label in
                                   enumerate(labels)), system, "Size my system.",
                  location=location)


def test_a_vote_between_two_is_one_battle_as_lmarena_counts_it() -> None:
    two = ballot("Ollama · x", "vLLM · y")
    assert Vote(two, "A").battles() == [Battle("Ollama · x", "vLLM · y", "a")]
    assert Vote(two, "B").battles() == [Battle("Ollama · x", "vLLM · y", "b")]
    assert Vote(two, TIE).battles() == [Battle("Ollama · x", "vLLM · y", "tie")]
    assert Vote(two, BOTH_BAD).battles() == [Battle("Ollama · x", "vLLM · y", "bothbad")]
    assert two.verdict_label(BOTH_BAD) == "Both bad" and two.verdict_label("A") == "A is better"


def test_among_four_the_best_beats_each_other_and_says_nothing_between_the_rest() -> None:
    four = ballot("p", "q", "r", "s")
    battles = Vote(four, "C").battles()
    assert sorted((b.a, b.b, b.outcome) for b in battles) == [
        ("p", "r", "b"), ("q", "r", "b"), ("r", "s", "a")]
    assert len(Vote(four, TIE).battles()) == 6
    assert four.verdict_label("C") == "C is best" and four.verdict_label(BOTH_BAD) == "All bad"


def test_the_same_choice_twice_plays_no_battle_against_itself() -> None:
    assert Vote(ballot("Ollama · x", "Ollama · x"), "A").battles() == []


def test_a_verdict_the_ballot_does_not_offer_is_refused() -> None:
    with pytest.raises(ValueError, match="verdict"):
        Vote(ballot("x", "y"), "C")
    with pytest.raises(ValueError, match="between 2 and 4"):
        ballot("x")


def test_the_letters_order_is_a_permutation_and_a_pair_two_different_items() -> None:
    orders = {shuffled(4) for _ in range(200)}
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    assert len(orders) > 12  # random: most of the 24 orders turn up
    pairs = {pick_pair(3) for _ in range(200)}
    assert all(len(set(pair)) == 2 and set(pair) <= {0, 1, 2} for pair in pairs)
    assert (0, 1) in pairs and (1, 0) in pairs


def test_the_store_keeps_votes_per_user_with_their_pairing(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "h.sqlite3")
    pairing = Ballot("evaluation", (Contender("A", "vLLM · y", "http://gpu:8000", 7),
                                    Contender("B", "Ollama · x", "", None)),
                     "sys", "prompt", "preset", "Austin, TX", None)
    kept = store.add_vote(Vote(pairing, "B", "cites the tariff", "ann"))
    store.add_vote(Vote(ballot("x", "y"), TIE, "", "bob"))
    assert kept.id and kept.created_at
    (mine,) = store.votes("ann")
    assert mine == kept
    assert mine.ballot.contenders[0].run_id == 7 and mine.verdict == "B is better (Ollama · x)"
    assert len(store.votes()) == 2
    assert not store.delete_vote(kept.id, "bob") and store.delete_vote(kept.id, "ann")
    assert [vote.user for vote in store.votes()] == ["bob"]


def test_filters_and_another_users_system_prompt_is_named_by_a_fingerprint() -> None:
    votes = [Vote(ballot("x", "y", system="preset text"), "A"),
             Vote(ballot("x", "y", location="Austin, TX", system="my own prompt"), "B"),
             Vote(ballot("x", "y", system="their secret prompt"), TIE)]
    assert tally.locations(votes) == ["Austin, TX", "Fresno, CA"]
    assert len(tally.matching(votes, location="Fresno, CA")) == 2
    assert len(tally.matching(votes, system="my own prompt")) == 1
    names = tally.system_prompt_names(votes, {"Analyst": "preset text"}, ["my own prompt"])
    assert names["preset text"] == "Preset: Analyst"
    assert names["my own prompt"].startswith("Custom: my own prompt")
    assert "secret" not in names["their secret prompt"]
    assert names["their secret prompt"].startswith("Another user's")


def test_the_votes_exports_are_safe_and_whole() -> None:
    votes = [Vote(ballot("=cmd|' /C calc'!A0", "y"), "A", "=HYPERLINK(\"x\")", "ann", 3)]
    rows = list(csv.reader(io.StringIO(tally.votes_csv(votes))))
    assert rows[1][rows[0].index("reason")].startswith("'=")
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in rows[1])
    (exported,) = json.loads(tally.votes_json(votes))
    assert exported["user_prompt"] == "Size my system." and exported["winner"] == "A"
    assert exported["pairing"][0]["label"].startswith("=cmd")


def test_a_blind_comparisons_runs_are_held_until_the_vote_or_the_hold_runs_out(
        tmp_path: Path) -> None:
    store = RunStore(tmp_path / "h.sqlite3")
    held, lapsed, other = (store.create_group("compare") for _ in range(3))
    store.hold_blind(held)
    store.hold_blind(lapsed, for_s=-1)  # a round whose tab went away an hour ago
    assert store.blind_groups() == [held]
    store.release_blind(held)
    assert store.blind_groups() == []
    assert other not in store.blind_groups()
