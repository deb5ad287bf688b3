"""Structured answers on the pages (AppTest): the format choice in the sidebar, the report
drawn from the JSON, the raw text and the reason when it is not valid, the server's refusal,
the valid-structured shares in Compare, Batch and History, and the exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Element

from studio.pv.library import load_locations
from studio.records.store import RunStore, export_csv, export_json
from studio.runs.request import AnswerFormat
from tests.conftest import batch_page, history_page, start_app, switch_to
from tests.servers.ollama import FakeOllama
from tests.test_compare import compare, ollama_pane
from tests.test_compare_page import show

STRUCTURED = AnswerFormat.STRUCTURED.value


@pytest.fixture
def server() -> Iterator[FakeOllama]:
    with FakeOllama(version="0.12.3") as fake:
        yield fake


def structured_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> AppTest:
    at = start_app(tmp_path, monkeypatch, "ollama", url, "llama3.1:8b")
    radio = at.sidebar.radio(key="answer_format")
    assert radio.value == AnswerFormat.MARKDOWN.value  # the default: today's report
    assert radio.options == ["Markdown report", "Structured (JSON schema)"]
    radio.set_value(STRUCTURED).run()
    return at


def generate(at: AppTest) -> AppTest:
    (button,) = [b for b in at.button if b.label == "Generate"]
    at = button.click().run()
    assert not at.exception, at.exception
    return at


def shown(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def said(elements: Iterable[Element]) -> str:
    """The elements' text as shown: the escapes of literal text taken out."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(element.value) for element in elements))


def test_a_structured_answer_is_shown_as_the_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = generate(structured_app(tmp_path, monkeypatch, server.url))
    assert server.chat_requests[-1]["format"]["properties"]["offset_panels"]["type"] == \
        "integer"
    page = shown(at)
    assert "### System sizing" in page and "30 panels" in page and '{"' not in page
    captions = said(at.caption)
    assert "Structured answer: valid JSON of the report's schema." in captions
    run = at.session_state["playground_run"]
    assert run.request.answer_format == AnswerFormat.STRUCTURED
    assert run.to_dict()["structured_valid"] is True
    assert run.to_dict()["answer_format"] == STRUCTURED

    (stored,) = RunStore(str(tmp_path / "history.sqlite3")).list_runs()
    assert stored.answer_format == AnswerFormat.STRUCTURED
    assert json.loads(export_json([stored]))[0]["structured_valid"] is True
    assert "answer_format" in export_csv([stored]).splitlines()[0]
    at = history_page(at)
    assert "valid structured: 1 of 1" in said(at.caption)
    at.multiselect(key="history_open").set_value([stored.id]).run()
    assert "### Payback and ROI" in shown(at)


def test_a_cut_structured_answer_shows_its_raw_text_and_why(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = structured_app(tmp_path, monkeypatch, server.url)
    at.sidebar.number_input(key="max_tokens").set_value(20).run()
    at = generate(at)
    run = at.session_state["playground_run"]
    assert run.status == "length"
    (code,) = at.code
    assert code.value == run.text and code.value.startswith('{"key_trends"')
    warnings = said(at.warning)
    assert "incomplete: cut by max tokens (length)" in warnings
    assert run.to_dict()["structured_valid"] is False
    at = history_page(at)
    assert "valid structured: 0 of 1" in said(at.caption)


def test_an_ollama_before_0_5_shows_its_400(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(version="0.4.7") as old:
        at = generate(structured_app(tmp_path, monkeypatch, old.url))
    errors = said(at.error)
    assert "HTTP 400" in errors
    assert "cannot unmarshal object into Go struct field ChatRequest.format" in errors
    assert "upgrade Ollama, or pick the Markdown report format" in errors


def test_history_reopens_a_structured_run_with_its_format(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = generate(structured_app(tmp_path, monkeypatch, server.url))
    at.sidebar.radio(key="answer_format").set_value("markdown").run()
    (stored,) = RunStore(str(tmp_path / "history.sqlite3")).list_runs()
    at = history_page(at)
    at.multiselect(key="history_open").set_value([stored.id]).run()
    (button,) = [b for b in at.button if b.label == "Open in Playground"]
    at = button.click().run()
    assert at.session_state["answer_format"] == STRUCTURED


def test_compare_shows_the_share_of_valid_structured_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    structured = replace(ollama_pane(server.url), answer_format=AnswerFormat.STRUCTURED)
    short = replace(structured, sampling=replace(structured.sampling, max_tokens=20))
    comparison = compare([structured, short], repeats=2)
    assert comparison.wait(30)
    at = show(tmp_path, monkeypatch, comparison)
    table = at.dataframe[0].value.set_index("Figure")
    assert list(table.loc["Structured"]) == ["valid structured: 2 of 2",
                                             "valid structured: 0 of 2"]
    assert list(table.loc["Answer format"]) == ["Structured (JSON schema)"] * 2
    data = json.loads(comparison.to_json())
    assert [pane["structured"] for pane in data["panes"]] == [
        "valid structured: 2 of 2", "valid structured: 0 of 2"]
    assert "valid structured: 2 of 2" in comparison.to_html()


def test_a_structured_batch_counts_its_valid_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = structured_app(tmp_path, monkeypatch, server.url)
    at = batch_page(at)
    two = [location.name for location in load_locations()[:2]]
    at.multiselect(key="batch_locations").set_value(two)
    (button,) = [b for b in at.button if b.label == "Run batch"]
    at = button.click().run()
    assert not at.exception, at.exception
    assert "valid structured: 2 of 2" in said(at.caption)
    table = at.dataframe[0].value
    assert list(table["structured"]) == ["valid", "valid"]
    assert all("format" in body for body in server.chat_requests)


def test_compare_panes_take_the_sidebars_format_or_their_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama) -> None:
    at = structured_app(tmp_path, monkeypatch, server.url)
    at = switch_to(at, "compare.py")
    assert not [r for r in at.radio if r.key == "pane0_answer_format"]  # synced: the sidebar's
    at.toggle(key="compare_sync").set_value(False).run()
    pane = at.radio(key="pane1_answer_format")
    assert pane.value == STRUCTURED  # seeded from the sidebar
    pane.set_value(AnswerFormat.MARKDOWN.value).run()
    assert not at.exception, at.exception
    assert at.radio(key="pane0_answer_format").value == STRUCTURED
