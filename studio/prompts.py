"""Prompt arithmetic the editors show, and what makes a prompt unfit to send."""

from __future__ import annotations

from dataclasses import dataclass

CHARS_PER_TOKEN = 4  # English prose with Llama-family tokenizers: a fair estimate


@dataclass(frozen=True)
class PromptSize:
    characters: int
    tokens: int


def prompt_size(system: str, user: str) -> PromptSize:
    """Characters of both prompts, and an estimate of their tokens."""
    characters = len(system) + len(user)
    return PromptSize(characters, -(-characters // CHARS_PER_TOKEN))


def prompt_problem(user: str) -> str | None:
    """Why this user prompt must not be sent (None when it may): an empty question costs a
    model call and records a run that answers nothing."""
    if not user.strip():
        return ("The user prompt is empty: pick a location preset or type a question. "
                "Nothing was sent.")
    return None
