"""A batch as an OpenAI batch input file, and a batch runner's output brought back into the
history (unit tests; tests/test_vllm_real.py runs a file through vLLM's own run_batch)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from backends.sampling import Sampling
from backends.status import Status
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt
from studio.records.batch_files import (
    IMPORT_KIND,
    MAX_IMPORT_ROWS,
    UNNAMED_RUNNER,
    AlreadyImported,
    BatchFileError,
    Duplicate,
    export_jsonl,
    import_results,
    read_input,
)
from studio.records.store import RunStore, export_csv, export_json
from studio.runs.batch import BatchSpec
from studio.runs.request import run_notes

LOCATIONS = load_locations()
SYSTEM = next(iter(load_system_prompts().values()))


def spec(count: int = 3, think: str = "", **options: Any) -> BatchSpec:
    return BatchSpec(backend="vllm", host="http://user:secret@gpu-node:8000", model="smollm2",
                     sampling=Sampling(max_tokens=512, temperature=0.0, think=think),
                     scenarios=LOCATIONS[:count], system=SYSTEM, **options)


def result(custom_id: str, text: str, finish: str = "stop", tokens: int = 40) -> str:
    """One line of vLLM's run_batch output (BatchRequestOutput), as 0.32.0 writes it."""
    return json.dumps({
        "id": f"vllm-{custom_id}", "custom_id": custom_id, "error": None,
        "response": {"status_code": 200, "request_id": f"vllm-batch-{custom_id}", "body": {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "smollm2",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text,
                                                 "reasoning": None},
                         "finish_reason": finish}],
            "usage": {"prompt_tokens": 2800, "completion_tokens": tokens,
                      "total_tokens": 2800 + tokens}}}}) + "\n"


def test_every_row_is_one_request_line_with_a_unique_id() -> None:
    lines = [json.loads(line) for line in export_jsonl(spec(30)).splitlines()]
    assert len(lines) == 30 and len({line["custom_id"] for line in lines}) == 30
    first = lines[0]
    assert first["custom_id"] == "pv-0001-" + "san-diego-ca"
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["body"] == {
        "model": "smollm2", "max_tokens": 512, "temperature": 0.0,
        "messages": [{"role": "system", "content": SYSTEM},
                     {"role": "user", "content": build_user_prompt(LOCATIONS[0])}]}
    assert "secret" not in export_jsonl(spec(30)) and "gpu-node" not in export_jsonl(spec(30))


def test_the_think_setting_travels_in_the_body() -> None:
    (line, *_) = export_jsonl(spec(1, think="off")).splitlines()
    assert json.loads(line)["body"]["chat_template_kwargs"] == {"enable_thinking": False}
    (request,) = read_input(line).values()
    assert request.sampling.think == "off"


def test_results_come_back_into_the_history_in_input_order(tmp_path: Path) -> None:
    exported = export_jsonl(spec(3))
    ids = [json.loads(line)["custom_id"] for line in exported.splitlines()]
    answer = "## RECOMMENDATION\n\nAverage daily consumption: 53.76 kWh. Install 99 panels."
    output = (result(ids[2], "Third.", "length", 512) + result(ids[0], answer)
              + json.dumps({"id": "x", "custom_id": ids[1], "response": {
                  "status_code": 400, "request_id": "r", "body": {"error": {
                      "message": "maximum context length is 2048 tokens"}}}, "error": None}))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    imported = import_results(store, exported, output, label="node-7")
    assert imported.missing == []
    assert [row.custom_id for row in imported.rows] == ids
    first, second, third = imported.rows
    assert first.status == Status.FINISHED and first.stats.output_tokens == 40
    assert first.grounding is not None and 0 < first.grounding < 1  # 53.76 found, 99 not
    assert second.status == Status.ERROR and "maximum context length" in second.error
    assert third.status == Status.LENGTH and third.text == "Third."
    assert imported.group_id is not None
    runs = store.group_runs(imported.group_id)
    assert [run.text for run in runs] == [answer, "", "Third."]
    assert runs[0].preset == "San Diego, CA" and runs[0].prompt == build_user_prompt(LOCATIONS[0])
    assert runs[0].stats["prompt_tokens"] == 2800 and runs[0].page == "batch"
    assert imported.table()[1]["status"] == "Error"  # as the statistics say it


def reasoning_result(custom_id: str, message: dict[str, object],
                     usage: dict[str, object] | None = None) -> str:
    """A result line whose message is ``message`` (a reasoning model's)."""
    line = json.loads(result(custom_id, ""))
    line["response"]["body"]["choices"][0]["message"] = {"role": "assistant", **message}
    if usage is not None:
        line["response"]["body"]["usage"] = usage
    return json.dumps(line) + "\n"


@pytest.mark.parametrize("message", [
    pytest.param({"content": "<think>x</think>answer"}, id="inline-think-tags"),
    pytest.param({"content": "\n<think>x</think>\n\nanswer\n"}, id="inline-after-newline"),
    pytest.param({"content": "answer", "reasoning_content": "x"}, id="reasoning_content"),
    pytest.param({"content": "answer", "reasoning": "x", "reasoning_content": None},
                 id="reasoning"),
])
def test_an_imported_answers_thinking_is_split_off_as_a_live_runs(
        tmp_path: Path, message: dict[str, object]) -> None:
    """An imported answer reads as a live run's: no <think> tags left in the answer, the
    thinking in its own field (tests/test_vllm_backend.py reads the same bodies live)."""
    exported = export_jsonl(spec(1))
    cid = json.loads(exported)["custom_id"]
    usage = {"prompt_tokens": 2800, "completion_tokens": 9, "total_tokens": 2809,
             "completion_tokens_details": {"reasoning_tokens": 3}}
    store = RunStore(str(tmp_path / "history.sqlite3"))
    (row,) = import_results(store, exported, reasoning_result(cid, message, usage)).rows
    assert (row.status, row.text, row.outcome.thinking) == (Status.FINISHED, "answer", "x")
    assert row.stats.thinking_chars == 1 and row.stats.thinking_tokens == 3
    (run,) = store.group_runs(row_group(store))
    assert run.text == "answer" and run.thinking == "x"


def row_group(store: RunStore) -> int:
    (group,) = store.list_groups(IMPORT_KIND)
    return group.id


def test_rows_without_a_result_are_reported_missing(tmp_path: Path) -> None:
    exported = export_jsonl(spec(3))
    first = json.loads(exported.splitlines()[0])["custom_id"]
    imported = import_results(None, exported, result(first, "Only one."))
    assert len(imported.rows) == 1 and len(imported.missing) == 2


@pytest.mark.parametrize(("input_text", "output_text", "message"), [
    ("not json\n", "", "Batch input, line 1: not JSON"),
    ('{"custom_id": "a"}\n', "", "needs a custom_id and a body"),
    ('{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n'
     '{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "y"}]}}\n', "",
     "custom_id 'a' repeats"),
    ('{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n',
     '{"custom_id": "b"}\n', "custom_id 'b' is not in the batch input file"),
    ('{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n',
     "[1, 2]\n", "Batch output, line 1: not a JSON object"),
    ('{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}\n',
     "\n", "Batch output: the file has no results"),
])
def test_a_bad_file_is_one_clear_message(input_text: str, output_text: str,
                                         message: str) -> None:
    with pytest.raises(BatchFileError, match=message.replace("(", r"\(").replace("[", r"\[")):
        import_results(None, input_text, output_text)


def test_the_import_group_is_not_a_resumable_batch(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "history.sqlite3"))
    exported = export_jsonl(spec(1))
    first = json.loads(exported)["custom_id"]
    imported = import_results(store, exported, result(first, "ok"))
    assert imported.group_id is not None
    assert store.group_summaries("batch") == []  # Resume lists only the page's own batches
    assert IMPORT_KIND != "batch"


def ids_of(exported: str) -> list[str]:
    return [json.loads(line)["custom_id"] for line in exported.splitlines()]


def failure(custom_id: str, message: str = "The server is busy.") -> str:
    """A failed line as vLLM's run_batch writes it: a non-200 response with the error."""
    return json.dumps({"id": f"vllm-{custom_id}", "custom_id": custom_id, "error": None,
                       "response": {"status_code": 500, "request_id": "vllm-batch-x",
                                    "body": {"error": {"message": message}}}}) + "\n"


def test_a_repeated_custom_id_keeps_the_answer_and_says_so(tmp_path: Path) -> None:
    """A failed row run again and its output appended: one run per row, the answer kept, and
    the import says which lines were left out."""
    exported = export_jsonl(spec(2))
    first, second = ids_of(exported)
    output = (failure(first) + result(second, "Twice, the first.") + result(first, "Retried.")
              + result(second, "Twice, the second."))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    imported = import_results(store, exported, output)
    assert [(row.custom_id, row.status, row.text, row.line) for row in imported.rows] == [
        (first, Status.FINISHED, "Retried.", 3), (second, Status.FINISHED, "Twice, the second.", 4)]
    assert imported.duplicates == [Duplicate(first, 3, (1,), "an answer, not an error"),
                                   Duplicate(second, 4, (2,), "the later answer")]
    assert str(imported.duplicates[0]) == (
        f"{first}: line 3 kept (an answer, not an error); line 1 left out")
    assert len(store.list_runs()) == 2
    errors_only = import_results(None, exported, failure(first, "a") + failure(first, "b"))
    assert errors_only.rows[0].error == "HTTP 500: b"
    assert errors_only.duplicates[0].reason == "the later error"


def test_the_same_files_are_imported_once(tmp_path: Path) -> None:
    exported = export_jsonl(spec(2))
    output = "".join(result(cid, "ok") for cid in ids_of(exported))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    first = import_results(store, exported, output, user="ann")
    with pytest.raises(AlreadyImported) as again:
        import_results(store, exported, output, user="ann")
    low, high = first.run_ids
    assert f"History runs #{low}–#{high} (2 runs, import #{first.group_id})" in str(
        again.value)
    assert "imported already" in str(again.value)
    assert len(store.list_runs()) == 2  # nothing recorded the second time
    # Another file, another user's import, or the first import's runs deleted: imported.
    import_results(store, exported, output + "\n", user="ann")
    import_results(store, exported, output, user="bob")
    for run_id in first.run_ids:
        store.delete(run_id)
    import_results(store, exported, output, user="ann")
    assert len(store.list_runs()) == 6


def test_imported_runs_are_marked_with_the_runner_the_file_names(tmp_path: Path) -> None:
    exported = export_jsonl(spec(3))
    vllm_id, openai_id, ray_id = ids_of(exported)
    openai = json.loads(result(openai_id, "From OpenAI."))
    openai.update(id="batch_req_123", response={**openai["response"], "request_id": "req_1"})
    ray = json.loads(result(ray_id, "From Ray."))  # the README's pipeline writes no id
    del ray["id"], ray["response"]["request_id"]
    output = "\n".join([result(vllm_id, "From vLLM.").strip(), json.dumps(openai),
                        json.dumps(ray)])
    store = RunStore(str(tmp_path / "history.sqlite3"))
    imported = import_results(store, exported, output)
    assert imported.runners == ["vLLM run_batch", "OpenAI Batch API", UNNAMED_RUNNER]
    assert imported.group_id is not None
    runs = store.group_runs(imported.group_id)
    assert [run_notes(run.stats) for run in runs] == [
        ["imported from vLLM run_batch"], ["imported from OpenAI Batch API"],
        [f"imported from {UNNAMED_RUNNER}"]]
    csv_rows = list(csv.DictReader(io.StringIO(export_csv(runs))))
    assert [row["notes"] for row in csv_rows] == [
        "imported from vLLM run_batch", "imported from OpenAI Batch API",
        f"imported from {UNNAMED_RUNNER}"]
    exported_json = json.loads(export_json(runs))
    assert exported_json[0]["notes"] == ["imported from vLLM run_batch"]
    assert exported_json[0]["statistics"]["imported_from"] == "vLLM run_batch"


def test_vllms_own_error_shape_gives_the_servers_message() -> None:
    """vLLM 0.32's run_batch writes a failed request's ErrorResponse as the line's error."""
    exported = export_jsonl(spec(1))
    line = json.dumps({
        "id": "vllm-1", "custom_id": ids_of(exported)[0], "response": {
            "status_code": 400, "request_id": "vllm-batch-1", "body": None},
        "error": {"error": {"message": "This model's maximum context length is 2048 tokens.",
                            "type": "BadRequestError", "param": None, "code": 400}}})
    (row,) = import_results(None, exported, line).rows
    assert row.status == Status.ERROR
    assert row.error == "HTTP 400: This model's maximum context length is 2048 tokens."


def test_an_error_line_is_marked_imported_too(tmp_path: Path) -> None:
    exported = export_jsonl(spec(1))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    imported = import_results(store, exported, failure(ids_of(exported)[0]))
    assert imported.group_id is not None
    (run,) = store.group_runs(imported.group_id)
    assert run.status == Status.ERROR and run.error == "HTTP 500: The server is busy."
    assert run_notes(run.stats) == ["imported from vLLM run_batch"]


def test_more_results_than_an_import_takes_are_refused(tmp_path: Path) -> None:
    exported = export_jsonl(spec(3))
    output = "".join(result(cid, "ok") for cid in ids_of(exported))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    with pytest.raises(BatchFileError) as refused:
        import_results(store, exported, output, output_name="results.jsonl", max_rows=2)
    assert str(refused.value).startswith(
        "Batch output (results.jsonl): 3 results; one import takes at most 2. Split the file")
    assert store.list_runs() == []
    assert MAX_IMPORT_ROWS == 2_000
    assert len(import_results(store, exported, output, max_rows=3).rows) == 3


@pytest.mark.parametrize("which", ["input", "output"])
def test_a_deeply_nested_line_is_one_clear_message(which: str) -> None:
    exported = export_jsonl(spec(1))
    nested = "[" * 100_000 + "]" * 100_000
    good = result(ids_of(exported)[0], "ok")
    input_text = exported + nested if which == "input" else exported
    output_text = good + nested if which == "output" else good
    with pytest.raises(BatchFileError) as raised:
        import_results(None, input_text, output_text, input_name="in.jsonl",
                       output_name="out.jsonl")
    name = "Batch input (in.jsonl)" if which == "input" else "Batch output (out.jsonl)"
    assert str(raised.value) == (f"{name}, line 2: JSON nested too deeply to read (a batch "
                                 "line is one flat request or result).")


INPUT_LINE = '{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}]}}'


@pytest.mark.parametrize("body", [
    '{"max_tokens": "lots"}', '{"temperature": [1]}', '{"repetition_penalty": {}}',
    '{"max_tokens": true}'])
def test_an_input_line_with_a_field_of_the_wrong_kind_is_a_message(body: str) -> None:
    extra = json.loads(body)
    line = json.loads(INPUT_LINE)
    line["body"].update(extra)
    with pytest.raises(BatchFileError, match=rf"^Batch input, line 1: the body's "
                                             rf"{next(iter(extra))} is not a number\.$"):
        import_results(None, json.dumps(line), "")


@pytest.mark.parametrize("line", [
    '{"custom_id": "a", "response": {"status_code": 200, "body": [1]}}',
    '{"custom_id": "a", "response": [], "error": null}',
    '{"custom_id": "a", "response": {"body": {"choices": ["x"]}}}',
    '{"custom_id": "a", "response": {"body": {"choices": [{"message": "x"}], "usage": []}}}',
    '{"custom_id": "a", "response": {"body": {"choices": [{}], "usage": {"prompt_tokens": '
    '"many"}}}}',
    '{"custom_id": "a", "error": {"message": "quota"}}',
])
def test_a_result_line_of_any_shape_is_a_row(line: str) -> None:
    """Odd shapes are read (what a line lacks is its row's error), never a traceback."""
    (row,) = import_results(None, INPUT_LINE, line).rows
    assert row.status in (Status.ERROR, Status.FINISHED) and row.stats.prompt_tokens is None


def test_an_output_line_whose_custom_id_is_not_text_is_a_message() -> None:
    with pytest.raises(BatchFileError, match=r"line 1: custom_id missing is not in the batch"):
        import_results(None, INPUT_LINE, '{"custom_id": ["a"]}')
