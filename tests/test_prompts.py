"""studio/runs/prompt_check.py: what makes a prompt unfit to send (empty, or over the size cap)."""

from __future__ import annotations

from studio.runs.prompt_check import prompt_problem


def test_an_empty_question_is_not_sent() -> None:
    problem = prompt_problem("You are an analyst.", "  \n", max_chars=200_000)
    assert problem is not None and "The user prompt is empty" in problem


def test_a_prompt_over_the_cap_says_its_size_and_the_cap() -> None:
    assert prompt_problem("s" * 1_000, "u" * 199_000, max_chars=200_000) is None  # at the cap
    problem = prompt_problem("s" * 1_000, "u" * 199_001, max_chars=200_000)
    assert problem is not None
    assert "200,001 characters (system and user prompt together)" in problem
    assert "at most 200,000" in problem and "app.max_prompt_chars" in problem
    assert "Nothing was sent" in problem


def test_the_system_prompt_counts_too() -> None:
    problem = prompt_problem("s" * 5_000, "How many panels?", max_chars=5_000)
    assert problem is not None and "5,016 characters" in problem
