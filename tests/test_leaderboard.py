"""The leaderboard maths (studio.votes.leaderboard) against evaluation-notes.md section 3's
worked example, which FastChat's own ``compute_bt`` and ``compute_bootstrap_bt`` produced, and
against an independent solver (Zermelo's iteration)."""

from __future__ import annotations

import ast
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

from studio.votes import leaderboard as lb
from studio.votes.leaderboard import (
    NO_RATINGS,
    Battle,
    Pair,
    bootstrap,
    fit,
    leaderboard,
    loss_and_grad,
    max_separable,
    pool,
    resample_ratings,
    to_csv,
    to_json,
    why_unrated,
)

# FastChat's figures for the notes' example (compute_bt; compute_bootstrap_bt, 1000 rounds,
# seed 0, on the votes x10).
MLE = {"A": 1097.67, "B": 984.66, "C": 917.67}
CI_X10 = {"A": (1045.2, 1159.1), "B": (935.6, 1031.5), "C": (850.0, 981.5)}
MEDIAN_X10 = {"A": 1098.5, "B": 985.0, "C": 916.6}


def votes(times: int = 1) -> list[Battle]:
    """The notes' 12 votes: A-B: A x3, B x1, tie x1; B-C: B x2, C x1; A-C: A x2, C x1."""
    once = ([Battle("A", "B", "a")] * 3 + [Battle("A", "B", "b"), Battle("A", "B", "tie")]
            + [Battle("B", "C", "a")] * 2 + [Battle("B", "C", "b")]
            + [Battle("A", "C", "a")] * 2 + [Battle("A", "C", "b")])
    return once * times


def many(a: str, b: str, a_wins: int, b_wins: int) -> list[Battle]:
    return [Battle(a, b, "a")] * a_wins + [Battle(a, b, "b")] * b_wins


# -- the point ratings -----------------------------------------------------------------------
def test_the_worked_example_of_the_notes() -> None:
    ratings = fit(votes())
    assert ratings is not None
    assert ratings == pytest.approx(MLE, abs=0.01)
    p_a_beats_b = 1 / (1 + 10 ** (-(ratings["A"] - ratings["B"]) / 400))
    assert p_a_beats_b == pytest.approx(0.6571, abs=5e-5)
    assert sum(ratings.values()) / 3 == pytest.approx(1000, abs=1e-9)


def test_ten_times_the_votes_give_the_same_fit() -> None:
    once, tenfold = fit(votes()), fit(votes(10))
    assert once is not None and tenfold is not None
    assert tenfold == pytest.approx(once, abs=1e-6)


def test_the_fit_is_the_likelihoods_maximum() -> None:
    """FastChat's gradient is zero at the fit, and Zermelo's iteration (ties as half a win),
    which shares no code with the Newton solver, reaches the same ratings."""
    battles = votes()
    pooled = pool(battles)
    ratings = fit(battles)
    assert ratings is not None
    natural = (np.array([ratings[m] for m in pooled.models]) - 1000) / 400
    _, grad = loss_and_grad(natural, pooled)
    assert np.abs(grad).max() < 1e-9
    nudged = natural + np.array([0.01, 0.0, 0.0])
    assert loss_and_grad(natural, pooled)[0] < loss_and_grad(nudged, pooled)[0]

    models = sorted(ratings)
    score = {m: 0.0 for m in models}  # wins, a tie counting half
    games = {(m, n): 0 for m in models for n in models}
    for battle in battles:
        value = {"a": 1.0, "b": 0.0}.get(battle.outcome, 0.5)
        score[battle.a] += value
        score[battle.b] += 1 - value
        games[battle.a, battle.b] += 1
        games[battle.b, battle.a] += 1
    strength = {m: 1.0 for m in models}
    for _ in range(2000):
        strength = {m: score[m] / sum(games[m, n] / (strength[m] + strength[n])
                                      for n in models if n != m) for m in models}
    logs = {m: 400 * math.log10(strength[m]) for m in models}
    mean = sum(logs.values()) / len(logs)
    assert {m: v - mean + 1000 for m, v in logs.items()} == pytest.approx(ratings, abs=1e-6)


def test_pooling_follows_fastchats_order() -> None:
    """Models by first appearance in the a column, then b; triples in np.unique's order:
    the bootstrap's draws depend on it."""
    pooled = pool([Battle("C", "A", "tie"), Battle("B", "D", "a"), Battle("C", "A", "bothbad"),
                   Battle("C", "A", "b")])
    assert pooled.models == ("C", "B", "A", "D")
    assert pooled.matchups.tolist() == [[0, 2], [0, 2], [1, 3]]
    assert pooled.outcomes.tolist() == [0.0, 0.5, 1.0]
    assert pooled.counts.tolist() == [1, 2, 1]  # a tie and all bad pool together


# -- the bootstrap ---------------------------------------------------------------------------
def test_the_bootstrap_matches_fastchats_figures() -> None:
    """FastChat's draws, in its order, refitted exactly: its published intervals and medians
    to 0.1 (FastChat's L-BFGS stops within a few thousandths of a point of the optimum)."""
    boot = bootstrap(votes(10), rounds=1000, seed=0)
    assert (boot.rounds, boot.seed, boot.separable) == (1000, 0, 0)
    for model, (low, high) in CI_X10.items():
        interval = boot.intervals[model]
        assert interval is not None
        assert interval == pytest.approx((low, high), abs=0.1)
    models, results = resample_ratings(votes(10), rounds=1000, seed=0)
    medians = dict(zip(models, np.median(results, axis=0).tolist(), strict=True))
    assert medians == pytest.approx(MEDIAN_X10, abs=0.1)
    assert np.allclose(results.mean(axis=1), 1000)  # every resample centred as FastChat's


def test_the_bootstrap_is_seeded() -> None:
    assert bootstrap(votes(10), rounds=50) == bootstrap(votes(10), rounds=50)
    assert bootstrap(votes(10), rounds=50, seed=1) != bootstrap(votes(10), rounds=50)


def test_a_resample_without_a_fit_counts_against_both_bounds() -> None:
    """24 of 1000 keep the 2.5% and 97.5% quantiles between finite values, 25 do not."""
    assert max_separable(1000) == 24
    assert max_separable(100) == 2
    values = np.concatenate([np.full(24, np.nan), np.linspace(900, 1100, 976)])
    interval = lb._interval(values, 24)
    assert interval is not None
    assert interval[0] == pytest.approx(900, abs=0.21)  # the finite values' lowest
    assert interval[1] == pytest.approx(1100, abs=0.21)
    assert lb._interval(np.concatenate([np.full(25, np.nan), np.linspace(900, 1100, 975)]),
                        25) is None


# -- separable votes: no number rather than a made-up one ------------------------------------
def test_a_choice_that_won_every_vote_has_no_rating() -> None:
    battles = [*many("A", "B", 3, 2), *many("B", "C", 2, 1), *many("C", "D", 4, 0),
               Battle("A", "C", "tie")]
    assert fit(battles) is None
    board = leaderboard(battles, rounds=100)
    assert all(row.rating is None and row.ci_low is None and row.rank is None
               for row in board.rows)
    assert board.separable == 100
    assert board.reason == (NO_RATINGS + "D lost every vote it was in: its rating is "
                            "unbounded until it wins or ties one.")
    assert why_unrated(many("C", "A", 2, 0) + many("A", "B", 1, 1)) == (
        NO_RATINGS + "C won every vote it was in: its rating is unbounded until it loses or "
        "ties one.")


def test_a_group_that_won_every_vote_against_the_rest_is_named() -> None:
    reason = why_unrated(many("A", "B", 1, 1) + many("A", "C", 2, 0) + many("B", "C", 1, 0)
                         + many("C", "D", 1, 0))
    assert reason == (NO_RATINGS + "A and B won every vote against the other choices: their "
                      "ratings are unbounded until one of them loses or ties against another. "
                      "D lost every vote it was in: its rating is unbounded until it wins or "
                      "ties one.")
    assert why_unrated(many("A", "B", 1, 1) + many("A", "C", 2, 0)) == (
        NO_RATINGS + "C lost every vote it was in: its rating is unbounded until it wins or "
        "ties one.")


def test_unlinked_groups_are_named() -> None:
    reason = why_unrated(many("A", "B", 1, 1) + many("C", "D", 1, 1))
    assert reason is not None and reason.startswith(
        NO_RATINGS + "No vote links these groups of choices: A and B; C and D.")
    assert fit(many("A", "B", 1, 1) + many("C", "D", 1, 1)) is None


def test_the_12_votes_have_ratings_but_insufficient_votes_for_intervals() -> None:
    """FastChat's intervals here reach 2649 and -978: the resamples where C never wins.
    Ours say "insufficient votes"."""
    board = leaderboard(votes())
    assert board.separable > max_separable(1000)
    assert {row.choice: row.rating for row in board.rows} == pytest.approx(MLE, abs=0.01)
    assert all(row.ci_low is None and row.ci_high is None and row.rank is None
               for row in board.rows)
    assert board.reason is not None
    assert board.reason.startswith(f"Insufficient votes for the intervals: in "
                                   f"{board.separable} of 1000 resamples")


# -- the board -------------------------------------------------------------------------------
def test_the_rank_counts_the_choices_wholly_above() -> None:
    """FastChat's rule: 1 + the number whose lower bound is above this one's upper bound."""
    battles = (many("A", "B", 50, 50) + many("A", "C", 90, 10) + many("B", "C", 90, 10)
               + many("C", "D", 90, 10) + many("B", "D", 95, 5))
    board = leaderboard(battles, rounds=200)
    assert [row.choice for row in board.rows] == ["A", "B", "C", "D"]
    assert [row.rank for row in board.rows] == [1, 1, 3, 4]
    for row in board.rows:
        assert row.ci_low is not None and row.ci_high is not None and row.rating is not None
        assert row.ci_low < row.rating < row.ci_high
        assert row.rank == 1 + sum(1 for other in board.rows
                                   if other.ci_low is not None and row.ci_high is not None
                                   and other.ci_low > row.ci_high)
    assert board.reason is None


def test_the_pairs_and_tallies_count_the_votes() -> None:
    battles = [*votes(), Battle("B", "A", "a"), Battle("C", "A", "bothbad")]
    board = leaderboard(battles, rounds=20)
    assert board.rows[0].choice == "A"
    pairs = {(pair.a, pair.b): pair for pair in board.pairs}
    assert pairs["A", "B"] == Pair("A", "B", a_wins=3, b_wins=2, ties=1, both_bad=0)
    assert pairs["A", "C"] == Pair("A", "C", a_wins=2, b_wins=1, ties=0, both_bad=1)
    assert pairs["A", "C"].total == 4
    assert sum(pair.total for pair in board.pairs) == len(battles)
    tally = {row.choice: (row.votes, row.wins, row.losses, row.ties) for row in board.rows}
    assert tally["A"] == (10, 5, 3, 2)
    assert tally["C"] == (7, 2, 4, 1)
    assert sum(row.votes for row in board.rows) == 2 * len(battles)


def test_no_votes_no_board() -> None:
    assert fit([]) == {}
    board = leaderboard([])
    assert (board.rows, board.pairs, board.reason, board.separable) == ((), (), None, 0)
    assert to_json(board) and to_csv(board).splitlines() == [",".join(lb.CSV_HEADER)]


def test_a_vote_is_between_two_choices_with_a_known_outcome() -> None:
    with pytest.raises(ValueError, match="two different choices"):
        Battle("A", "A", "a")
    with pytest.raises(ValueError, match="outcome"):
        Battle("A", "B", "draw")  # type: ignore[arg-type]


# -- exports ---------------------------------------------------------------------------------
def test_the_csv_is_safe_to_open_in_a_spreadsheet() -> None:
    evil, plus = '=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0"
    board = leaderboard(many(evil, plus, 3, 1) + many(plus, "C", 2, 1) + many(evil, "C", 1, 1),
                        rounds=50)
    rows = list(csv.reader(io.StringIO(to_csv(board))))
    assert rows[0] == list(lb.CSV_HEADER)
    choices = {row[1] for row in rows[1:]}
    assert choices == {"'" + evil, "'" + plus, "C"}
    top = rows[1]
    assert float(top[2]) == pytest.approx(board.rows[0].rating)
    assert top[3] == "" and top[0] == ""  # insufficient votes: an empty cell


def test_the_json_holds_the_whole_board() -> None:
    board = leaderboard(votes(10), rounds=100, seed=3)
    data = json.loads(to_json(board))
    assert data["method"] == board.method
    assert "100 bootstrap resamples" in data["method"] and "seed 3" in data["method"]
    assert (data["rounds"], data["seed"], data["separable_resamples"]) == (100, 3, 0)
    assert [tuple(row.values()) for row in data["rows"]] == [
        (row.rank, row.choice, row.rating, row.ci_low, row.ci_high, row.votes, row.wins,
         row.losses, row.ties) for row in board.rows]
    assert [Pair(p["a"], p["b"], p["a_wins"], p["b_wins"], p["ties"], p["both_bad"])
            for p in data["pairs"]] == list(board.pairs)
    assert [p["total"] for p in data["pairs"]] == [50, 30, 30]


def test_the_module_is_ui_free() -> None:
    tree = ast.parse(Path(lb.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert "streamlit" not in imported
