"""The Batch page (AppTest of the real app) against the latency test server: preset
locations, an uploaded CSV with bad rows, the results table and summary, and Resume."""

from __future__ import annotations

import gzip
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Button, Element

from backends.sampling import Sampling
from backends.status import Status
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.location import COLUMNS
from studio.pv.locations_csv import MAX_ROWS
from studio.records.batch_files import export_jsonl
from studio.records.store import RunStore, process_owner
from studio.runs.batch import BatchSpec
from studio.runs.request import run_notes
from tests.conftest import batch_page
from tests.servers.latency import Fail, LatencyServer
from tests.servers.ollama import FakeOllama, Script

MODEL = "smollm2"
LOCATIONS = load_locations()
THREE = [location.name for location in LOCATIONS[:3]]
HEADER = ",".join(COLUMNS)
GOOD_ROW = '"{name}",Testland,true,30.5,0.9,6.2,40,0.2,5.1,0.25,12000,400,500,false'


@pytest.fixture
def server() -> Iterator[LatencyServer]:
    with LatencyServer(latency=0.2, failures={"Brokenville, ZZ": Fail(400)}) as running:
        yield running


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: LatencyServer) -> Path:
    path = tmp_path / "history.sqlite3"
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  backend: vllm\n  host: {server.url}\n  model: {MODEL}\n"
                      f"app:\n  history_db: {path}\n  fallback_to_embedded: false\n")
    monkeypatch.setenv("PV_STUDIO_CONFIG", str(config))
    return path


def button(at: AppTest, label: str) -> Button:
    (found,) = [b for b in at.button if b.label == label]
    return found


def upload(at: AppTest, content: bytes, name: str = "scenarios.csv") -> AppTest:
    at.radio(key="batch_source").set_value("Upload a CSV").run()
    at.file_uploader(key="batch_upload").set_value((name, content, "text/csv")).run()
    assert not at.exception, at.exception
    return at


def csv_bytes(*rows: str) -> bytes:
    return ("\n".join([HEADER, *rows]) + "\n").encode()


def texts(elements: Iterable[Element]) -> str:
    """The messages' text as shown: markdown escapes (of untrusted file content) removed."""
    shown = "\n".join(str(element.value) for element in elements)
    return re.sub(r"\\(.)", r"\1", shown)


def test_three_presets_at_concurrency_three(server: LatencyServer, db: Path) -> None:
    at = batch_page()
    at.multiselect(key="batch_locations").set_value(THREE)
    at.number_input(key="batch_concurrency").set_value(3)
    button(at, "Run batch").click().run()
    assert not at.exception, at.exception

    table = at.dataframe[0].value
    assert list(table["location"]) == THREE
    assert list(table["status"]) == ["Finished"] * 3  # the statistics' words
    assert list(table["output tokens"]) == [200] * 3
    assert all(seconds >= 0.2 for seconds in table["time s"])
    metrics = {metric.label: metric.value for metric in at.metric}
    assert {"Wall time", "Sum of row times", "Speedup", "Throughput", "Failures"} <= set(metrics)
    assert metrics["Failures"] == "0"
    assert metrics["Wall time"].endswith(" s") and metrics["Throughput"].endswith(" tok/s")
    assert metrics["Speedup"].endswith("×") and float(metrics["Speedup"].rstrip("×")) > 0
    assert server.requests == Counter(THREE)
    assert 2 <= server.max_seen <= 3  # rows went together, never more than 3 at once
    assert "3 done · 0 failed" in at.get("progress")[0].proto.text
    downloads = [getattr(element, "label", "") for element in at.get("download_button")]
    assert downloads == ["⬇ Batch file (JSONL)", "⬇ Table (CSV)", "⬇ Answers (ZIP)"]

    # Every row is in the history, under one batch group that can be resumed.
    store = RunStore(db)
    (group,) = store.list_groups("batch")
    spec = BatchSpec.from_json(group.spec)
    assert [s.name for s in spec.scenarios] == THREE
    assert (spec.backend, spec.host, spec.model, spec.concurrency) == ("vllm", server.url,
                                                                       MODEL, 3)
    assert spec.system == next(iter(load_system_prompts().values()))
    runs = store.group_runs(group.id)
    assert [(run.position, run.preset, run.status) for run in runs] == [
        (index, name, Status.FINISHED) for index, name in enumerate(THREE)]


def test_uploaded_csv_skips_bad_rows_and_runs_the_good_ones(server: LatencyServer,
                                                             db: Path) -> None:
    content = csv_bytes(GOOD_ROW.format(name="Testville, ZZ"),
                        GOOD_ROW.format(name="Badtown, ZZ").replace("30.5", "lots"),
                        GOOD_ROW.format(name="Brokenville, ZZ"),
                        GOOD_ROW.format(name="Shortrow, ZZ").rsplit(",", 3)[0])
    at = upload(batch_page(), content)
    warning = texts(at.warning)
    assert "2 rows skipped" in warning
    assert "row 3: column 'avg_daily_kwh': 'lots' is not a number" in warning
    assert "row 5: has 11 values but the header has 15 columns" in warning
    assert "2 scenario(s) ready." in texts(at.main.success)
    assert not button(at, "Run batch").disabled

    at.number_input(key="batch_concurrency").set_value(2)
    button(at, "Run batch").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["location"]) == ["Testville, ZZ", "Brokenville, ZZ"]
    assert list(table["status"]) == ["Finished", "Failed"]  # a 400 is not retried
    assert "HTTP 400" in table["error"][1]
    assert {metric.label: metric.value for metric in at.metric}["Failures"] == "1"
    assert server.requests == Counter(["Testville, ZZ", "Brokenville, ZZ"])
    # The bar counts the rows that ended; the failure is said apart (one answered: amber).
    assert at.get("progress")[0].proto.text.startswith("2 of 2 rows ended: 1 done · 1 failed")
    assert "1 of 2 rows failed: the table's error column says why." in texts(at.warning)
    assert not at.error


def test_a_batch_whose_rows_all_failed_says_so_in_red(server: LatencyServer, db: Path) -> None:
    """A full bar read "0 done · 30 failed" in the app's amber, as if all was well."""
    at = upload(batch_page(), csv_bytes(GOOD_ROW.format(name="Brokenville, ZZ")))
    button(at, "Run batch").click().run()
    assert not at.exception, at.exception
    assert at.get("progress")[0].proto.text.startswith("1 of 1 row ended: 0 done · 1 failed")
    assert [e.value for e in at.error] == ["The only row failed: the table's error column "
                                           "says why."]
    table = at.dataframe[0].value
    assert list(table["status"]) == ["Failed"]
    # No figure came back: dashes, never Python's None; no empty optional column.
    assert list(table["output tokens"]) == ["–"]
    assert "thinking s" not in table.columns and "server_tokens_per_s" not in table.columns
    assert "None" not in table.to_string()


@pytest.mark.parametrize(("content", "message"), [
    (csv_bytes(GOOD_ROW.format(name="Testville, ZZ")).replace(b",has_ev", b""),
     "The header lacks 1 of the 14 required columns: has_ev."),
    (HEADER.encode() + b"\n", "The file has a header but no data rows."),
    (b"\n\n", "The file is empty"),
], ids=["missing-column", "header-only", "blank-lines"])
def test_uploads_with_nothing_to_run(server: LatencyServer, db: Path, content: bytes,
                                     message: str) -> None:
    """A problem of the whole file is one error about the file, never a 'row' problem."""
    at = upload(batch_page(), content)
    assert message in texts(at.error)
    assert "row 1" not in texts([*at.error, *at.warning])
    assert "row 0" not in texts([*at.error, *at.warning])
    assert "ready" not in texts(at.main.success)
    assert button(at, "Run batch").disabled
    assert server.total_requests() == 0


def test_an_empty_file_is_reported(server: LatencyServer, db: Path) -> None:
    at = upload(batch_page(), b"")
    assert at.file_uploader(key="batch_upload").value is not None  # a 0-byte file arrived
    assert "empty" in texts([*at.warning, *at.error])


def test_too_many_rows_loads_the_first_ones(server: LatencyServer, db: Path) -> None:
    rows = [GOOD_ROW.format(name=f"Town {index}, ZZ") for index in range(MAX_ROWS + 5)]
    at = upload(batch_page(), csv_bytes(*rows))
    assert (f"Too many rows: the first {MAX_ROWS} locations are loaded, 5 more were left out."
            in texts(at.info))
    assert not at.warning  # no row is called bad
    assert f"{MAX_ROWS} scenario(s) ready." in texts(at.main.success)


def test_a_semicolon_separated_file_is_read(server: LatencyServer, db: Path) -> None:
    content = csv_bytes(GOOD_ROW.format(name="Testville ZZ")).replace(b",", b";")
    at = upload(batch_page(), content)
    assert "Read as semicolon-separated values." in texts(at.info)
    assert "1 scenario(s) ready." in texts(at.main.success)


def test_hostile_file_content_is_shown_as_text(server: LatencyServer, db: Path) -> None:
    """A cell with markdown (an image that would load from elsewhere, a link) is reported as
    typed, never rendered."""
    hostile = "![x](http://evil.example/pixel.png) [click](javascript:alert(1))"
    content = csv_bytes(GOOD_ROW.format(name="Testville, ZZ").replace("30.5", hostile))
    at = upload(batch_page(), content)
    (warning,) = at.warning
    assert "![x](http" not in warning.value and "](javascript" not in warning.value
    assert hostile in texts(at.warning)


def test_a_file_over_the_size_limit_is_refused(server: LatencyServer, db: Path) -> None:
    row = GOOD_ROW.format(name="Town, ZZ")
    content = csv_bytes(*[row.replace("Town", f"Town {index}") for index in range(16_000)])
    assert len(content) > 1_000_000
    at = upload(batch_page(), content)
    assert "the limit is 1,000,000" in texts(at.error)
    assert "ready" not in texts(at.main.success)
    assert button(at, "Run batch").disabled


def test_a_file_that_is_not_utf8_is_refused(server: LatencyServer, db: Path) -> None:
    content = csv_bytes(GOOD_ROW.format(name="Zürich, CH")).decode().encode("latin-1")
    at = upload(batch_page(), content)
    assert "is not UTF-8 text" in texts(at.error)
    assert button(at, "Run batch").disabled


def test_resume_runs_only_the_rows_not_finished(server: LatencyServer, db: Path) -> None:
    """An earlier session finished row 0 of three and died: Resume asks only for 1 and 2."""
    at = batch_page()
    store = RunStore(db)
    spec = BatchSpec(scenarios=LOCATIONS[:3], backend="vllm", host=server.url, model=MODEL,
                     system="You are a PV analyst.", concurrency=2)
    group = store.create_group("batch", spec=spec.to_json())
    run_id = store.start_run(spec.request(LOCATIONS[0]), "batch", group, 0)
    store.finish_run(run_id, "## Earlier answer\n\nInstall 12 panels.", Status.FINISHED, None,
                     {"output_tokens": 150, "total_time_s": 2.0})
    at.run()  # the expander now lists the earlier batch
    (label,) = at.selectbox(key="batch_resume").options
    assert label.startswith(f"#{group} ·")
    assert label.endswith(f"vllm · {MODEL} · 1 done of 3 · stopped")
    button(at, "Resume").click().run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert list(table["status"]) == ["Finished"] * 3  # the statistics' words
    assert list(table["output tokens"]) == [150, 200, 200]
    # The figures say what they cover: this session's two rows, not the three done.
    assert "3 done (1 before the resume)" in at.get("progress")[0].proto.text
    assert any("over the 2 rows answered since the resume" in caption.value
               and "the 1 row answered before it" in caption.value for caption in at.caption)
    assert server.requests == Counter(THREE[1:])  # the finished row is not asked again


def test_the_header_describes_a_resumed_batchs_own_settings(server: LatencyServer,
                                                            db: Path) -> None:
    """A resumed batch runs at its stored max tokens and temperature, not the sidebar's: the
    header says so, and what a new batch would take."""
    at = batch_page()
    assert at.caption[0].value.startswith("Backend, model and parameters come from the sidebar")
    spec = BatchSpec(scenarios=LOCATIONS[:2], backend="vllm", host=server.url, model=MODEL,
                     system="You are a PV analyst.",
                     sampling=Sampling(max_tokens=100, temperature=0.7))
    seed_batch(RunStore(db), spec, [0])
    at.run()
    button(at, "Resume").click().run()
    assert not at.exception, at.exception
    sidebar = at.session_state["max_tokens"]
    assert sidebar != 100
    header = texts([at.caption[0]])
    assert header.startswith(f"The batch below ran with its own settings: vllm · {MODEL} · "
                             "max tokens 100 · temperature 0.7 · Markdown report.")
    assert f"A new batch takes the sidebar's: vllm · {MODEL} · max tokens {sidebar}" in header


def test_a_batch_runners_results_are_imported_into_history(server: LatencyServer,
                                                           db: Path) -> None:
    """The JSONL the page exports, answered by a batch runner, uploaded back: History runs."""
    at = batch_page()
    at.multiselect(key="batch_locations").set_value(THREE).run()
    at = import_files(at, *three_results("r", host=server.url), sent_name="pv-batch-input.jsonl")
    assert "Imported 3 results into History" in texts(at.success)
    table = at.dataframe[0].value  # statuses in words, a dash for a figure not reported
    assert list(table["status"]) == ["Finished"] * 3
    assert "None" not in table.to_string()
    runs = RunStore(db).list_runs()
    assert sorted(run.text for run in runs) == [f"Install {n} panels." for n in (10, 11, 12)]
    assert {run.preset for run in runs} == set(THREE)


def test_a_results_file_of_another_batch_is_refused_clearly(server: LatencyServer,
                                                            db: Path) -> None:
    at = batch_page()
    at.file_uploader(key="batch_import_input").set_value(
        ("in.jsonl", b'{"custom_id": "a", "body": {"messages": [{"role": "user", '
                     b'"content": "x"}]}}\n', "application/jsonl")).run()
    at.file_uploader(key="batch_import_output").set_value(
        ("out.jsonl", b'{"custom_id": "zzz"}\n', "application/jsonl")).run()
    at = button(at, "Import into History").click().run()
    assert not at.exception, at.exception
    assert "custom_id 'zzz' is not in the batch input file" in texts(at.error)
    assert RunStore(db).list_runs() == []


def three_results(runner_id: str = "vllm-", host: str = "") -> tuple[bytes, bytes]:
    """The page's batch file of three presets and a runner's answers to it."""
    spec = BatchSpec(backend="vllm", host=host, model=MODEL,
                     scenarios=[loc for loc in LOCATIONS if loc.name in THREE],
                     system=next(iter(load_system_prompts().values())))
    exported = export_jsonl(spec)
    results = "".join(json.dumps({
        "id": f"{runner_id}{index}", "custom_id": json.loads(line)["custom_id"], "error": None,
        "response": {"status_code": 200, "request_id": f"q{index}", "body": {
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": f"Install {index + 10} panels."},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2800, "completion_tokens": 6}}}}) + "\n"
        for index, line in enumerate(exported.splitlines()))
    return exported.encode(), results.encode()


def import_files(at: AppTest, sent: bytes, results: bytes, sent_name: str = "in.jsonl",
                 results_name: str = "results.jsonl") -> AppTest:
    at.file_uploader(key="batch_import_input").set_value(
        (sent_name, sent, "application/jsonl")).run()
    at.file_uploader(key="batch_import_output").set_value(
        (results_name, results, "application/jsonl")).run()
    at = button(at, "Import into History").click().run()
    assert not at.exception, at.exception
    return at


def test_an_import_says_where_the_results_came_from(server: LatencyServer, db: Path) -> None:
    at = import_files(batch_page(), *three_results("batch_req_"))
    assert ("Imported 3 results into History (runs #1–#3, marked imported from OpenAI Batch "
            "API); 0 failed.") in texts(at.success)
    assert {note for run in RunStore(db).list_runs() for note in run_notes(run.stats)} == {
        "imported from OpenAI Batch API"}


def test_a_binary_results_file_is_refused_naming_it(server: LatencyServer, db: Path) -> None:
    """A compressed results file under the .jsonl name: refused by name, as the CSV is."""
    sent, results = three_results()
    at = import_files(batch_page(), sent, gzip.compress(results), results_name="out.jsonl")
    shown = texts(at.error)
    assert shown.startswith("out.jsonl is not UTF-8 text: a batch runner writes UTF-8 JSON")
    assert "codec" not in shown and "0x" not in shown
    assert RunStore(db).list_runs() == []


def test_the_same_files_twice_are_refused_naming_the_first_import(server: LatencyServer,
                                                                 db: Path) -> None:
    sent, results = three_results()
    at = import_files(batch_page(), sent, results)
    assert "marked imported from vLLM run_batch" in texts(at.success)
    at = button(at, "Import into History").click().run()
    assert "Imported" not in texts(at.success)
    shown = texts(at.error)
    assert "These two files were imported already" in shown
    assert "History runs #1–#3 (3 runs, import #1)" in shown
    assert len(RunStore(db).list_runs()) == 3


def test_a_repeated_custom_id_is_reported(server: LatencyServer, db: Path) -> None:
    sent, results = three_results()
    first = json.loads(results.splitlines()[0])
    failed = {**first, "response": {"status_code": 500, "body": {"error": {"message": "busy"}}}}
    at = import_files(batch_page(), sent, json.dumps(failed).encode() + b"\n" + results)
    assert "Imported 3 results" in texts(at.success)
    (warning,) = at.warning
    assert texts([warning]) == (
        "1 custom_id has more than one result; one is kept (an answer before an error, else "
        "the later line):\n\n"
        f"- {first['custom_id']}: line 2 kept (an answer, not an error); line 1 left out")
    assert len(RunStore(db).list_runs()) == 3


@pytest.mark.parametrize("answered", [2, 1], ids=["one-missing", "two-missing"])
def test_rows_without_a_result_are_counted_in_words(server: LatencyServer, db: Path,
                                                    answered: int) -> None:
    sent, results = three_results()
    kept = results.splitlines(keepends=True)[:answered]
    at = import_files(batch_page(), sent, b"".join(kept))
    assert f"Imported {answered} result{'s' if answered != 1 else ''} into" in texts(at.success)
    missing = [json.loads(line)["custom_id"] for line in sent.splitlines()[answered:]]
    (warning,) = at.warning
    said = "1 row has" if len(missing) == 1 else f"{len(missing)} rows have"
    assert texts([warning]) == f"{said} no result: {', '.join(missing)}"


def test_a_deeply_nested_results_line_is_a_clear_message(server: LatencyServer,
                                                         db: Path) -> None:
    sent, results = three_results()
    nested = b"[" * 50_000 + b"]" * 50_000
    at = import_files(batch_page(), sent, results + nested + b"\n", results_name="deep.jsonl")
    assert texts(at.error) == ("Batch output (deep.jsonl), line 4: JSON nested too deeply to "
                               "read (a batch line is one flat request or result).")
    assert RunStore(db).list_runs() == []


def test_a_european_excel_csv_is_read(server: LatencyServer, db: Path) -> None:
    fixture = Path(__file__).parent / "fixtures" / "locations-excel-de.csv"
    at = upload(batch_page(), fixture.read_bytes(), fixture.name)
    assert texts(at.info) == ("Read as semicolon-separated values with decimal commas "
                              "('53,76' is 53.76; '1.234,5' is 1234.5).")
    assert not at.warning and not at.error
    assert "3 scenario(s) ready." in texts(at.main.success)


def seed_batch(store: RunStore, spec: BatchSpec, answered: list[int]) -> int:
    group = store.create_group("batch", spec=spec.to_json())
    for index in answered:
        run_id = store.start_run(spec.request(spec.scenarios[index]), "batch", group, index)
        store.finish_run(run_id, "## Earlier answer\n\nInstall 12 panels.", Status.FINISHED, None,
                         {"output_tokens": 150, "total_time_s": 2.0})
    return group


def test_an_interrupted_batch_is_shown_and_a_complete_one_is_not_offered(
        server: LatencyServer, db: Path) -> None:
    """A batch whose process was killed reads 'Interrupted' on the page, outside Resume; a
    complete batch is not in the Resume list."""
    store = RunStore(db)
    spec = BatchSpec(scenarios=LOCATIONS[:3], backend="vllm", host=server.url, model=MODEL,
                     system="You are a PV analyst.", concurrency=2)
    complete = seed_batch(store, spec, [0, 1, 2])
    killed = seed_batch(store, spec, [0])
    assert store.claim_group(killed)
    host, _, start = process_owner().rsplit(":", 2)
    with sqlite3.connect(store.path) as conn:  # its process died (SIGKILL) while it ran
        conn.execute("UPDATE groups SET owner = ? WHERE id = ?",
                     (f"{host}:999999999:{start}", killed))
    at = batch_page()
    (warning,) = [w.value for w in at.warning if "Interrupted" in w.value]
    assert warning.startswith(f"Interrupted: \\#{killed} ·")
    assert "1 done of 3 · interrupted" in texts([*at.warning])
    options = at.selectbox(key="batch_resume").options
    assert len(options) == 1 and options[0].startswith(f"#{killed} ·")
    assert options[0].endswith("· interrupted")
    assert not any(option.startswith(f"#{complete} ") for option in options)


@pytest.fixture
def small_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOllama]:
    with FakeOllama(trained_context={"llama3.1:8b": 4096},
                    script=Script(tokens=["Install", " 12", " panels", "."])) as running:
        config = tmp_path / "config.yaml"
        config.write_text(f"llm:\n  backend: ollama\n  host: {running.url}\n"
                          f"  model: llama3.1:8b\napp:\n  history_db: {tmp_path / 'h.sqlite3'}\n"
                          "  fallback_to_embedded: false\n")
        monkeypatch.setenv("PV_STUDIO_CONFIG", str(config))
        yield running


def test_a_resume_checks_the_window_and_keeps_the_rows_flags(small_window: FakeOllama,
                                                             tmp_path: Path) -> None:
    """Row 1 was run anyway over the window and answered, then the batch stopped. Resume
    checks the rows left (row 2 only) before sending anything; run anyway, both rows are
    flagged, the one answered before included."""
    store = RunStore(tmp_path / "h.sqlite3")
    spec = BatchSpec(scenarios=LOCATIONS[:2], backend="ollama", host=small_window.url,
                     model="llama3.1:8b", system="You are a PV analyst.",
                     sampling=Sampling(max_tokens=2048)).flag([0])
    group = seed_batch(store, spec, [0])
    at = batch_page()
    button(at, "Resume").click().run()
    assert not at.exception, at.exception
    warning = texts(at.warning)
    assert "The context window is too small." in warning
    assert f"#2 {LOCATIONS[1].name}" in warning and f"#1 {LOCATIONS[0].name}" not in warning
    assert small_window.chat_requests == []  # held back: nothing sent
    labels = [b.label for b in at.button]
    assert "Run anyway" in labels and not [b for b in labels if b.startswith("Lower max")]
    # Only Run anyway and Cancel are offered: the sentence names no other choice.
    assert "Run it anyway as it was defined, or cancel." in warning
    assert "shorten the prompt" not in warning.lower()
    button(at, "Run anyway").click().run()
    assert not at.exception, at.exception
    batch = at.session_state["batch"]
    assert batch.wait(30)
    at.run()
    assert len(small_window.chat_requests) == 1  # the row left, not the one answered before
    assert [row["notes"] for row in batch.table()] == [
        "over the context window (flagged before the start)"] * 2
    stored = store.get_group(group)
    assert stored is not None and BatchSpec.from_json(stored.spec).over_window == (0, 1)
    assert "The context window is too small." not in texts(at.warning)
