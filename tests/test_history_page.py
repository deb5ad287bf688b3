"""The History page (AppTest) on a seeded database: filters, reading, side by side, export."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import cast

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Element

from backends.sampling import Sampling
from studio.pv.library import load_locations
from studio.records.batch_files import export_jsonl, import_results
from studio.records.store import RunStore
from studio.runs.batch import BatchSpec
from studio.runs.request import RunRequest
from tests.conftest import caption_lines, history_page


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RunStore:
    db = tmp_path / "history.sqlite3"
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  backend: embedded\napp:\n  history_db: {db}\n")
    monkeypatch.setenv("PV_STUDIO_CONFIG", str(config))
    store = RunStore(db)
    rows = [("ollama", "llama3.1:8b", "San Diego, CA", "finished", "Install 31 panels."),
            ("vllm", "smollm2", "Phoenix, AZ", "stopped", "Partial answer about kWh"),
            ("embedded", "SmolLM2", "San Diego, CA", "error", "")]
    for backend, model, preset, status, text in rows:
        request = RunRequest(backend=backend, host="http://h", model=model, system="system",
                             prompt=f"prompt for {preset}",
                             sampling=Sampling(max_tokens=300, temperature=0.3),
                             preset=preset)
        run_id = store.start_run(request, "playground")
        store.finish_run(run_id, text, status, "boom" if status == "error" else None,
                         {"output_tokens": 12, "total_time_s": 2.5})
    return store


def shown_ids(at: AppTest) -> list[int]:
    return list(at.dataframe[0].value["id"])


def test_lists_newest_first(seeded: RunStore) -> None:
    at = history_page()
    assert shown_ids(at) == [3, 2, 1]
    assert "Runs 1–3 of 3, newest first." in at.caption[0].value


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("history_backend", "vllm", [2]),
    ("history_model", "llama3.1:8b", [1]),
    ("history_preset", "San Diego, CA", [3, 1]),
    ("history_status", "error", [3]),
])
def test_filters(seeded: RunStore, key: str, value: str, expected: list[int]) -> None:
    at = history_page()
    at.selectbox(key=key).set_value(value).run()
    assert shown_ids(at) == expected


def test_text_search_in_prompts_and_answers(seeded: RunStore) -> None:
    at = history_page()
    at.text_input(key="history_search").set_value("31 PANELS").run()
    assert shown_ids(at) == [1]
    at.text_input(key="history_search").set_value("phoenix").run()
    assert shown_ids(at) == [2]


def test_one_run_read_in_full(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([2]).run()
    assert not at.exception
    assert any("Partial answer about kWh" in m.value for m in at.markdown)
    assert {m.label: m.value for m in at.metric}["Stop reason"] == "Stopped"
    assert any(b.label == "Open in Playground" for b in at.button)


def test_one_run_has_the_grounding_line_of_the_side_by_side_view(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([1]).run()
    assert not at.exception
    assert any("Install :red-background[31 panels]." in m.value for m in at.markdown)
    assert caption_lines(at, "Grounding:") == [
        "Grounding: 0 grounded · 1 not found (not found: highlighted)"]


def test_a_cut_prompts_run_read_alone_is_not_graded(seeded: RunStore) -> None:
    request = RunRequest(backend="ollama", host="http://h", model="m", system="s",
                         prompt="prompt", sampling=Sampling(max_tokens=10, temperature=0.1))
    run_id = seeded.start_run(request, "playground")
    seeded.finish_run(run_id, "Install 31 panels.", "finished", None,
                      {"prompt_truncated": True, "prompt_tokens": 2047})
    at = history_page()
    at.multiselect(key="history_open").set_value([run_id]).run()
    assert caption_lines(at, "Grounding:") == [
        "Grounding: prompt cut: not graded"]


def test_the_two_run_picker_offers_no_select_all(seeded: RunStore) -> None:
    """Streamlit's multiselect offers "Select all" by default: not for picking two."""
    at = history_page()
    picker = at.multiselect(key="history_open")
    assert picker.proto.max_selections == 2 and picker.proto.select_all == 0


def test_the_table_shows_statuses_in_words_and_no_none(seeded: RunStore) -> None:
    run_id = seeded.start_run(RunRequest(backend="ollama", host="http://h", model="m",
                                         system="s", prompt="p",
                                         sampling=Sampling(max_tokens=10, temperature=0.1)),
                                         "playground")
    seeded.finish_run(run_id, "cut", "length", None, {})  # no figures recorded
    table = history_page().dataframe[0].value
    row = table[table["id"] == run_id].iloc[0]
    assert row["status"] == "Hit max tokens"
    assert row["output tokens"] == "–" and row["total s"] == "–"
    assert "None" not in table.to_string()


def test_two_runs_side_by_side(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([1, 2]).run()
    texts = " ".join(m.value for m in at.markdown)
    # 31 is in neither prompt: the grounding check marks it, as on the Compare page.
    assert "Install :red-background[31 panels]." in texts
    assert "Partial answer about kWh" in texts
    assert any("Grounding: 0 grounded · 1 not found" in line
               for line in caption_lines(at, "Grounding:"))


def test_open_in_playground_takes_the_runs_settings(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([1]).run()
    (button,) = [b for b in at.button if b.label == "Open in Playground"]
    button.click().run()
    assert not at.exception
    assert at.session_state["backend_kind"] == "ollama"
    assert at.session_state["model_ollama"] == "llama3.1:8b"
    assert at.session_state["max_tokens"] == 300
    assert at.session_state["playground_user"] == "prompt for San Diego, CA"
    assert [t.value for t in at.title] == ["☀️ PV Playground"]


def test_open_in_playground_shows_that_run_as_it_ended(seeded: RunStore) -> None:
    """The Playground's panel holds the reopened run, said so, with its own answer, figures,
    grounding and downloads; not the Playground's last run, not an empty panel."""
    request = RunRequest(backend="vllm", host="http://h", model="smollm2", system="system",
                         prompt="prompt for Phoenix, AZ: 53.76 kWh a day",
                         sampling=Sampling(max_tokens=300, temperature=0.3), preset="Phoenix, AZ")
    run_id = seeded.start_run(request, "playground")
    seeded.finish_run(run_id, "Use 53.76 kWh a day; install 31 panels.", "length", None,
                      {"output_tokens": 300, "total_time_s": 4.25, "prompt_tokens": 262,
                       "done_reason": "length", "context_window": 2048})
    at = history_page()
    at.multiselect(key="history_open").set_value([run_id]).run()
    at = click(at, "Open in Playground")
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["☀️ PV Playground"]
    (origin,) = [i.value for i in at.info if "Reopened from History" in i.value]
    assert f"run #{run_id} of " in origin and "smollm2" in origin
    assert any("install :red-background[31 panels]" in m.value for m in at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Prompt tokens"] == "262" and metrics["Output tokens"] == "300"
    assert metrics["Total time"] == "4.25 s" and metrics["Context window"] == "2,048"
    assert metrics["Stop reason"] == "Hit max tokens"
    assert any("The answer hit the max tokens limit" in w.value for w in at.warning)
    assert any(line.startswith("Grounding: 1 grounded · 1 not found")
               for line in caption_lines(at, "Grounding:"))
    labels = [b.label for b in cast("list[Element]", at.get("download_button"))]
    assert labels == ["⬇ Markdown", "⬇ HTML", "⬇ JSON"]


def test_a_reopened_error_run_shows_its_error(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([3]).run()
    at = click(at, "Open in Playground")
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == ["boom"]
    assert {m.label: m.value for m in at.metric}["Stop reason"] == "Error"


def click(at: AppTest, label: str) -> AppTest:
    (button,) = [b for b in at.button if b.label == label]
    return button.click().run()


def test_delete_asks_first(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([2]).run()
    at = click(at, "Delete…")
    assert "Delete run #2 for good?" in at.warning[0].value
    assert seeded.get(2) is not None  # nothing deleted yet
    at = click(at, "Keep it")
    assert not at.warning and seeded.get(2) is not None
    at = click(click(at, "Delete…"), "Yes, delete")
    assert shown_ids(at) == [3, 1]
    assert seeded.get(2) is None


def test_status_filter_speaks_the_tables_words(seeded: RunStore) -> None:
    at = history_page()
    status = at.selectbox(key="history_status")
    assert {"Finished", "Stopped", "Error"} <= set(status.options)
    assert "finished" not in status.options


def test_side_by_side_shows_an_error_runs_error(seeded: RunStore) -> None:
    at = history_page()
    at.multiselect(key="history_open").set_value([3, 1]).run()
    assert [e.value for e in at.error] == ["boom"]


def test_every_run_is_reachable_beyond_the_first_page(seeded: RunStore) -> None:
    for index in range(250):
        request = RunRequest(backend="ollama", host="http://h", model="m", system="s",
                             prompt=f"bulk {index}",
                             sampling=Sampling(max_tokens=10, temperature=0.1))
        seeded.finish_run(seeded.start_run(request, "batch"), f"answer {index}", "finished")
    at = history_page()
    assert "Runs 1–100 of 253, newest first." in at.caption[0].value
    assert len(shown_ids(at)) == 100
    at.number_input(key="history_page").set_value(3).run()
    assert "Runs 201–253 of 253" in at.caption[0].value
    assert shown_ids(at)[-3:] == [3, 2, 1]
    # Any run opens by its id, whatever page is shown.
    at.number_input(key="history_page").set_value(1).run()
    at.number_input(key="history_open_id").set_value(1).run()
    assert at.multiselect(key="history_open").value == [1]
    # The answer, its figures not in the data highlighted (the grounding check).
    assert any("Install :red-background[31 panels]." in m.value for m in at.markdown)
    at.number_input(key="history_open_id").set_value(9999).run()
    assert "There is no run #9999." in at.warning[0].value
    labels = [b.label for b in cast("list[Element]", at.get("download_button"))]
    assert labels == ["⬇ Export CSV (253 runs)", "⬇ Export JSON (253 runs)"]


def test_export_buttons_serve_the_filtered_list(seeded: RunStore) -> None:
    at = history_page()
    at.selectbox(key="history_preset").set_value("San Diego, CA").run()
    # The page exports exactly the filtered list it shows: the same query, through the store.
    from studio.records.store import export_csv

    rows = list(csv.DictReader(io.StringIO(export_csv(seeded.list_runs(
        preset="San Diego, CA")))))
    assert [int(r["id"]) for r in rows] == shown_ids(at) == [3, 1]
    assert len(at.get("download_button")) == 2


def import_one_result(store: RunStore) -> int:
    """One preset's row, answered by vLLM's run_batch, imported into ``store``: its run id."""
    spec = BatchSpec(backend="vllm", host="", model="smollm2", scenarios=load_locations()[:1],
                     system="system")
    exported = export_jsonl(spec)
    line = json.dumps({"id": "vllm-abc", "custom_id": json.loads(exported)["custom_id"],
                       "error": None, "response": {"status_code": 200, "body": {
                           "choices": [{"message": {"content": "Install 31 panels."},
                                        "finish_reason": "stop"}]}}})
    (run_id,) = import_results(store, exported, line).run_ids
    return run_id


def test_an_imported_run_says_so_in_the_list_and_when_read(seeded: RunStore) -> None:
    """A batch runner's result is no live run: the table's notes and the run itself say
    where it came from."""
    run_id = import_one_result(seeded)
    at = history_page()
    table = at.dataframe[0].value
    notes = dict(zip(table["id"], table["notes"], strict=True))
    assert notes[run_id] == "imported from vLLM run_batch" and notes[1] == ""
    at.multiselect(key="history_open").set_value([run_id]).run()
    assert not at.exception
    shown = [re.sub(r"\\(.)", r"\1", c.value) for c in at.caption]  # markdown escapes off
    assert any(c.startswith("📥 Imported from vLLM run_batch: recorded from a batch runner's "
                            "results file") for c in shown)


def test_an_imported_run_opened_in_the_playground_still_says_so(seeded: RunStore) -> None:
    """History -> Open in Playground keeps the imported mark: the run was not run by this
    app, so its missing times are not a live run's; its JSON download keeps the mark too."""
    run_id = import_one_result(seeded)
    at = history_page()
    at.multiselect(key="history_open").set_value([run_id]).run()
    at = click(at, "Open in Playground")
    assert not at.exception, at.exception
    assert [t.value for t in at.title] == ["☀️ PV Playground"]
    shown = [re.sub(r"\\(.)", r"\1", c.value) for c in at.caption]
    assert any(c.startswith("📥 Imported from vLLM run_batch: recorded from a batch runner's "
                            "results file") and "not run by this app" in c for c in shown)
    run = at.session_state["playground_run"]
    assert run.to_dict()["statistics"]["imported_from"] == "vLLM run_batch"
