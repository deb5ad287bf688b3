"""A batch as an OpenAI batch input file, and a batch runner's output brought back into the
history (unit tests; tests/test_vllm_real.py runs a file through vLLM's own run_batch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.batch import BatchSpec
from studio.batch_files import (
    IMPORT_KIND,
    BatchFileError,
    export_jsonl,
    import_results,
    read_input,
)
from studio.presets import build_user_prompt, load_locations, load_system_prompts
from studio.request import ERROR, FINISHED, LENGTH
from studio.store import RunStore

LOCATIONS = load_locations()
SYSTEM = next(iter(load_system_prompts().values()))


def spec(count: int = 3, **options: object) -> BatchSpec:
    return BatchSpec(backend="vllm", host="http://user:secret@gpu-node:8000", model="smollm2",
                     max_tokens=512, temperature=0.0, scenarios=LOCATIONS[:count],
                     system=SYSTEM, **options)  # type: ignore[arg-type]


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
    assert request.think == "off"


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
    assert first.status == FINISHED and first.stats.output_tokens == 40
    assert first.grounding is not None and 0 < first.grounding < 1  # 53.76 found, 99 not
    assert second.status == ERROR and "maximum context length" in second.error
    assert third.status == LENGTH and third.text == "Third."
    runs = store.group_runs(imported.group_id)
    assert [run.text for run in runs] == [answer, "", "Third."]
    assert runs[0].preset == "San Diego, CA" and runs[0].prompt == build_user_prompt(LOCATIONS[0])
    assert runs[0].stats["prompt_tokens"] == 2800 and runs[0].page == "batch"
    assert imported.table()[1]["status"] == ERROR


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
