"""A history file made by the app as it landed (schema v5, commit c9725f4: its groups kept a
Batch's spec, an import's summary and a Compare's preset all in one ``label`` column) opened by
this app: upgraded in place, and every page's read of it works. tests/fixtures/history_v5.md
says how the file was made."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from backends.status import Status
from studio.records.batch_files import (
    IMPORT_KIND,
    AlreadyImported,
    earlier_import,
    files_digest,
    import_results,
)
from studio.records.store import SCHEMA_VERSION, RunStore, export_csv, export_json
from studio.runs.batch import BatchSpec, earlier_rows, earlier_state
from studio.runs.request import AnswerFormat
from studio.runs.runner import Run
from tests.conftest import batch_page, history_page, use_config

FIXTURES = Path(__file__).parent / "fixtures"
INPUT = (FIXTURES / "history_v5_batch_input.jsonl").read_text()
OUTPUT = (FIXTURES / "history_v5_batch_output.jsonl").read_text()


@pytest.fixture
def old_db(tmp_path: Path) -> Path:
    """A copy of the landed version's history file (the fixture itself stays v5)."""
    db = tmp_path / "history.sqlite3"
    shutil.copyfile(FIXTURES / "history_v5.sqlite3", db)
    return db


def group_columns(db: Path) -> dict[str, tuple[str, str, str]]:
    """kind -> (spec, summary, preset) as the file holds them."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT kind, spec, summary, preset FROM groups").fetchall()
    return {kind: (spec, summary, preset) for kind, spec, summary, preset in rows}


def test_the_fixture_is_the_landed_versions_file() -> None:
    # immutable: read as a plain file, no -wal or -shm made beside the fixture
    with sqlite3.connect(f"file:{FIXTURES / 'history_v5.sqlite3'}?immutable=1",
                         uri=True) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
        labels = dict(conn.execute("SELECT kind, label FROM groups").fetchall())
    assert labels["compare"] == "San Diego, CA"
    assert json.loads(labels["batch"])["scenarios"]
    assert json.loads(labels[IMPORT_KIND])["digest"] == files_digest(INPUT, OUTPUT)


def test_opening_it_moves_each_label_into_its_own_column(old_db: Path) -> None:
    with sqlite3.connect(old_db) as conn:
        labels = dict(conn.execute("SELECT kind, label FROM groups").fetchall())
    store = RunStore(old_db)
    assert store.schema_version() == SCHEMA_VERSION == 8
    with sqlite3.connect(old_db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(groups)")}
    assert {"spec", "summary", "preset"} <= columns
    # Gone; where SQLite cannot drop a column (before 3.35), left empty.
    assert ("label" in columns) == (sqlite3.sqlite_version_info < (3, 35))
    assert group_columns(old_db) == {"compare": ("", "", labels["compare"]),
                                     "batch": (labels["batch"], "", ""),
                                     IMPORT_KIND: ("", labels[IMPORT_KIND], "")}
    (compare,) = store.list_groups("compare")
    assert compare.preset == "San Diego, CA"
    RunStore(old_db)  # opened again: nothing left to upgrade, nothing changed
    assert group_columns(old_db)["batch"] == (labels["batch"], "", "")


def test_the_history_lists_and_exports_every_old_run(old_db: Path) -> None:
    store = RunStore(old_db)
    runs = store.list_runs()
    assert [run.id for run in runs] == [7, 6, 5, 4, 3, 2, 1]
    assert [run.page for run in runs] == ["batch"] * 4 + ["compare"] * 2 + ["playground"]
    assert [run.status for run in runs] == [Status.LENGTH] + [Status.FINISHED] * 6
    playground = runs[-1]
    assert playground.text.startswith("## RECOMMENDATION") and playground.output_tokens
    assert (playground.sampling.max_tokens, playground.sampling.temperature) == (512, 0.3)
    assert runs[0].outcome.notes == ["imported from vLLM run_batch"]
    assert [run.id for run in store.group_runs(1)] == [2, 3]
    exported = json.loads(export_json(runs))
    assert exported[-1]["answer"] == playground.text
    assert exported[-1]["parameters"]["max_tokens"] == 512
    assert export_csv(runs).count("\n") > len(runs)
    # Runs from before the answer format (v7) read as markdown: no structured verdict.
    assert {run.answer_format for run in runs} == {AnswerFormat.MARKDOWN}
    assert {(row["answer_format"], row["structured_valid"]) for row in exported} == {
        ("markdown", None)}
    assert BatchSpec.from_json(store.group_summaries("batch")[0].group.spec).answer_format \
        == AnswerFormat.MARKDOWN
    reopened = Run.reopened_from(playground)
    assert reopened.status == Status.FINISHED and reopened.text == playground.text
    assert reopened.stats.output_tokens == playground.output_tokens


def test_the_history_page_reads_the_upgraded_file(old_db: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use_config(tmp_path, monkeypatch, {"llm": {"backend": "embedded"},
                                       "app": {"history_db": str(old_db)}})
    at = history_page()
    assert list(at.dataframe[0].value["id"]) == [7, 6, 5, 4, 3, 2, 1]


def test_an_old_batch_reads_as_it_stood_to_resume(old_db: Path) -> None:
    store = RunStore(old_db)
    (summary,) = store.group_summaries("batch")
    assert (summary.done, summary.failed, summary.running) == (2, 0, False)
    assert earlier_state(summary) == Status.COMPLETE
    spec = BatchSpec.from_json(summary.group.spec)
    assert [location.name for location in spec.scenarios] == ["San Diego, CA", "Phoenix, AZ"]
    answered, attempts = earlier_rows(store, summary.group.id)
    assert sorted(answered) == [0, 1] and attempts == {0: 1, 1: 1}


def test_the_batch_page_offers_an_old_batch_to_resume(old_db: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert RunStore(old_db).delete(5)  # its second row's answer gone: a row left to run
    use_config(tmp_path, monkeypatch, {"llm": {"backend": "embedded"},
                                       "app": {"history_db": str(old_db)}})
    at = batch_page()
    offered = at.selectbox(key="batch_resume")
    assert offered.value == 2
    assert offered.format_func(2).endswith("· ollama · llama3.1:8b · 1 done of 2 · stopped")


def test_an_old_import_is_not_imported_twice(old_db: Path) -> None:
    store = RunStore(old_db)
    found = earlier_import(store, files_digest(INPUT, OUTPUT))
    assert found is not None
    group, runs = found
    assert group.kind == IMPORT_KIND and [run.id for run in runs] == [6, 7]
    assert json.loads(group.summary)["runners"] == ["vLLM run_batch"]
    with pytest.raises(AlreadyImported, match=r"History runs #6–#7"):
        import_results(store, INPUT, OUTPUT)
    assert len(store.list_runs()) == 7
