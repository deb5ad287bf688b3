"""The Leaderboard page (AppTest): the ranking of the worked example, its filters, the votes
behind a pair, the exports, and a blind vote on an evaluation's cells."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from backends.sampling import Sampling
from studio.pv.library import load_locations, load_system_prompts
from studio.records.store import RunStore
from studio.runs.evaluation import Choice, EvaluationSpec, launch
from studio.votes.ballot import TIE, Ballot, Contender, Vote
from tests.conftest import Start, element_texts, log_in, open_app, switch_to, use_config
from tests.servers.latency import LatencyServer
from tests.servers.ollama import FakeOllama
from tests.test_evaluation import build
from tests.test_shared_pages import ollama as shared_ollama

PRESET_NAME, PRESET = next(iter(load_system_prompts().items()))
CUSTOM = "You are a terse PV engineer. Quote every figure's source."
# The worked example of ../shared/reference/evaluation-notes.md §3 (FastChat's compute_bt).
EXAMPLE = ([("A", "B", "A")] * 3 + [("A", "B", "B")] + [("A", "B", TIE)]
           + [("B", "C", "B")] * 2 + [("B", "C", "C")] + [("A", "C", "A")] * 2
           + [("A", "C", "C")])


def vote(first: str, second: str, winner: str, location: str = "Fresno, CA",
         system: str = PRESET, user: str = "", reason: str = "") -> Vote:
    letters = {first: "A", second: "B"}
    ballot = Ballot("compare", (Contender("A", first), Contender("B", second)), system,
                    "Size my system.", location=location)
    return Vote(ballot, letters.get(winner, winner), reason, user)


def seed(path: Path) -> RunStore:
    store = RunStore(path)
    for _ in range(10):
        for first, second, winner in EXAMPLE:
            store.add_vote(vote(first, second, winner))
    for winner in ("C", "C"):
        store.add_vote(vote("A", "C", winner, location="Austin, TX", system=CUSTOM,
                            reason="C names the net billing export rate"))
    return store


def leaderboard_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    use_config(tmp_path, monkeypatch, {
        "llm": {"backend": "embedded"},
        "app": {"fallback_to_embedded": False, "history_db": str(tmp_path / "h.sqlite3")}})
    return open_app("leaderboard.py")


def ranking(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value


def test_the_ranking_is_the_worked_examples_and_names_its_method(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(tmp_path / "h.sqlite3")
    at = leaderboard_page(tmp_path, monkeypatch)
    at.selectbox(key="leaderboard_location_filter").select("Fresno, CA").run()
    table = ranking(at).set_index("Choice")
    assert table.loc["A", "Rating"] == "1097.7"
    assert table.loc["B", "Rating"] == "984.7"
    assert table.loc["C", "Rating"] == "917.7"
    assert table.loc["A", "95% CI"] == "1045.2 – 1159.1"
    assert table.loc["A", "Rank"] == 1 and table.loc["C", "Battles"] == 60
    assert any("Bradley–Terry" in c.value and "bootstrap" in c.value for c in at.caption)


def test_filters_by_location_and_system_prompt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(tmp_path / "h.sqlite3")
    at = leaderboard_page(tmp_path, monkeypatch)
    assert at.selectbox(key="leaderboard_location_filter").options == [
        "All", "Austin, TX", "Fresno, CA"]
    at.selectbox(key="leaderboard_location_filter").select("Austin, TX").run()
    table = ranking(at).set_index("Choice")
    assert set(table.index) == {"A", "C"}
    assert table.loc["C", "Rating"] == "insufficient votes"  # C won every decided vote
    assert any("lost every vote it was in" in c.value for c in at.caption)
    at.selectbox(key="leaderboard_location_filter").select("All").run()
    system = at.selectbox(key="leaderboard_system")
    assert f"Preset: {PRESET_NAME}" in system.options
    system.select(next(o for o in system.options if o.startswith("Custom: You are a terse")))
    at.run()
    assert set(ranking(at)["Choice"]) == {"A", "C"}


def test_the_votes_behind_a_pair_and_the_exports(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(tmp_path / "h.sqlite3")
    at = leaderboard_page(tmp_path, monkeypatch)
    pairs = at.dataframe[1].value
    ac = pairs[(pairs["Choice A"] == "A") & (pairs["Choice B"] == "C")].iloc[0]
    assert (ac["A won"], ac["B won"], ac["Both bad"], ac["Votes"]) == (20, 12, 0, 32)
    pair = at.selectbox(key="leaderboard_pair")
    pair.select(next(i for i in pair.options if "A" in str(i) and "C" in str(i))).run()
    listed = at.dataframe[2].value
    assert len(listed) == 32
    assert "C names the net billing export rate" in set(listed["reason"])
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels == ["⬇ Leaderboard (CSV)", "⬇ Leaderboard (JSON)"]


def test_an_evaluations_cells_are_voted_blind_and_the_leaderboard_takes_the_vote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "h.sqlite3")
    models = ("alpha-secret-model", "beta-hidden-model")
    with LatencyServer(latency=0.05, served=models) as server:
        choices = tuple(Choice(backend="vllm", host=server.url, model=model,
                               sampling=Sampling(max_tokens=64)) for model in models)
        spec = EvaluationSpec(choices=choices, scenarios=load_locations()[:2],
                              system=PRESET)
        evaluation = launch(spec, build=build, store=store)
        assert evaluation.wait(30)
    at = leaderboard_page(tmp_path, monkeypatch)
    at.selectbox(key="leaderboard_location").select(1).run()
    next(b for b in at.button if b.label.startswith("Draw two answers")).click().run()
    assert not at.exception, at.exception
    hidden = element_texts(at)
    assert not any(name in hidden for name in models)
    assert "Which answer is better?" in hidden
    next(b for b in at.button if b.label == "B is better").click().run()
    shown = element_texts(at)
    assert all(name in shown for name in models)
    (kept,) = store.votes()
    assert kept.ballot.source == "evaluation"
    assert kept.ballot.group_id == evaluation.group_id
    assert kept.ballot.location == spec.scenarios[1].name
    assert kept.winner == "B"
    assert set(ranking(at)["Choice"]) == {f"vLLM · {model}" for model in models}


def test_on_a_shared_server_votes_are_each_users_and_others_prompts_stay_theirs(
        start: Start, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    for winner in ("A", "B"):
        store.add_vote(vote("x", "y", winner, system="ann's secret prompt", user="ann",
                            reason="ann's private reason"))
    store.add_vote(vote("x", "y", TIE, user="bob", reason="bob's reason"))
    at = log_in(start(shared_ollama(fake_ollama.url)), "bob")
    switch_to(at, "leaderboard.py")
    system = at.selectbox(key="leaderboard_system")
    assert not any("secret" in option for option in system.options)
    assert any(option.startswith("Another user's custom prompt") for option in system.options)
    assert ranking(at)["Battles"].tolist() == [3, 3]  # everyone's votes by default
    listed = at.dataframe[2].value
    assert "user" not in listed.columns  # bob is no admin: no names of other voters
    assert set(listed["reason"]) == {"(hidden)", "bob's reason"}
    at.radio(key="leaderboard_scope").set_value("Mine").run()
    assert ranking(at)["Battles"].tolist() == [1, 1]
    switch_to(at, "history.py")
    assert any(expander.label == "🗳️ Blind votes (1)" for expander in at.expander)
    assert "ann's private reason" not in element_texts(at)
