"""Compare's blind mode (AppTest): no element names a backend, model or host before the vote,
every one of them does after, and the vote is kept with its pairing, per user."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from backends.sampling import Sampling
from studio.records.store import RunStore
from studio.runs.compare import Comparison
from studio.runs.connection import build
from studio.runs.request import RunParams
from studio.runs.runner import Recording
from studio.votes.ballot import TIE
from studio.votes.leaderboard import Battle
from tests.conftest import element_texts, open_app, switch_to, use_config
from tests.servers.ollama import FakeOllama, Script, tokenize
from ui.blind import BLIND_KEY, Blind

ALPHA, BETA = "alpha-secret-model:7b", "beta-hidden-model:3b"
ANSWER = "## Recommendation\n\nInstall **12 panels** (4.8 kW). Payback about 7 years."


@pytest.fixture
def servers() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    script = Script(tokens=tokenize(ANSWER), delay=0.01)
    with FakeOllama(models=[ALPHA], script=script) as one, \
            FakeOllama(models=[BETA], script=script) as two:
        yield one, two


def blind_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, servers: tuple[FakeOllama, ...],
               order: tuple[int, ...], recorded: bool = False) -> tuple[AppTest, Comparison]:
    """The Compare page with a blind comparison of ALPHA and BETA (ended), letters in
    ``order``; the sidebar on ALPHA's server. ``recorded``: its runs in the history, as the
    page records them."""
    use_config(tmp_path, monkeypatch, {
        "llm": {"backend": "ollama", "host": servers[0].url, "model": ALPHA},
        "app": {"fallback_to_embedded": False, "history_db": str(tmp_path / "h.sqlite3")}})
    at = open_app("compare.py")
    panes = [RunParams("ollama", server.url, model, Sampling(max_tokens=128, temperature=0))
             for server, model in zip(servers, (ALPHA, BETA), strict=True)]
    store = RunStore(tmp_path / "h.sqlite3")
    group = store.create_group("compare") if recorded else None
    if group is not None:
        store.hold_blind(group)  # as the page's start does
    comparison = Comparison(panes, "You size PV systems.", "Size my system.",
                            preset="Fresno, CA",
                            build=lambda pane: build(at.session_state["_settings"], pane.backend,
                                                     pane.host, pane.model),
                            record=lambda index: Recording(store, "compare", group, index)
                            if recorded else None, group_id=group).start()
    assert comparison.wait(20)
    at.session_state["comparison"] = comparison
    at.session_state[BLIND_KEY] = {"compare": Blind(order, group)}
    at.run()
    assert not at.exception, at.exception
    return at, comparison


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_no_name_before_the_vote_and_every_one_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        servers: tuple[FakeOllama, FakeOllama], order: tuple[int, int]) -> None:
    at, comparison = blind_page(tmp_path, monkeypatch, servers, order)
    before = element_texts(at)
    for name in (ALPHA, BETA, "alpha-secret", "beta-hidden", "Ollama", servers[0].url,
                 servers[1].url, f":{servers[0].port}", f":{servers[1].port}"):
        assert name not in before, name
    assert "12 panels" in before  # the answers are there, whole
    assert "Figures right" in before  # with their check
    labels = [button.label for button in at.button]
    assert {"A is better", "B is better", "Tie", "Both bad"} <= set(labels), labels
    assert not any(s.label == "Backend" for s in at.selectbox)

    at.text_input(key="compare_vote_reason").input("A names the export rate").run()
    next(b for b in at.button if b.label == "A is better").click().run()
    assert not at.exception, at.exception
    after = element_texts(at)
    for name in (ALPHA, BETA, "Ollama"):
        assert name in after, name
    store = RunStore(tmp_path / "h.sqlite3")
    (vote,) = store.votes()
    assert vote.winner == "A" and vote.reason == "A names the export rate"
    first = comparison.panes[order[0]]
    assert [c.label for c in vote.ballot.contenders] == [
        comparison.panes[i].label for i in order]
    assert vote.ballot.contenders[0].run_id is None  # this comparison recorded nothing
    assert vote.battles()[0].a == first.label and vote.battles()[0].outcome == "a"
    assert vote.ballot.preset == "Fresno, CA" and vote.ballot.prompt == "Size my system."


def test_the_pickers_and_sidebar_come_back_after_the_vote_with_their_values(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        servers: tuple[FakeOllama, FakeOllama]) -> None:
    at, _ = blind_page(tmp_path, monkeypatch, servers, (1, 0))
    assert not at.sidebar.selectbox  # no sidebar picker while the vote is open
    next(b for b in at.button if b.label == "Tie").click().run()
    assert at.sidebar.selectbox
    assert any(s.label == "Model" and s.value == ALPHA for s in at.sidebar.selectbox)
    assert any(s.label == "Backend" for s in at.selectbox)  # the panes' pickers
    (vote,) = RunStore(tmp_path / "h.sqlite3").votes()
    assert vote.winner == TIE


def test_reveal_without_a_vote_keeps_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        servers: tuple[FakeOllama, FakeOllama]) -> None:
    at, _ = blind_page(tmp_path, monkeypatch, servers, (0, 1))
    next(b for b in at.button if b.label == "Reveal, no vote").click().run()
    assert ALPHA in element_texts(at)
    assert RunStore(tmp_path / "h.sqlite3").votes() == []


def test_history_leaves_out_the_runs_of_a_vote_still_to_cast(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        servers: tuple[FakeOllama, FakeOllama]) -> None:
    """Beside their answers, History's rows name the backend and model: they would tell the
    letters. Until the vote they are neither listed, exported nor opened by id."""
    at, comparison = blind_page(tmp_path, monkeypatch, servers, (0, 1), recorded=True)
    store = RunStore(tmp_path / "h.sqlite3")
    runs = store.list_runs()
    assert len(runs) == 2 and {run.group_id for run in runs} == {comparison.group_id}
    switch_to(at, "history.py")
    assert at.dataframe[0].value.empty  # the filters may list both models: not who is who
    assert any("left out until you vote" in caption.value for caption in at.caption)
    assert any("No runs match" in caption.value for caption in at.caption)
    at.number_input(key="history_open_id").set_value(runs[0].id).run()
    assert any(f"There is no run #{runs[0].id}" in w.value for w in at.warning)
    other_tab = switch_to(open_app(), "history.py")  # another session of the same user
    assert other_tab.dataframe[0].value.empty
    switch_to(at, "compare.py")
    next(b for b in at.button if b.label == "B is better").click().run()
    switch_to(at, "history.py")
    assert sorted(at.dataframe[0].value["model"]) == [ALPHA, BETA]
    alpha = next(run for run in runs if run.model == ALPHA)  # pane 1: letter A
    at.multiselect(key="history_open").set_value([alpha.id]).run()
    assert any(f"this run was A; the verdict: B is better (Ollama · {BETA})" in
               caption.value.replace("\\", "") for caption in at.caption)
    (vote,) = store.votes()
    assert {c.run_id for c in vote.ballot.contenders} == {run.id for run in runs}
    switch_to(at, "compare.py")  # after the vote, the comparison can be shared
    next(b for b in at.button if b.label == "🔗 Share this comparison").click().run()
    token = at.code[0].value.rsplit("token=", 1)[1]
    share = store.get_share(token)
    assert share is not None and share.target_id == comparison.group_id


def test_a_failed_pane_is_no_models_loss_and_one_answer_is_nothing_to_vote_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        servers: tuple[FakeOllama, FakeOllama], closed_port: int) -> None:
    """A pane whose server is down (or that was stopped) is shown as such and left out of
    the ballot: the vote is between the panes that answered; with one left, none."""
    use_config(tmp_path, monkeypatch, {
        "llm": {"backend": "ollama", "host": servers[0].url, "model": ALPHA},
        "app": {"fallback_to_embedded": False, "history_db": str(tmp_path / "h.sqlite3")}})
    at = open_app("compare.py")
    config = at.session_state["_settings"]
    down = RunParams("ollama", f"http://127.0.0.1:{closed_port}", "gone-model:1b")
    panes = [*(RunParams("ollama", server.url, model) for server, model
               in zip(servers, (ALPHA, BETA), strict=True)), down]
    comparison = Comparison(panes, "s", "Size my system.", build=lambda pane: build(
        config, pane.backend, pane.host, pane.model)).start()
    assert comparison.wait(30)
    at.session_state["comparison"] = comparison
    at.session_state[BLIND_KEY] = {"compare": Blind((2, 0, 1))}  # A: the pane that failed
    at.run()
    labels = [button.label for button in at.button]
    assert {"B is better", "C is better", "Tie", "Both bad"} <= set(labels), labels
    assert "A is better" not in labels and "A is best" not in labels
    assert "gone-model" not in element_texts(at)  # its error names it: after the vote
    assert any("ended with an error, so it is not in the vote" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "B is better").click().run()
    (vote,) = RunStore(tmp_path / "h.sqlite3").votes()
    assert [c.letter for c in vote.ballot.contenders] == ["B", "C"]
    assert vote.battles() == [Battle(f"Ollama · {ALPHA}", f"Ollama · {BETA}", "a")]
    assert "gone-model" in element_texts(at)

    one = Comparison([panes[0], down], "s", "Size my system.", build=lambda pane: build(
        config, pane.backend, pane.host, pane.model)).start()
    assert one.wait(30)
    at.session_state["comparison"] = one
    at.session_state[BLIND_KEY] = {"compare": Blind((1, 0))}
    at.run()
    assert not any(button.label.endswith("is better") for button in at.button)
    assert any("nothing to vote on" in info.value for info in at.info)
    next(b for b in at.button if b.label == "Reveal").click().run()
    assert len(RunStore(tmp_path / "h.sqlite3").votes()) == 1
