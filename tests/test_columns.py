"""One record for what a run produced: the Outcome a live run, the history, a Batch row and an
imported row share; one Status vocabulary; one serializer for the rows, the JSON and the CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from pathlib import Path

from backends.sampling import DEFAULT_SAMPLING, Sampling
from backends.status import Status
from backends.stream import GenerationStats
from studio.records.columns import JSON_KEYS, columns_of, json_of, record_of, request_columns
from studio.records.store import CSV_COLUMNS, RunStore, StoredRun, export_csv, export_json
from studio.runs.request import IMPORTED_FROM, Outcome, RunRequest, status_label

REQUEST = RunRequest(backend="vllm", host="http://ana:S3cret@gpu:8000", model="smollm2",
                     sampling=Sampling(max_tokens=300, temperature=0.4, repeat_penalty=1.1,
                                       think="high"),
                     sse=True, system="You size PV systems.", prompt="Berlin, 40 m²",
                     preset="Berlin, DE")
STATS = GenerationStats(time_to_first_token_s=0.5, total_time_s=4.0, prompt_tokens=120,
                        output_tokens=40, done_reason=Status.LENGTH, fragments=8,
                        server_load_s=2.0)
OUTCOME = Outcome(Status.LENGTH, "Install 12 panels", "12 × 400 W", None,
                  {**STATS.to_dict(), IMPORTED_FROM: "vLLM run_batch"})


def test_the_status_words_derive_from_the_enum() -> None:
    assert {status.value: status_label(status) for status in Status} == {
        "stop": "Stop", "length": "Hit max tokens", "cancelled": "Cancelled",
        "error": "Error", "repetition": "Repetition", "running": "Running",
        "finished": "Finished", "stopped": "Stopped", "interrupted": "Interrupted",
        "pending": "Waiting", "retrying": "Retrying", "failed": "Failed",
        "complete": "Complete", "ended": "Ended"}
    assert status_label("made-up") == "Made-up"  # a value of a newer app: shown, not lost


def test_an_answered_runs_status_comes_from_its_stop_reason() -> None:
    assert [Status.of_answer(reason) for reason in (
        "stop", "length", "repetition", None, "tool_calls")] == [
        Status.FINISHED, Status.LENGTH, Status.REPETITION, Status.FINISHED, Status.FINISHED]


def test_an_outcome_reads_back_as_it_was_written() -> None:
    columns = columns_of(OUTCOME)
    assert set(columns) == {"status", "answer", "thinking", "error", "statistics"}
    assert record_of(Outcome, columns) == OUTCOME
    assert record_of(Outcome, {**columns, "status": "length"}).status is Status.LENGTH
    assert OUTCOME.stats == STATS
    assert OUTCOME.notes == ["imported from vLLM run_batch", "cold start"]


def test_a_request_is_written_without_credentials_and_read_back() -> None:
    columns = request_columns(REQUEST)
    assert columns["host"] == "http://gpu:8000"
    assert (columns["system_prompt"], columns["user_prompt"]) == (REQUEST.system, REQUEST.prompt)
    assert (columns["max_tokens"], columns["think"]) == (300, "high")  # a column per setting
    # As SQLite gives it back: the flag as 0/1, v1's missing parameters as NULL.
    read = record_of(RunRequest, {**columns, "sse": 1, "max_tokens": None})
    assert read.sse is True and read.sampling.max_tokens == DEFAULT_SAMPLING.max_tokens
    assert read == replace(REQUEST, host="http://gpu:8000", sampling=replace(
        REQUEST.sampling, max_tokens=DEFAULT_SAMPLING.max_tokens))


def test_the_history_keeps_an_outcome_whole(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    run_id = store.start_run(REQUEST, "playground")
    running = store.get(run_id)
    assert running is not None and running.outcome == Outcome()
    store.finish(run_id, OUTCOME)
    stored = store.get(run_id)
    assert stored is not None and stored.outcome == OUTCOME
    assert stored.to_request() == replace(REQUEST, host="http://gpu:8000")


def test_the_json_and_the_csv_name_the_same_columns(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "history.sqlite3")
    store.finish(store.start_run(REQUEST, "compare"), OUTCOME)
    runs = store.list_runs()
    (run,) = runs
    columns = run.columns()
    # Every CSV header is a column of the record or a figure of its statistics.
    assert [name for name in CSV_COLUMNS if name not in columns and name not in run.stats] == []
    assert [key for key in JSON_KEYS if key not in {*columns, "parameters"}] == []
    (row,) = csv.DictReader(io.StringIO(export_csv(runs)))
    (data,) = json.loads(export_json(runs))
    for name in ("answer", "user_prompt", "system_prompt", "status", "thinking", "preset"):
        assert row[name] == data[name] == columns[name]
    assert row["max_tokens"] == str(data["parameters"]["max_tokens"]) == "300"
    assert row["notes"] == "; ".join(data["notes"]) == "imported from vLLM run_batch; cold start"
    assert data == json_of(columns) == run.to_dict()
    assert isinstance(run, StoredRun) and data["statistics"] == OUTCOME.statistics
