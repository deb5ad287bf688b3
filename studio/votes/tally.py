"""Which votes count on a leaderboard (the filters), the battles they stand for, and the
votes as History and the leaderboard's pair details list them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from studio.records.render import stamp
from studio.records.spreadsheet import csv_text
from studio.votes.ballot import Vote
from studio.votes.leaderboard import Battle


def matching(votes: Iterable[Vote], location: str | None = None,
             system: str | None = None) -> list[Vote]:
    """The votes on ``location`` and ``system`` prompt (None: any)."""
    return [vote for vote in votes
            if (location is None or vote.ballot.location == location)
            and (system is None or vote.ballot.system == system)]


def battles(votes: Iterable[Vote]) -> list[Battle]:
    """Every vote's pairwise battles (``Vote.battles``), in vote order."""
    return [battle for vote in votes for battle in vote.battles()]


def locations(votes: Iterable[Vote]) -> list[str]:
    """The locations voted on, sorted ('' for a custom prompt is left out)."""
    return sorted({vote.ballot.location for vote in votes if vote.ballot.location})


def fingerprint(text: str) -> str:
    """A short stable name for a text not to be shown (another user's system prompt)."""
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def system_prompt_names(votes: Iterable[Vote], presets: Mapping[str, str],
                        readable: Iterable[str] = ()) -> dict[str, str]:
    """The system prompts voted with, each named for the filter: a preset by its name, one
    in ``readable`` (the viewer's own) by its start, any other by a fingerprint only: on a
    shared server another user's prompt is theirs."""
    by_text = {text: name for name, text in presets.items()}
    own = set(readable)
    names: dict[str, str] = {}
    for vote in votes:
        text = vote.ballot.system
        if text in names:
            continue
        if text in by_text:
            names[text] = f"Preset: {by_text[text]}"
        elif text in own:
            start = " ".join(text.split())[:50]
            names[text] = f"Custom: {start}{'…' if len(text) > 50 else ''} ({fingerprint(text)})"
        else:
            names[text] = f"Another user's custom prompt ({fingerprint(text)})"
    return names


def between(votes: Iterable[Vote], first: str, second: str) -> list[Vote]:
    """The votes with a battle between choices ``first`` and ``second`` (either order)."""
    pair = {first, second}
    return [vote for vote in votes if any({b.a, b.b} == pair for b in vote.battles())]


def vote_rows(votes: Sequence[Vote], show_user: bool,
              show_reason: Mapping[int, bool] | None = None) -> list[dict[str, Any]]:
    """A table row per vote, newest first: when, who (``show_user``), where it was cast, the
    location, the pairing as shown, the verdict and the reason (``show_reason[id]`` False:
    another user's, not shown)."""
    rows = []
    for vote in sorted(votes, key=lambda v: v.id, reverse=True):
        ballot = vote.ballot
        rows.append({
            "vote": vote.id, "when (UTC)": stamp(vote.created_at),
            **({"user": vote.user or "–"} if show_user else {}),
            "from": ballot.source + (f" #{ballot.group_id}" if ballot.group_id else ""),
            "location": ballot.location or "custom prompt",
            "pairing": " · ".join(f"{c.letter}: {c.label}" for c in ballot.contenders),
            "verdict": vote.verdict,
            "reason": vote.reason if (show_reason or {}).get(vote.id, True) else "(hidden)",
            "runs": ", ".join(f"#{c.run_id}" for c in ballot.contenders if c.run_id) or "–",
        })
    return rows


def votes_csv(votes: Sequence[Vote]) -> str:
    """Every vote a line, its prompts included; formula-safe (a user's reason or model name
    starting with '=' stays text)."""
    rows = [vote.to_dict() for vote in votes]
    header = [key for key in rows[0] if key != "pairing"] + ["pairing"] if rows else ["id"]
    return csv_text(header, ([*(row[key] for key in header[:-1]),
                              " · ".join(f"{c['letter']}: {c['label']}" for c in row["pairing"])]
                             for row in rows))


def votes_json(votes: Sequence[Vote]) -> str:
    """Every vote with its prompts, pairing (letters, choices, hosts without credentials,
    runs), verdict and reason."""
    return json.dumps([vote.to_dict() for vote in votes], indent=2)


def run_votes(votes: Iterable[Vote], run_id: int) -> list[str]:
    """What the blind votes said of one run: 'Blind vote #3 (2026-12-05 05:01 UTC): this run
    was B; the verdict: A is better (Ollama · x).'"""
    lines = []
    for vote in votes:
        letter = next((c.letter for c in vote.ballot.contenders if c.run_id == run_id), None)
        if letter is not None:
            lines.append(f"Blind vote #{vote.id} ({stamp(vote.created_at)} UTC): "
                         f"this run was {letter}; the verdict: {vote.verdict}."
                         + (f" Reason: {vote.reason}" if vote.reason else ""))
    return lines
