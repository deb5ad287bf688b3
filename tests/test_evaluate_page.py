"""The Evaluate page (AppTest of the real app) against the latency test server (vLLM's API)
and the test Ollama: the schedule, a run to the end with its scorecard, matrix, cells and
downloads, a second evaluation and a reopened one showing only their own figures, hostile
names shown as typed, service levels re-scoring goodput, and a choice on a wrong host."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Button, Element

from backends.status import Status
from studio.pv.library import load_locations
from studio.pv.location import COLUMNS
from studio.records.store import RunStore, process_owner
from studio.runs.evaluation import KIND, Choice, EvaluationRunning, EvaluationSpec, launch
from tests.conftest import history_page, open_app, switch_to, use_config
from tests.servers.latency import Fail, LatencyServer
from tests.servers.ollama import FakeOllama

LOCATIONS = load_locations()
THREE = [location.name for location in LOCATIONS[:3]]
MODEL = "smollm2"


@pytest.fixture
def servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[tuple[LatencyServer, FakeOllama]]:
    """vLLM's API (the sidebar's backend) and an Ollama with two models."""
    with LatencyServer(latency=0.1) as vllm, FakeOllama() as ollama:
        use_servers(tmp_path, monkeypatch, vllm, ollama)
        yield vllm, ollama


def use_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, vllm: LatencyServer,
                ollama: FakeOllama) -> None:
    """The app's config: vLLM's API the sidebar's backend, the Ollama beside it."""
    use_config(tmp_path, monkeypatch, {
        "llm": {"backend": "vllm", "host": vllm.url, "model": MODEL},
        "backends": {"ollama": {"host": ollama.url, "model": "llama3.1:8b"}},
        "app": {"fallback_to_embedded": False}})


def evaluate_page(at: AppTest | None = None) -> AppTest:
    at = switch_to(at, "evaluate.py") if at is not None else open_app("evaluate.py")
    assert at.title[0].value == "🏁 Evaluate"
    at.toggle(key="evaluate_sse").set_value(False).run()  # the latency server answers whole
    return at


def button(at: AppTest, label: str) -> Button:
    (found,) = [b for b in at.button if b.label == label]
    return found


def texts(elements: Iterable[Element]) -> str:
    """The elements' text as shown: the escapes of literal text undone."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(element.value) for element in elements))


def two_ollama_models(at: AppTest, locations: list[str] = THREE) -> AppTest:
    """Choices: the sidebar's vLLM, llama3.1:8b and mistral:7b on the one Ollama."""
    at.number_input(key="evaluate_choices").set_value(3).run()
    at.selectbox(key="eval1_backend_kind").set_value("ollama").run()
    at.selectbox(key="eval2_backend_kind").set_value("ollama").run()
    at.selectbox(key="eval2_model_ollama").set_value("mistral:7b").run()
    at.multiselect(key="evaluate_locations").set_value(locations).run()
    assert not at.exception, at.exception
    return at


def start(at: AppTest) -> AppTest:
    button(at, "Start evaluation").click().run()
    assert not at.exception, at.exception
    evaluation = at.session_state["evaluation"]
    assert evaluation.wait(60)
    at.run()
    assert not at.exception, at.exception
    return at


def scorecard(at: AppTest) -> dict[str, list[str]]:
    """The scorecard as shown: figure -> a value per choice."""
    frame = at.dataframe[0].value
    return {row["Figure"]: [str(value) for value in list(row)[1:]]
            for _, row in frame.iterrows()}


def test_two_models_on_one_ollama_take_turns_and_the_schedule_says_why(
        servers: tuple[LatencyServer, FakeOllama]) -> None:
    vllm, ollama = servers
    at = two_ollama_models(evaluate_page())
    shown = texts(at.caption)
    assert "9 cells: 3 locations on 3 choices." in shown
    assert (f"Choices 2, 3 (Ollama at {ollama.url}) run one after the other: 2 models on one "
            "Ollama would make it load them back and forth, a cold start at each switch; "
            "one after the other, each model loads once.") in shown
    assert (f"Choice 1 (vLLM at {vllm.url}) runs on its own server, at the same time as the "
            "others.") in shown
    # The same model twice with other settings: one server, in turn, for another reason.
    at.selectbox(key="eval2_model_ollama").set_value("llama3.1:8b").run()
    at.number_input(key="eval2_max_tokens").set_value(64).run()
    assert "Choices 2, 3 (Ollama at" in texts(at.caption)
    assert "a choice's requests would slow the other's figures" in texts(at.caption)
    assert vllm.total_requests() == 0 and ollama.chat_requests == []  # nothing ran


def test_an_evaluation_runs_to_the_end_with_scorecard_matrix_cells_and_downloads(
        servers: tuple[LatencyServer, FakeOllama], tmp_path: Path) -> None:
    vllm, ollama = servers
    at = start(two_ollama_models(evaluate_page()))
    labels = ["1. vLLM · smollm2", "2. Ollama · llama3.1:8b", "3. Ollama · mistral:7b"]
    assert list(at.dataframe[0].value.columns) == ["Figure", *labels]
    card = scorecard(at)
    assert card["Answered"] == ["3", "3", "3"] and card["Failed"] == ["0", "0", "0"]
    assert {"TTFT p50", "TPOT p90", "ITL p99", "E2EL p50", "Output tokens/s", "Requests/s",
            "Wall time"} <= set(card)
    assert any(name.startswith("Goodput (TTFT ≤ 10.00 s, E2EL ≤ 120.00 s)") for name in card)
    assert any(value.startswith("★ ") for values in card.values() for value in values)
    assert "vllm/benchmarks/serve.py calculate_metrics" in texts(at.caption)

    matrix = at.dataframe[1].value
    assert list(matrix["Location"]) == THREE
    assert list(matrix.columns) == ["#", "Location", *labels, "Best"]
    assert all(re.match(r"\d+ of \d+ · \d+\.\d s", cell) for label in labels
               for cell in matrix[label])
    bars = [bar.proto.text for bar in at.get("progress")]
    assert len(bars) == 3 and all("3 done · 0 failed" in bar for bar in bars)
    assert "Evaluation #1 · 3 choices · 3 locations · 9 of 9 cells answered · ended" in \
        texts(at.caption)
    downloads = [getattr(element, "label", "") for element in at.get("download_button")]
    assert downloads == ["⬇ Cells (CSV)", "⬇ Scorecard (CSV)", "⬇ Report (JSON)",
                         "⬇ Report (HTML)"]
    assert vllm.requests == Counter(THREE)
    assert len(ollama.chat_requests) == 6
    (vote_link,) = at.get("page_link")  # its answers go to a blind vote, two at a time
    assert "Vote blind on evaluation #1" in vote_link.proto.label
    assert vote_link.proto.page.endswith("leaderboard")

    # A cell: one choice, then two side by side.
    at.selectbox(key="evaluate_cell_location").set_value(1).run()
    assert "Recommendation for Phoenix, AZ" in at.markdown[-1].value or any(
        "Phoenix, AZ" in md.value for md in at.markdown)
    at.multiselect(key="evaluate_cell_choices").set_value([0, 2]).run()
    assert not at.exception, at.exception
    titles = [md.value for md in at.markdown if md.value.startswith("**")]
    assert "**1\\. vLLM · smollm2**" in titles and "**3\\. Ollama · mistral\\:7b**" in titles

    # One history group of nine runs, position = choice x rows + row.
    store = RunStore(tmp_path / "history.sqlite3")
    (group,) = store.list_groups(KIND)
    spec = EvaluationSpec.from_json(group.spec)
    assert [choice.model for choice in spec.choices] == [MODEL, "llama3.1:8b", "mistral:7b"]
    runs = store.group_runs(group.id)
    assert sorted(run.position for run in runs) == list(range(9))
    assert all(run.status == Status.FINISHED and run.page == "evaluate" for run in runs)
    assert [run.model for run in sorted(runs, key=lambda r: r.position)][3:6] == [
        "llama3.1:8b"] * 3


def test_service_levels_score_goodput_again_without_running_again(
        servers: tuple[LatencyServer, FakeOllama]) -> None:
    vllm, ollama = servers
    at = start(two_ollama_models(evaluate_page()))
    before = vllm.total_requests(), len(ollama.chat_requests)
    goodput = [name for name in scorecard(at) if name.startswith("Goodput")]
    assert goodput and all(v.strip("★ ") != "0.000" for v in scorecard(at)[goodput[0]])
    first = [value.strip("★ ") for value in scorecard(at)[goodput[0]]]
    at.number_input(key="evaluate_ttft_s").set_value(0.1).run()  # the least: 0 meets none
    at.number_input(key="evaluate_e2el_s").set_value(None).run()
    card = scorecard(at)
    (name,) = [name for name in card if name.startswith("Goodput")]
    assert name == "Goodput (TTFT ≤ 100.0 ms), req/s"
    assert [value.strip("★ ") for value in card[name]] != first  # scored again
    at.number_input(key="evaluate_ttft_s").set_value(None).run()
    assert not [name for name in scorecard(at) if name.startswith("Goodput")]
    assert "no service levels set" in texts(at.caption)
    assert (vllm.total_requests(), len(ollama.chat_requests)) == before  # nothing ran again
    # The report carries the page's levels, not the ones it started with.
    data = json.loads(at.session_state["evaluation"].to_json(None))
    assert data["service_levels_ms"]["ttft_ms"] == 10_000
    # Found trying the page: an evaluation opened again was scored against the levels on
    # the page, not the ones it ran with. Opened, it brings its own.
    at.selectbox(key="evaluate_earlier").set_value(1).run()
    button(at, "Open").click().run()
    assert not at.exception, at.exception
    assert at.number_input(key="evaluate_ttft_s").value == 10.0
    assert at.number_input(key="evaluate_e2el_s").value == 120.0
    assert "goodput against TTFT ≤ 10.00 s, E2EL ≤ 120.00 s" in texts(at.caption)


def test_a_second_evaluation_shows_only_its_own_figures_and_a_reopened_one_its_own(
        servers: tuple[LatencyServer, FakeOllama]) -> None:
    at = start(two_ollama_models(evaluate_page()))
    assert list(at.dataframe[1].value["Location"]) == THREE
    at.selectbox(key="evaluate_cell_location").set_value(2).run()  # beyond the next one's
    at.multiselect(key="evaluate_cell_choices").set_value([1, 2]).run()
    # The second: two choices, two other locations.
    at.number_input(key="evaluate_choices").set_value(2).run()
    other = [location.name for location in LOCATIONS[5:7]]
    at.multiselect(key="evaluate_locations").set_value(other).run()
    at = start(at)
    assert list(at.dataframe[0].value.columns) == ["Figure", "1. vLLM · smollm2",
                                                   "2. Ollama · llama3.1:8b"]
    assert list(at.dataframe[1].value["Location"]) == other
    assert len(at.get("progress")) == 2
    shown = texts([*at.caption, *at.markdown])
    assert "Evaluation #2 · 2 choices · 2 locations · 4 of 4 cells answered" in shown
    assert "Evaluation #1" not in shown and "mistral" not in shown
    assert not any(name in shown for name in THREE)
    assert at.selectbox(key="evaluate_cell_location").value == 0
    assert at.multiselect(key="evaluate_cell_choices").value == [0]

    # Open the first again: its own three choices and locations, said to be reopened.
    (first,) = [option for option in at.selectbox(key="evaluate_earlier").options
                if option.startswith("#1 ·")]
    assert first.endswith("9 done of 9")
    at.selectbox(key="evaluate_earlier").set_value(1).run()
    button(at, "Open").click().run()
    assert not at.exception, at.exception
    assert list(at.dataframe[1].value["Location"]) == THREE
    assert list(at.dataframe[0].value.columns)[-1] == "3. Ollama · mistral:7b"
    assert scorecard(at)["Answered"] == ["3", "3", "3"]
    shown = texts(at.caption)
    assert "Evaluation #1 · 3 choices · 3 locations · 9 of 9 cells answered · reopened" in shown
    assert not any(name in shown for name in other)
    assert next(getattr(e, "label", "") for e in at.get("download_button")) == "⬇ Cells (CSV)"
    assert len(at.session_state["evaluation"].cells_table()) == 9


def test_hostile_model_and_location_names_are_shown_as_typed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = "x](javascript:alert(1)) **bold**"
    place = "![p](http://evil.example/pixel.png) Town"
    row = (f'"{place}",Testland,true,30.5,0.9,6.2,40,0.2,5.1,0.25,12000,400,500,false')
    content = ("\n".join([",".join(COLUMNS), row]) + "\n").encode()
    with FakeOllama(models=("llama3.1:8b", model)) as ollama:
        use_config(tmp_path, monkeypatch, {
            "llm": {"backend": "ollama", "host": ollama.url, "model": "llama3.1:8b"},
            "app": {"fallback_to_embedded": False}})
        at = open_app("evaluate.py")
        at.selectbox(key="eval1_backend_kind").set_value("ollama").run()
        at.selectbox(key="eval1_model_ollama").set_value(model).run()
        at.radio(key="evaluate_source").set_value("Upload a CSV").run()
        at.file_uploader(key="evaluate_upload").set_value(("s.csv", content, "text/csv")).run()
        at = start(at)
        markup = "\n".join(str(e.value) for e in [*at.caption, *at.markdown, *at.info,
                                                  *at.warning, *at.error, *at.success])
        markup += "\n".join(bar.proto.text for bar in at.get("progress"))
        assert "](javascript" not in markup and "![p](http" not in markup
        assert "**bold**" not in markup
        shown = texts([*at.caption, *at.markdown]) + texts(
            [type("E", (), {"value": bar.proto.text})() for bar in at.get("progress")])
        assert f"2. Ollama · {model}" in shown
        assert list(at.dataframe[1].value["Location"]) == [place]  # a table cell: as typed


def test_a_choice_on_a_wrong_host_fails_with_its_reason_and_the_others_run(
        servers: tuple[LatencyServer, FakeOllama], closed_port: int) -> None:
    vllm, _ = servers
    at = evaluate_page()
    at.selectbox(key="eval1_backend_kind").set_value("ollama").run()
    at.text_input(key="eval1_host_ollama").set_value(f"http://127.0.0.1:{closed_port}").run()
    assert any("Not reachable" in e.value for e in at.error)
    at.text_input(key="eval1_model_ollama").set_value("llama3.1:8b").run()
    at.multiselect(key="evaluate_locations").set_value(THREE[:2]).run()
    at.number_input(key="eval1_concurrency").set_value(2).run()
    at = start(at)
    card = scorecard(at)
    assert card["Answered"] == ["★ 2", "0"] and card["Failed"] == ["★ 0", "2"]
    assert vllm.requests == Counter(THREE[:2])
    failures = texts([*at.warning, *at.error])
    assert "2. Ollama · llama3.1:8b: 2 of 2 cells failed" in failures
    assert f"127.0.0.1:{closed_port}" in failures


def test_history_lists_filters_and_places_an_evaluations_runs(
        servers: tuple[LatencyServer, FakeOllama]) -> None:
    at = start(two_ollama_models(evaluate_page()))
    at = history_page(at)
    table = at.dataframe[0].value
    assert list(table["page"]) == ["evaluate"] * 9
    at.selectbox(key="history_model").set_value("mistral:7b").run()
    table = at.dataframe[0].value
    assert len(table) == 3 and set(table["model"]) == {"mistral:7b"}
    run_id = int(table["id"][0])
    at.multiselect(key="history_open").set_value([run_id]).run()
    assert not at.exception, at.exception
    assert any(caption.startswith("A cell of evaluation #1 (position ")
               and "opens whole on the Evaluate page" in caption
               for caption in (re.sub(r"\\(.)", r"\1", c.value) for c in at.caption))


def seed_evaluation(store: RunStore, spec: EvaluationSpec, answered: list[int]) -> int:
    """A recorded evaluation with ``answered`` positions answered, whose process died while
    it ran (a SIGKILL: the group still claimed, by a process that is gone)."""
    group = store.create_group(KIND, spec=spec.to_json())
    for position in answered:
        choice, row = spec.cell_of(position)
        request = spec.batch_spec(choice).request(spec.scenarios[row])
        run_id = store.start_run(request, "evaluate", group, position)
        store.finish_run(run_id, "## Earlier answer\n\nInstall 12 panels.", Status.FINISHED,
                         None, {"output_tokens": 150, "total_time_s": 2.0})
    assert store.claim_group(group)
    host, _, start = process_owner().rsplit(":", 2)
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE groups SET owner = ? WHERE id = ?",
                     (f"{host}:999999999:{start}", group))
    return group


def vllm_and_ollama(vllm: LatencyServer, ollama: FakeOllama, rows: int) -> EvaluationSpec:
    """An evaluation of the first ``rows`` locations on the test vLLM and Ollama."""
    return EvaluationSpec(choices=(
        Choice(backend="vllm", host=vllm.url, model=MODEL),
        Choice(backend="ollama", host=ollama.url, model="llama3.1:8b")),
        scenarios=LOCATIONS[:rows], system="You are a PV analyst.")


def test_an_interrupted_evaluation_is_said_so_and_resumes_only_its_cells_left(
        servers: tuple[LatencyServer, FakeOllama], tmp_path: Path) -> None:
    vllm, ollama = servers
    store = RunStore(tmp_path / "history.sqlite3")
    spec = vllm_and_ollama(vllm, ollama, 3)
    group = seed_evaluation(store, spec, [0, 4])
    at = evaluate_page()
    (warning,) = [w for w in at.warning if "Interrupted" in w.value]
    assert texts([warning]).startswith(f"Interrupted: #{group} ·")
    assert "2 done of 6 · interrupted" in texts([warning])
    button(at, "Resume").click().run()
    assert not at.exception, at.exception
    assert at.session_state["evaluation"].wait(60)
    at.run()
    assert "6 of 6 cells answered" in texts(at.caption)
    assert vllm.requests == Counter(THREE[1:])  # row 0 of choice 1 was answered
    assert len(ollama.chat_requests) == 2  # rows 0 and 2 of choice 2 (row 1 was answered)
    answered = Counter(run.position for run in store.group_runs(group)
                       if run.status == Status.FINISHED)
    assert sorted(answered) == list(range(6)) and set(answered.values()) == {1}


def test_an_evaluation_another_process_runs_is_not_resumed_here(
        servers: tuple[LatencyServer, FakeOllama], tmp_path: Path) -> None:
    """Claimed by a live worker this session cannot watch: said so, and not resumable."""
    vllm, ollama = servers
    store = RunStore(tmp_path / "history.sqlite3")
    spec = vllm_and_ollama(vllm, ollama, 1)
    group = store.create_group(KIND, spec=spec.to_json())
    assert store.claim_group(group)  # a worker of this process, not in its live list
    at = evaluate_page()
    assert (f"Running: #{group}" in texts(at.info)
            and "(in another app process: watch or stop it there)" in texts(at.info))
    assert button(at, "Resume").disabled
    assert not [b for b in at.button if b.label == "Watch"]
    with pytest.raises(EvaluationRunning, match=f"Evaluation #{group} is running in another"):
        launch(spec, build=lambda choice: None, store=store, group_id=group)  # type: ignore


def test_differences_only_keeps_the_locations_where_the_choices_differ(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LatencyServer(latency=0.05, failures={THREE[1]: Fail(400)}) as vllm, \
            FakeOllama() as ollama:
        use_servers(tmp_path, monkeypatch, vllm, ollama)
        at = evaluate_page()
        at.selectbox(key="eval1_backend_kind").set_value("ollama").run()
        at.multiselect(key="evaluate_locations").set_value(THREE).run()
        at = start(at)
        matrix = at.dataframe[1].value
        assert list(matrix["Location"]) == THREE
        assert matrix["1. vLLM · smollm2"][1].startswith("Failed")
        at.toggle(key="evaluate_differs").set_value(True).run()
        assert list(at.dataframe[1].value["Location"]) == [THREE[1]]
        assert "1. vLLM · smollm2: 1 of 3 cells failed: " in texts(at.warning)


def test_cells_over_a_choices_window_are_held_back_to_ask_before_anything_is_sent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window check of Batch, per choice: the cells of the Ollama choice whose model
    was trained on 4,096 tokens do not fit a ~2,900-token prompt and 2,048 max tokens. The
    evaluation waits; nothing is sent until Run anyway."""
    with LatencyServer(latency=0.1) as vllm, \
            FakeOllama(trained_context={"llama3.1:8b": 4096}) as ollama:
        use_servers(tmp_path, monkeypatch, vllm, ollama)
        at = evaluate_page()
        at.selectbox(key="eval1_backend_kind").set_value("ollama").run()
        at.number_input(key="eval1_max_tokens").set_value(2048).run()
        at.multiselect(key="evaluate_locations").set_value(THREE[:2]).run()
        button(at, "Start evaluation").click().run()
        assert not at.exception, at.exception
        warned = texts(at.warning)
        assert "The context window is too small." in warned
        assert f"Choice 2 · #1 {THREE[0]}" in warned and f"Choice 2 · #2 {THREE[1]}" in warned
        assert "Choice 1" not in warned  # vLLM's cells fit
        assert "evaluation" not in at.session_state
        assert ollama.chat_requests == [] and vllm.total_requests() == 0
        button(at, "Run anyway").click().run()
        evaluation = at.session_state["evaluation"]
        assert evaluation.wait(60)
        at.run()
        assert not at.exception, at.exception
        assert "The context window is too small." not in texts(at.warning)
        assert evaluation.counts()["total"] == 4 and len(ollama.chat_requests) == 2
