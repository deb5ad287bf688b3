"""A leaderboard of backend-and-model choices from blind pairwise votes, computed as LMArena
computes it, so that our figures mean what theirs mean.

The source copied is lm-sys/FastChat (HEAD ``0e6d3e4``), ``fastchat/serve/monitor/``:

- ``rating_systems.py`` ``preprocess_for_bt``: the votes pooled into counts of unique
  (a, b, outcome) triples, models numbered in order of first appearance among the ``a``
  labels, then the ``b`` labels; a win for ``a`` is 1, for ``b`` 0, a tie of either kind 0.5
  (half a win and half a loss in the log-loss, ``bt_loss_and_grad``).
- ``fit_bt``/``compute_bt``: the unregularised Bradley–Terry maximum-likelihood fit with
  logit = ln(10)·(r_a − r_b), started from zeros; ``scale_and_offset``: rating = 400·r + 1000.
  FastChat minimises with scipy's L-BFGS-B; we do not ship scipy, so :func:`fit` reaches the
  same unique optimum by damped Newton steps with numpy. From zeros every gradient step sums
  to zero, so FastChat's ratings average exactly 1000; ours are centred to the same.
  (FastChat re-anchors mixtral-8x7b-instruct-v0.1 at 1114; none of our choices is that, so
  that step is left out.)
- ``compute_bootstrap_bt``: the 95% interval is a bootstrap, ``rounds`` resamples of the pooled
  counts, ``np.random.default_rng(seed=0).multinomial(n=len(battles), pvals=counts/total)``,
  each refitted (FastChat divides the draws by n, which moves no optimum), and the 2.5% and
  97.5% quantiles per model (``elo_analysis.py``; numpy's and pandas' linear interpolation).
  Not arena-rank's default sandwich interval, and not its seed 42 bootstrap.
- ``elo_analysis.py``: rank = 1 + the number of models whose lower bound is above this model's
  upper bound. The rating shown is the full-data fit, not the bootstrap median.

Where FastChat has no answer we say so rather than print a number. The maximum-likelihood
ratings exist only when no group of choices won every vote against the rest, or never met it
(Zermelo; Ford's condition: the "beats" graph, a tie or all-bad vote linking both ways, is
strongly connected). Otherwise L-BFGS stops wherever its 100 steps end (the 12-vote example's
interval reaches 2649); :func:`fit` checks the condition first and gives ``None``, and the
leaderboard says why in plain words. A resample without a finite fit counts as unbounded at
both ends of every model's interval (we cannot know which way its ratings ran off); so an
interval is given only while those resamples stay inside the 2.5% tails (at most 24 of 1000),
else "insufficient votes". The board keeps how many there were (``separable``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

from studio.records.spreadsheet import csv_text

Outcome = Literal["a", "b", "tie", "bothbad"]
"""How a vote went: ``a`` or ``b`` won, a tie, or both bad (a tie too: both count half)."""
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

SCALE = 400.0  # rating points per unit of FastChat's natural scale: 400 points = 10:1 odds
BASE = 10.0
INIT_RATING = 1000.0  # the mean rating
ALPHA = math.log(BASE)  # logit = ALPHA · (r_a − r_b)
ROUNDS = 1000
SEED = 0
QUANTILES = (0.025, 0.975)

# Newton's method: a step this small (in FastChat's units; ×400 for rating points) is the end.
_STEP_TOLERANCE = 1e-10
_MAX_STEPS = 200

# The ids FastChat's preprocess_for_bt gives outcomes, which order its unique triples.
_OUTCOME_ID: dict[Outcome, int] = {"a": 2, "tie": 1, "bothbad": 1, "b": 0}

METHOD = ("Bradley–Terry maximum-likelihood ratings on the Elo scale (400 points = 10:1 odds, "
          "mean 1000); a tie or an all-bad vote counts as half a win and half a loss; 95% "
          "intervals from {rounds} bootstrap resamples of the votes (seed {seed}); rank = 1 + "
          "the number of choices whose interval lies wholly above. As LMArena (FastChat) "
          "computes it.")


@dataclass(frozen=True)
class Battle:
    """One vote between two choices (labels such as "Ollama · qwen3:8b")."""

    a: str
    b: str
    outcome: Outcome

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"a vote's outcome is one of {OUTCOMES}, not {self.outcome!r}")
        if self.a == self.b:
            raise ValueError(f"a vote compares two different choices, not {self.a!r} twice")


@dataclass(frozen=True)
class Pooled:
    """The votes as FastChat's ``preprocess_for_bt`` holds them: each unique (a, b, outcome)
    triple once, with its count, sorted by (a's number, b's number, outcome id)."""

    models: tuple[str, ...]
    matchups: np.ndarray  # (k, 2) model numbers
    outcomes: np.ndarray  # (k,) 1.0 a won, 0.5 a tie, 0.0 b won
    counts: np.ndarray  # (k,) how many votes went so


def pool(battles: Sequence[Battle]) -> Pooled:
    """FastChat's pooling: models numbered in order of first appearance in the ``a`` column,
    then the ``b`` column (``pd.factorize``), triples in ``np.unique``'s order. The order
    matters: the bootstrap's multinomial draws follow it."""
    models = list(dict.fromkeys([battle.a for battle in battles] +
                                [battle.b for battle in battles]))
    number = {model: index for index, model in enumerate(models)}
    schedule = np.array([(number[battle.a], number[battle.b], _OUTCOME_ID[battle.outcome])
                         for battle in battles], dtype=np.int64).reshape(-1, 3)
    triples, counts = np.unique(schedule, return_counts=True, axis=0)
    return Pooled(tuple(models), triples[:, :2], triples[:, 2].astype(np.float64) / 2.0,
                  counts.astype(np.float64))


def _probability(logits: np.ndarray) -> np.ndarray:
    """The logistic function without overflow (scipy's ``expit``)."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * logits)))


def loss_and_grad(ratings: np.ndarray, pooled: Pooled, counts: np.ndarray | None = None
                  ) -> tuple[float, np.ndarray]:
    """FastChat's ``bt_loss_and_grad``: the negative log-likelihood of the counts (``counts``
    for a resample, else the votes') and its gradient, in FastChat's units."""
    weights = pooled.counts if counts is None else counts
    logits = ALPHA * (ratings[pooled.matchups[:, 0]] - ratings[pooled.matchups[:, 1]])
    y = pooled.outcomes
    # log p = -log(1 + e^-z), log(1 - p) = -log(1 + e^z), stable for any z
    loss = float(((y * np.logaddexp(0.0, -logits) + (1.0 - y) * np.logaddexp(0.0, logits))
                  * weights).sum())
    per_triple = -ALPHA * (y - _probability(logits)) * weights
    grad = np.zeros_like(ratings)
    np.add.at(grad, pooled.matchups[:, 0], per_triple)
    np.add.at(grad, pooled.matchups[:, 1], -per_triple)
    return loss, grad


def _hessian(ratings: np.ndarray, pooled: Pooled, weights: np.ndarray) -> np.ndarray:
    """The loss's Hessian: a weighted graph Laplacian (its null space is the common shift)."""
    a, b = pooled.matchups[:, 0], pooled.matchups[:, 1]
    p = _probability(ALPHA * (ratings[a] - ratings[b]))
    w = ALPHA * ALPHA * weights * p * (1.0 - p)
    hessian = np.zeros((len(ratings), len(ratings)))
    np.add.at(hessian, (a, a), w)
    np.add.at(hessian, (b, b), w)
    np.add.at(hessian, (a, b), -w)
    np.add.at(hessian, (b, a), -w)
    return hessian


def _beats(pooled: Pooled, weights: np.ndarray) -> list[set[int]]:
    """The directed "beats" graph: model i -> j when i won or tied a vote against j."""
    edges: list[set[int]] = [set() for _ in pooled.models]
    for (a, b), outcome, weight in zip(pooled.matchups.tolist(), pooled.outcomes.tolist(),
                                       weights.tolist(), strict=True):
        if weight <= 0:
            continue
        if outcome > 0:  # a won or tied
            edges[a].add(b)
        if outcome < 1:  # b won or tied
            edges[b].add(a)
    return edges


def _reach(edges: list[set[int]], start: int) -> set[int]:
    seen = {start}
    todo = [start]
    while todo:
        for nxt in edges[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def _finite_mle_exists(pooled: Pooled, weights: np.ndarray) -> bool:
    """Ford's condition: the beats graph is strongly connected (every model reaches every
    other and is reached by it). Then, and only then, the likelihood has a finite maximum."""
    n = len(pooled.models)
    if n <= 1:
        return True
    edges = _beats(pooled, weights)
    backwards: list[set[int]] = [set() for _ in range(n)]
    for source, targets in enumerate(edges):
        for target in targets:
            backwards[target].add(source)
    return len(_reach(edges, 0)) == n and len(_reach(backwards, 0)) == n


def _newton(pooled: Pooled, weights: np.ndarray, start: np.ndarray) -> np.ndarray:
    """The maximum-likelihood ratings (mean 0) by Newton's method with a backtracking line
    search. Call it only where :func:`_finite_mle_exists`: the loss is then strictly convex
    across the ratings' differences, so this converges to the one optimum."""
    n = len(start)
    ratings = start - start.mean()
    loss, grad = loss_and_grad(ratings, pooled, weights)
    shift = np.ones((n, n))  # pins the common shift: the step keeps the mean (1ᵀ grad = 0)
    for _ in range(_MAX_STEPS):
        step = np.linalg.solve(_hessian(ratings, pooled, weights) + shift, -grad)
        size = 1.0
        while True:
            trial = ratings + size * step
            trial_loss, trial_grad = loss_and_grad(trial, pooled, weights)
            if trial_loss <= loss + 1e-4 * size * float(grad @ step) or size < 1e-8:
                break
            size /= 2
        ratings, loss, grad = trial, trial_loss, trial_grad
        if float(np.max(np.abs(size * step))) < _STEP_TOLERANCE:
            break
    return ratings - ratings.mean()


def _fit_pooled(pooled: Pooled, weights: np.ndarray, start: np.ndarray | None = None
                ) -> np.ndarray | None:
    """The ratings in FastChat's units, or None when the maximum does not exist."""
    if not _finite_mle_exists(pooled, weights):
        return None
    if not pooled.models:
        return np.zeros(0)
    return _newton(pooled, weights, np.zeros(len(pooled.models)) if start is None else start)


def _to_elo(ratings: np.ndarray) -> np.ndarray:
    """FastChat's ``scale_and_offset`` (without its mixtral anchor)."""
    return ratings * SCALE + INIT_RATING


def fit(battles: Sequence[Battle]) -> dict[str, float] | None:
    """The point ratings: the full-data maximum-likelihood fit (FastChat's ``compute_bt``).
    None when it does not exist: some group of choices won (or lost) every vote against the
    rest, so its rating is unbounded. No votes, no ratings: ``{}``."""
    pooled = pool(battles)
    ratings = _fit_pooled(pooled, pooled.counts)
    if ratings is None:
        return None
    return dict(zip(pooled.models, _to_elo(ratings).tolist(), strict=True))


def resample_ratings(battles: Sequence[Battle], rounds: int = ROUNDS, seed: int = SEED
                     ) -> tuple[tuple[str, ...], np.ndarray]:
    """The models and each bootstrap resample's ratings, one row per resample (FastChat's
    ``compute_bootstrap_bt`` draws, in its order); a row of NaN where a resample has no finite
    fit."""
    if rounds < 1:
        raise ValueError(f"the bootstrap needs at least one round, not {rounds}")
    pooled = pool(battles)
    n = len(pooled.models)
    if not battles:
        return pooled.models, np.zeros((rounds, 0))
    rng = np.random.default_rng(seed=seed)
    draws = rng.multinomial(n=len(battles), pvals=pooled.counts / pooled.counts.sum(),
                            size=rounds)
    results = np.full((rounds, n), np.nan)
    start = _fit_pooled(pooled, pooled.counts)
    if start is None:  # every resample's votes are a subset of these: none has a fit either
        return pooled.models, results
    for row, counts in enumerate(draws.astype(np.float64)):
        ratings = _fit_pooled(pooled, counts, start)
        if ratings is not None:
            results[row] = _to_elo(ratings)
    return pooled.models, results


@dataclass(frozen=True)
class Bootstrap:
    """The 95% intervals of a bootstrap and how many of its resamples had no finite fit."""

    rounds: int
    seed: int
    separable: int  # resamples in which some group won every vote against the rest
    intervals: dict[str, tuple[float, float] | None]  # None: insufficient votes


def max_separable(rounds: int) -> int:
    """The most resamples without a finite fit that keep the interval finite: with them at
    -inf (+inf) the 2.5% (97.5%) quantile, linearly interpolated over ``rounds`` values, must
    still fall between finite ones (24 of 1000)."""
    low = QUANTILES[0] * (rounds - 1)
    high = QUANTILES[1] * (rounds - 1)
    return max(-1, min(math.floor(low), rounds - 1 - math.ceil(high)))


def _interval(values: np.ndarray, separable: int) -> tuple[float, float] | None:
    """The 2.5% and 97.5% quantiles of one model's resampled ratings, the ``separable``
    resamples counted as -inf for the lower bound and +inf for the upper one."""
    if separable > max_separable(len(values)):
        return None
    finite = values[np.isfinite(values)]
    low = np.quantile(np.concatenate([np.full(separable, -np.inf), finite]), QUANTILES[0])
    high = np.quantile(np.concatenate([finite, np.full(separable, np.inf)]), QUANTILES[1])
    return float(low), float(high)


def bootstrap(battles: Sequence[Battle], rounds: int = ROUNDS, seed: int = SEED) -> Bootstrap:
    """FastChat's bootstrap intervals (``compute_bootstrap_bt``: multinomial resampling of the
    pooled counts, ``default_rng(seed)``, each resample refitted; 2.5% and 97.5% quantiles).
    A resample with no finite fit counts against both bounds (see the module's docstring)."""
    models, results = resample_ratings(battles, rounds, seed)
    separable = int(np.isnan(results).any(axis=1).sum())
    return Bootstrap(rounds, seed, separable,
                     {model: _interval(results[:, index], separable)
                      for index, model in enumerate(models)})


@dataclass(frozen=True)
class Row:
    """One choice on the leaderboard; None is "insufficient votes": for the rank and the
    interval when the bootstrap cannot bound them, for the rating too when the votes have no
    finite fit. ``ties`` counts both kinds (a tie and all bad)."""

    rank: int | None
    choice: str
    rating: float | None
    ci_low: float | None
    ci_high: float | None
    votes: int
    wins: int
    losses: int
    ties: int


@dataclass(frozen=True)
class Pair:
    """The votes behind one pair of choices, whichever side each vote showed them on; ``a`` is
    the one placed higher on the leaderboard."""

    a: str
    b: str
    a_wins: int
    b_wins: int
    ties: int
    both_bad: int

    @property
    def total(self) -> int:
        return self.a_wins + self.b_wins + self.ties + self.both_bad


@dataclass(frozen=True)
class Leaderboard:
    """The rows in leaderboard order, the pairs' votes, and how the intervals were made;
    ``reason``: why ratings or intervals are missing, in plain words (None when none is)."""

    rows: tuple[Row, ...]
    pairs: tuple[Pair, ...]
    rounds: int
    seed: int
    separable: int
    reason: str | None

    @property
    def method(self) -> str:
        return METHOD.format(rounds=self.rounds, seed=self.seed)


def _names(models: Iterable[str]) -> str:
    items = sorted(models)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# One fit rates every choice at once: while one rating is unbounded, none is given.
NO_RATINGS = "No choice has a rating yet, since the ratings are fitted together: "


def why_unrated(battles: Sequence[Battle]) -> str | None:
    """Why the votes have no finite ratings, in plain words; None when they have them."""
    pooled = pool(battles)
    if _finite_mle_exists(pooled, pooled.counts):
        return None
    n = len(pooled.models)
    edges = _beats(pooled, pooled.counts)
    linked = [edges[i] | {j for j in range(n) if i in edges[j]} for i in range(n)]
    groups: list[set[int]] = []
    for model in range(n):
        if not any(model in group for group in groups):
            groups.append(_reach(linked, model))
    if len(groups) > 1:
        listed = "; ".join(_names(pooled.models[i] for i in group) for group in groups)
        return (f"{NO_RATINGS}No vote links these groups of choices: {listed}. Their ratings "
                "cannot be compared until a vote pairs choices from different groups.")
    reach = [_reach(edges, model) for model in range(n)]
    components: list[set[int]] = []
    for model in range(n):
        if not any(model in component for component in components):
            components.append({other for other in reach[model] if model in reach[other]})
    if len(components) == 2:  # one side won every vote against the other: name the smaller
        components = [min(components, key=len)]
    reasons: list[str] = []
    for component in components:
        beaten_by_others = any(component & edges[other] for other in range(n)
                               if other not in component)
        beat_others = any(edges[member] - component for member in component)
        if beaten_by_others and beat_others:
            continue
        names = _names(pooled.models[i] for i in component)
        if len(component) == 1:
            sentence = (f"{names} won every vote it was in: its rating is unbounded until it "
                        "loses or ties one." if beat_others else
                        f"{names} lost every vote it was in: its rating is unbounded until it "
                        "wins or ties one.")
        else:
            sentence = (f"{names} won every vote against the other choices: their ratings are "
                        "unbounded until one of them loses or ties against another."
                        if beat_others else
                        f"{names} lost every vote against the other choices: their ratings are "
                        "unbounded until one of them wins or ties against another.")
        reasons.append(sentence)
    return NO_RATINGS + " ".join(reasons)


def _counts(battles: Sequence[Battle]) -> dict[str, tuple[int, int, int]]:
    """Each choice's wins, losses and ties (both kinds)."""
    tally: dict[str, list[int]] = {}
    for battle in battles:
        for me, won, lost in ((battle.a, "a", "b"), (battle.b, "b", "a")):
            counts = tally.setdefault(me, [0, 0, 0])
            column = 0 if battle.outcome == won else 1 if battle.outcome == lost else 2
            counts[column] += 1
    return {model: (wins, losses, ties) for model, (wins, losses, ties) in tally.items()}


def _pairs(battles: Sequence[Battle], order: Sequence[str]) -> tuple[Pair, ...]:
    place = {model: index for index, model in enumerate(order)}
    tally: dict[tuple[str, str], list[int]] = {}
    for battle in battles:
        first, second = sorted((battle.a, battle.b), key=place.__getitem__)
        counts = tally.setdefault((first, second), [0, 0, 0, 0])
        if battle.outcome in ("a", "b"):
            winner = battle.a if battle.outcome == "a" else battle.b
            counts[0 if winner == first else 1] += 1
        else:
            counts[2 if battle.outcome == "tie" else 3] += 1
    return tuple(Pair(a, b, *counts) for (a, b), counts
                 in sorted(tally.items(), key=lambda item: (place[item[0][0]],
                                                            place[item[0][1]])))


def leaderboard(battles: Sequence[Battle], rounds: int = ROUNDS, seed: int = SEED
                ) -> Leaderboard:
    """The leaderboard of the votes: point ratings, bootstrap intervals, ranks by the
    intervals (FastChat's rule), each choice's tally and each pair's votes."""
    ratings = fit(battles)
    boot = bootstrap(battles, rounds, seed)
    counts = _counts(battles)
    intervals = boot.intervals
    models = list(counts)

    def rank(model: str) -> int | None:
        mine = intervals[model]
        if mine is None:
            return None
        return 1 + sum(1 for other in models if other != model
                       and (theirs := intervals[other]) is not None and theirs[0] > mine[1])

    def order(model: str) -> tuple[bool, float, str]:
        rating = None if ratings is None else ratings[model]
        return rating is None, -(rating or 0.0), model

    rows = []
    for model in sorted(models, key=order):
        interval = intervals[model]
        wins, losses, ties = counts[model]
        rows.append(Row(rank(model), model, None if ratings is None else ratings[model],
                        None if interval is None else interval[0],
                        None if interval is None else interval[1],
                        wins + losses + ties, wins, losses, ties))
    reason = why_unrated(battles)
    if reason is None and models and boot.separable > max_separable(rounds):
        reason = (f"Insufficient votes for the intervals: in {boot.separable} of {rounds} "
                  "resamples of the votes some choices won or lost every vote against the "
                  "rest, so their ratings were unbounded; a 95% interval allows at most "
                  f"{max_separable(rounds)} such resamples.")
    return Leaderboard(tuple(rows), _pairs(battles, [row.choice for row in rows]), rounds,
                       seed, boot.separable, reason)


CSV_HEADER = ("rank", "choice", "rating", "ci_low", "ci_high", "votes", "wins", "losses",
              "ties")


def to_csv(board: Leaderboard) -> str:
    """The rows as CSV, safe to open in a spreadsheet (a choice's label is text a user
    typed); an empty cell for "insufficient votes"."""
    return csv_text(CSV_HEADER, ([row.rank, row.choice, row.rating, row.ci_low, row.ci_high,
                                  row.votes, row.wins, row.losses, row.ties]
                                 for row in board.rows))


def to_json(board: Leaderboard) -> str:
    """The whole leaderboard as JSON: method, rounds, seed, the rows (ratings and intervals,
    null for "insufficient votes") and the pairs' votes."""
    return json.dumps({
        "method": board.method,
        "rounds": board.rounds,
        "seed": board.seed,
        "separable_resamples": board.separable,
        "reason": board.reason,
        "rows": [dict(zip(CSV_HEADER, (row.rank, row.choice, row.rating, row.ci_low,
                                       row.ci_high, row.votes, row.wins, row.losses,
                                       row.ties), strict=True)) for row in board.rows],
        "pairs": [{"a": pair.a, "b": pair.b, "a_wins": pair.a_wins, "b_wins": pair.b_wins,
                   "ties": pair.ties, "both_bad": pair.both_bad, "total": pair.total}
                  for pair in board.pairs],
    }, indent=2, allow_nan=False, ensure_ascii=False)
