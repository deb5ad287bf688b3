"""The labelled corpus the figure check is measured on, and the measurement written in
docs/BENCHMARKS.md (bench/bench_figures.py)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.bench_figures import GOAL, REPORT, Answer, evaluate, load_corpus, section
from studio.pv.figures import Verdict
from studio.pv.quantities import EV_QUANTITIES, Quantity
from studio.pv.sizing import derive_figures
from tests.test_grounding import SAMPLE_ANSWER


@pytest.fixture(scope="module")
def corpus() -> list[Answer]:
    return load_corpus()


def test_the_corpus_covers_what_the_check_must_cope_with(corpus: list[Answer]) -> None:
    assert len(corpus) >= 60
    first = corpus[0]
    assert first.location.name == "San Diego, CA"
    assert SAMPLE_ANSWER.strip() in first.text  # the seed's own sample answer
    locations = {answer.location for answer in corpus}
    assert len(locations) >= 10
    assert any(loc.has_ev for loc in locations) and any(not loc.has_ev for loc in locations)
    bound = {derive_figures(loc).budget_max_panels < (derive_figures(loc).ev_panels
                                                      or derive_figures(loc).offset_panels)
             for loc in locations}
    assert bound == {True, False}  # budget-bound households and others
    for answer in corpus:  # exactly the quantities asked of the household
        asked = set(Quantity) - (set() if answer.location.has_ev else set(EV_QUANTITIES))
        assert set(answer.labels) == asked, answer.name
    kinds = Counter((q, label.verdict) for a in corpus for q, label in a.labels.items())
    for quantity in Quantity:
        for verdict in Verdict:
            assert kinds[quantity, verdict] >= 1, (quantity, verdict)


def test_the_check_grades_the_corpus_as_labelled(corpus: list[Answer]) -> None:
    tallies = evaluate(corpus)
    assert tallies[None].accuracy >= GOAL, "\n".join(tallies[None].misses)


def test_the_benchmarks_doc_holds_what_the_code_measures(corpus: list[Answer]) -> None:
    """Rewritten by ``python -m bench.bench_figures --write``."""
    assert section(corpus, evaluate(corpus)) in REPORT.read_text(encoding="utf-8")
