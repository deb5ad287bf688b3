"""Prompt arithmetic the editors show."""

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
