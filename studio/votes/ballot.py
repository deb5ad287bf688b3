"""A blind vote: the answers shown as A, B, C, D in a random order, the analyst's verdict, and
the pairwise battles it stands for on the leaderboard.

What is voted on (``Ballot``) keeps the pairing as it was shown (a letter per choice), the
prompt and the location, so that a vote can be read back in History and filtered on the
leaderboard. A choice is its backend and model (``Contender.label``): the leaderboard ranks
those, whatever server or settings served them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from studio.votes.leaderboard import Battle

LETTERS = "ABCD"
TIE, BOTH_BAD = "tie", "bothbad"
SOURCES = ("compare", "evaluation")  # where a vote was cast: Compare's panes, Evaluate's cells


def shuffled(count: int) -> tuple[int, ...]:
    """A random order of ``count`` items: letter i shows item ``order[i]``. Drawn from the
    system's random source: the order must not be guessable from earlier ones."""
    order = list(range(count))
    secrets.SystemRandom().shuffle(order)
    return tuple(order)


def pick_pair(count: int) -> tuple[int, ...]:
    """Two of ``count`` items at random, in a random order (an evaluation's pairwise vote)."""
    if count < 2:
        raise ValueError("a vote needs at least two answers")
    return tuple(secrets.SystemRandom().sample(range(count), 2))


@dataclass(frozen=True)
class Contender:
    """One answer as it was voted on: its letter, and who wrote it (hidden until the vote)."""

    letter: str
    label: str  # 'Ollama · qwen3:8b': the leaderboard's choice
    host: str = ""  # without credentials (backends.http.redact)
    run_id: int | None = None  # its run in the history


@dataclass(frozen=True)
class Ballot:
    """What one vote is about: the answers by letter, and the prompt they answered."""

    source: str  # one of SOURCES
    contenders: tuple[Contender, ...]
    system: str = ""
    prompt: str = ""
    preset: str = ""
    location: str = ""  # the location row's name ('' for a custom prompt)
    group_id: int | None = None  # the comparison's or evaluation's group

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"a vote's source is one of {SOURCES}, not {self.source!r}")
        if not 2 <= len(self.contenders) <= len(LETTERS):
            raise ValueError(f"a vote is between 2 and {len(LETTERS)} answers")

    @property
    def letters(self) -> str:
        return "".join(contender.letter for contender in self.contenders)

    def winners(self) -> tuple[str, ...]:
        """Every verdict this ballot takes: a letter, a tie, or all bad."""
        return (*self.letters, TIE, BOTH_BAD)

    def verdict_label(self, winner: str) -> str:
        """The button's words: 'A is better' ('A is best' among more than two), 'Tie',
        'All bad' ('Both bad' for two)."""
        if winner == TIE:
            return "Tie"
        if winner == BOTH_BAD:
            return "Both bad" if len(self.contenders) == 2 else "All bad"
        return f"{winner} is {'better' if len(self.contenders) == 2 else 'best'}"


@dataclass(frozen=True)
class Vote:
    """A ballot, the verdict on it, and who gave it (per user on a shared server)."""

    ballot: Ballot
    winner: str  # a letter of the ballot, TIE or BOTH_BAD
    reason: str = ""
    user: str = ""
    id: int = 0
    created_at: str = ""

    def __post_init__(self) -> None:
        if self.winner not in self.ballot.winners():
            raise ValueError(f"the verdict is one of {self.ballot.winners()}, "
                             f"not {self.winner!r}")

    @property
    def verdict(self) -> str:
        """'A is better', with the winner's name once known: 'A is better (Ollama · x)'."""
        label = self.ballot.verdict_label(self.winner)
        named = {c.letter: c.label for c in self.ballot.contenders}.get(self.winner)
        return f"{label} ({named})" if named else label

    def battles(self) -> list[Battle]:
        """The pairwise battles the vote stands for, as LMArena counts them: between two
        answers the vote itself; among more, the best beat each other one (nothing is said
        between the others), a tie or 'all bad' ties every pair. The same choice twice (the
        same model in two panes) plays no battle against itself."""
        contenders = self.ballot.contenders
        battles = []
        for i, first in enumerate(contenders):
            for second in contenders[i + 1:]:
                if first.label == second.label:
                    continue
                if self.winner == TIE:
                    battles.append(Battle(first.label, second.label, "tie"))
                elif self.winner == BOTH_BAD:
                    battles.append(Battle(first.label, second.label, "bothbad"))
                elif self.winner == first.letter:
                    battles.append(Battle(first.label, second.label, "a"))
                elif self.winner == second.letter:
                    battles.append(Battle(first.label, second.label, "b"))
        return battles

    def pairing_json(self) -> str:
        """The pairing as the store keeps it: each letter's choice, host and run."""
        return json.dumps([asdict(contender) for contender in self.ballot.contenders])

    def to_dict(self) -> dict[str, Any]:
        """The vote as an export shows it."""
        ballot = self.ballot
        return {"id": self.id, "created_at": self.created_at, "user": self.user,
                "source": ballot.source, "group_id": ballot.group_id, "preset": ballot.preset,
                "location": ballot.location, "system_prompt": ballot.system,
                "user_prompt": ballot.prompt,
                "pairing": [asdict(contender) for contender in ballot.contenders],
                "winner": self.winner, "verdict": self.verdict, "reason": self.reason}


def contenders_from_json(text: str) -> tuple[Contender, ...]:
    """The pairing as ``Vote.pairing_json`` wrote it."""
    return tuple(Contender(**item) for item in json.loads(text))
