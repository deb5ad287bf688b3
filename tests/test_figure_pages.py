"""The figure check where the analyst sees it: every page, the history and every export (a
run keeps the location row its prompt was built from)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from studio.pv.checks import check_run
from studio.pv.library import load_locations
from studio.pv.location import Location
from studio.pv.prompt import build_user_prompt
from studio.records.store import RunStore, export_csv, export_json, structured_shares
from studio.runs.batch import Batch, BatchSpec
from studio.runs.compare import Comparison
from studio.runs.request import AnswerFormat, RunParams, RunRequest
from tests.conftest import caption_lines, history_page, start_app, wait_until
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.test_grounding import SAMPLE_ANSWER
from ui.output import check_lines

SAN_DIEGO = load_locations()[0]
SEED_LINE = ("Figures right: 1 of 8 right · panels to offset 100%: 128 stated, 30 in the data "
             "(4.3x) · panels with EV charging: 150 stated, 35 in the data (4.3x)")


@pytest.fixture
def seed_ollama() -> Iterator[FakeOllama]:
    """A test Ollama that streams the seed's sample answer."""
    with FakeOllama(script=Script(tokens=tokenize(SAMPLE_ANSWER))) as server:
        yield server


def request(location: Location | None = SAN_DIEGO, prompt: str | None = None) -> RunRequest:
    return RunRequest(backend="ollama", host="http://h", model="m", system="s",
                      prompt=prompt if prompt is not None else build_user_prompt(SAN_DIEGO),
                      sampling=Sampling(max_tokens=100, temperature=0.2),
                      preset=SAN_DIEGO.name, location=location)


# -- the history keeps the row ----------------------------------------------------------------
def test_a_run_keeps_its_location_row_and_its_exports_carry_the_checks(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "h.sqlite3")
    run_id = store.start_run(request(), "playground")
    store.finish_run(run_id, SAMPLE_ANSWER, "finished", None, {"output_tokens": 40})
    run = store.get(run_id)
    assert run is not None and run.location == SAN_DIEGO
    assert run.to_request().location == SAN_DIEGO  # "Open in Playground" keeps it
    data = json.loads(export_json([run]))[0]
    assert data["location"]["name"] == "San Diego, CA"
    assert data["location"]["export_credit_usd_kwh"] == 0.08
    check = data["figure_check"]
    assert check["right"] == "1 of 8" and check["summary"].startswith(SEED_LINE[15:])
    assert check["quantities"]["offset_panels"] == {"verdict": "wrong", "reference": 30,
                                                    "stated": ["128 panels"]}
    assert data["grounding"]["not_found"] == ["128 panels", "150 panels", "10.03 years",
                                              "132.15%", "$1,480.42"]
    row = next(csv.DictReader(io.StringIO(export_csv([run]))))
    assert (row["figures_right"], row["offset_panels"], row["offset_panels_stated"],
            row["offset_panels_reference"]) == ("1 of 8", "wrong", "128 panels", "30")
    assert row["budget_max_panels"] == "right" and row["offset_system_kw"] == "missing"
    assert row["grounding_score"] == "0.64"


def test_runs_without_a_row_or_with_a_damaged_one_are_not_graded(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    store = RunStore(path)
    for location in (None, SAN_DIEGO):
        run_id = store.start_run(request(location), "playground")
        store.finish_run(run_id, SAMPLE_ANSWER, "finished", None, {})
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE runs SET location_json = '{\"name\": 1' WHERE id = 2")
    for run in store.list_runs():
        assert run.location is None
        assert json.loads(export_json([run]))[0]["figure_check"]["not_graded"] == \
            "no location row: figures not graded"


# -- the pages ----------------------------------------------------------------------------------
def test_the_playground_grades_the_seeds_answer_on_san_diego(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed_ollama: FakeOllama) -> None:
    at = start_app(tmp_path, monkeypatch, "ollama", seed_ollama.url, "llama3.1:8b")
    assert at.selectbox(key="playground_location").value == "San Diego, CA"
    at.button[0].click().run()
    assert not at.exception
    (line,) = caption_lines(at, "Figures right:")
    assert line.startswith(SEED_LINE)
    answer = next(m.value for m in at.markdown if "RECOMMENDATION" in m.value)
    assert "~:red[~~128 panels~~] :red-background[✗ 30 in the data]" in answer
    assert ":red-background[31 panels]" not in answer  # 31 is right: no mark
    # The history list shows it beside the grounding score.
    at = history_page(at)
    table = at.dataframe[0].value
    assert table["checks"][0] == "1 of 8 · 64%"


def test_an_edited_data_context_is_said_and_not_graded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed_ollama: FakeOllama) -> None:
    at = start_app(tmp_path, monkeypatch, "ollama", seed_ollama.url, "llama3.1:8b")
    prompt = at.text_area(key="playground_user").value or ""
    at.text_area(key="playground_user").set_value(
        prompt.replace("Budget: $15,000", "Budget: $25,000")).run()
    at.button[0].click().run()
    assert caption_lines(at, "Figures right:") == [
        "Figures right: the DATA CONTEXT was edited: figures not graded against San Diego, "
        "CA's data"]
    assert not any(":red[~~" in m.value for m in at.markdown)


def test_a_comparison_grades_each_pane(seed_ollama: FakeOllama) -> None:
    pane = RunParams("ollama", seed_ollama.url, "llama3.1:8b",
                     sampling=Sampling(max_tokens=512, temperature=0.2))
    comparison = Comparison([pane, pane], "s", build_user_prompt(SAN_DIEGO),
                            preset=SAN_DIEGO.name, location=SAN_DIEGO,
                            build=lambda p: OllamaBackend(p.host, p.model)).start()
    assert comparison.wait(20)
    (first, second) = comparison.table()
    assert first["Figures right"] == second["Figures right"] == "1 of 8"
    panes = comparison.to_dict()["panes"]
    assert panes[0]["figure_check"]["quantities"]["roi_25y_pct"]["verdict"] == "wrong"
    assert "Figures right" in comparison.to_html()


def test_a_batch_grades_each_row_against_its_own_row(seed_ollama: FakeOllama) -> None:
    """An uploaded row (not a preset) is graded against itself."""
    custom = replace(SAN_DIEGO, name="Testville, ZZ", budget_usd=20000)
    spec = BatchSpec(scenarios=[SAN_DIEGO, custom], backend="ollama", host=seed_ollama.url,
                     model="llama3.1:8b", system="s",
                     sampling=Sampling(max_tokens=256, temperature=0.2))
    batch = Batch(spec, build=lambda: OllamaBackend(seed_ollama.url, "llama3.1:8b")).start()
    assert wait_until(lambda: all(row.done for row in batch.rows), 30)
    assert [row["figures_right"] for row in batch.table()] == ["1 of 8", "0 of 8"]
    rows = list(csv.DictReader(io.StringIO(batch.to_csv())))
    # $20,000 buys 41 panels: the answer's 31 is wrong for the uploaded row.
    assert [(r["budget_max_panels"], r["budget_max_panels_reference"]) for r in rows] == [
        ("right", "31"), ("wrong", "41")]


def test_the_html_reports_carry_each_quantity(seed_ollama: FakeOllama) -> None:
    pane = RunParams("ollama", seed_ollama.url, "llama3.1:8b",
                     sampling=Sampling(max_tokens=512, temperature=0.2))
    comparison = Comparison([pane], "s", build_user_prompt(SAN_DIEGO), preset=SAN_DIEGO.name,
                            location=SAN_DIEGO,
                            build=lambda p: OllamaBackend(p.host, p.model)).start()
    assert comparison.wait(20)
    report = comparison.to_html()
    assert ("<tr><td>panels to offset 100%</td><td>wrong</td><td>128 panels</td><td>30</td>"
            "</tr>") in report
    assert "<tr><td>annual savings</td><td>wrong</td><td>$1,480.42</td><td>$3,024.10</td>" \
        in report
    spec = BatchSpec(scenarios=[SAN_DIEGO], backend="ollama", host=seed_ollama.url,
                     model="llama3.1:8b", system="s",
                     sampling=Sampling(max_tokens=256, temperature=0.2))
    batch = Batch(spec, build=lambda: OllamaBackend(seed_ollama.url, "llama3.1:8b")).start()
    assert wait_until(lambda: all(row.done for row in batch.rows), 30)
    with zipfile.ZipFile(io.BytesIO(batch.to_zip())) as archive:
        page = archive.read("01-san-diego--ca.html").decode()
    assert "<tr><td>budget maximum of panels</td><td>right</td><td>31 panels</td><td>31</td>" \
        in page
    assert "Figures right: 1 of 8 right" in page


def test_an_uploaded_locations_name_in_the_check_is_literal_text() -> None:
    """The "edited" line names the location: an uploaded CSV's name is the uploader's text."""
    hostile = replace(SAN_DIEGO, name="![x](http://attacker.test/beacon.png)")
    prompt = build_user_prompt(SAN_DIEGO)
    check = check_run(SAMPLE_ANSWER, request(hostile, prompt))
    assert check is not None and check.figures.not_graded is not None
    assert "attacker.test" in check.figures.not_graded
    shown = check_lines(check)
    assert "![x](" not in shown and r"\!\[x\]\(http" in shown


def test_a_reopened_uploaded_rows_run_is_graded_against_that_row_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed_ollama: FakeOllama) -> None:
    """History -> Playground for a batch row of an uploaded CSV: the picker shows a preset,
    the figures are checked against the run's own row, and a caption says which."""
    uploaded = replace(SAN_DIEGO, name="Testville, ZZ", budget_usd=20000)
    at = start_app(tmp_path, monkeypatch, "ollama", seed_ollama.url, "llama3.1:8b")
    store = RunStore(tmp_path / "history.sqlite3")
    run_id = store.start_run(replace(request(uploaded, build_user_prompt(uploaded)),
                                     host=seed_ollama.url, model="llama3.1:8b",
                                     preset=uploaded.name), "batch")
    store.finish_run(run_id, SAMPLE_ANSWER, "finished", None, {"output_tokens": 40})
    at = history_page(at)
    at.multiselect(key="history_open").set_value([run_id]).run()
    (button,) = [b for b in at.button if b.label == "Open in Playground"]
    at = button.click().run()
    assert not at.exception, at.exception
    note = " ".join(caption_lines(at, "Figures are checked against"))
    assert "Testville, ZZ" in note and "not the preset picked above" in note
    # $20,000 buys 41 panels: the answer's 31 is wrong for the uploaded row.
    (line,) = caption_lines(at, "Figures right:")
    assert "budget maximum of panels: 31 stated, 41 in the data" in line


def test_a_run_that_failed_without_an_answer_is_not_in_the_valid_share(tmp_path: Path) -> None:
    """Ollama 0.4's 400 to a schema says nothing of the model's JSON."""
    store = RunStore(tmp_path / "h.sqlite3")
    structured = replace(request(), answer_format=AnswerFormat.STRUCTURED)
    for text, status in (("", "error"), ('{"offset_panels": 3', "length")):
        run_id = store.start_run(structured, "playground")
        store.finish_run(run_id, text, status, "HTTP 400" if status == "error" else None, {})
    assert structured_shares(store.list_runs()) == {"Ollama · m": "valid structured: 0 of 1"}
