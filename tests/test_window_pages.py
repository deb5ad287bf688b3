"""The context-window check on every page (AppTest of the real app): the warning with its
numbers and choices before a run, and the mark of a prompt the server cut after it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.runs.request import PROMPT_TRUNCATED
from tests.conftest import caption_lines, history_page, start_app
from tests.plain import plain
from tests.servers.ollama import FakeOllama, Script
from tests.servers.vllm import FakeVLLM, completion

TOO_SMALL = "The context window is too small."
ANSWER = Script(tokens=["Install", " 12", " panels", "."])


def ollama_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: FakeOllama,
              page: str = "") -> AppTest:
    return start_app(tmp_path, monkeypatch, "ollama", server.url, "llama3.1:8b", page)


def click(at: AppTest, label: str) -> AppTest:
    (button,) = [b for b in at.button if b.label == label]
    return button.click().run()


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def warnings(at: AppTest) -> str:
    return plain("\n".join(w.value for w in at.warning))


def captions(at: AppTest) -> str:
    """Every caption's text as the page shows it (literal lines' escapes undone)."""
    return "\n".join(caption_lines(at, ""))


def test_playground_warns_before_a_prompt_over_the_whole_window_then_marks_the_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 2048}, script=ANSWER) as server:
        at = click(ollama_app(tmp_path, monkeypatch, server), "Generate")
        assert TOO_SMALL in warnings(at)
        assert "The prompt alone is about" in warnings(at)
        assert "llama3.1:8b's 2,048-token window (the most it was trained for)" in warnings(at)
        assert server.chat_requests == []  # held back: nothing sent
        assert "Run anyway" in labels(at) and "Cancel" in labels(at)
        assert not [label for label in labels(at) if label.startswith("Lower max tokens")]

        at = click(at, "Run anyway")
        assert not at.exception, at.exception
        assert len(server.chat_requests) == 1 and server.cuts
    assert TOO_SMALL not in warnings(at)
    assert "Prompt truncated by the server." in warnings(at)
    # The prompt alone was over the window: lowering max tokens would not help; and the
    # answer is not graded against data the model never saw.
    assert "max tokens" not in warnings(at).lower()
    assert "shorten the prompt" in warnings(at)
    assert "Grounding: prompt cut: not graded" in captions(at)
    assert not any(":red-background[" in m.value for m in at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Prompt tokens"].endswith("(cut)")
    assert metrics["Context window"] == "2,048"

    history_page(at)
    (table,) = at.dataframe
    assert table.value["notes"].tolist() == [PROMPT_TRUNCATED]


def test_playground_lowers_max_tokens_to_what_fits(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 4096}, script=ANSWER) as server:
        at = click(ollama_app(tmp_path, monkeypatch, server), "Generate")
        (lower,) = [label for label in labels(at) if label.startswith("Lower max tokens")]
        fits = int(lower.split(" to ")[1].split(" ")[0].replace(",", ""))
        assert 0 < fits < 2048
        assert f"lower max tokens to {fits:,}".lower() in warnings(at).lower()
        at = click(at, lower)
        assert not at.exception, at.exception
        (request,) = server.chat_requests
        assert server.cuts == []
    assert request["options"]["num_predict"] == fits
    assert request["options"]["num_ctx"] == 4096  # capped at the trained length
    assert at.session_state["max_tokens"] == fits  # the sidebar says what was sent
    assert TOO_SMALL not in warnings(at)


def test_an_edited_prompt_drops_the_held_back_run(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 4096}, script=ANSWER) as server:
        at = click(ollama_app(tmp_path, monkeypatch, server), "Generate")
        assert TOO_SMALL in warnings(at)
        at.text_area(key="playground_user").set_value("How many panels for 20 kWh a day?")
        at.run()
        assert TOO_SMALL not in warnings(at)
        at = click(at, "Generate")  # the short prompt fits: it runs at once
        assert len(server.chat_requests) == 1 and not server.cuts


def test_compare_names_the_pane_that_does_not_fit(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 2048}, script=ANSWER) as server:
        at = ollama_app(tmp_path, monkeypatch, server, "compare.py")
        at.selectbox(key="pane1_backend_kind").set_value("ollama").run()
        at.selectbox(key="pane1_model_ollama").set_value("mistral:7b").run()
        at = click(at, "Compare")
        assert TOO_SMALL in warnings(at)
        assert "**1. Ollama · llama3.1:8b**" in warnings(at)
        assert "mistral:7b" not in warnings(at)  # trained for 131,072 tokens: it fits
        assert server.chat_requests == []
        at = click(at, "Run anyway")
        assert not at.exception, at.exception
        assert len(server.chat_requests) == 2
    (table,) = at.dataframe[:1]
    figures = table.value.set_index("Figure")  # a row per figure, a column per pane
    notes = figures.loc["Notes"].to_dict()
    assert notes == {"1. Ollama · llama3.1:8b": PROMPT_TRUNCATED, "2. Ollama · mistral:7b": "–"}
    grounding = figures.loc["Grounding"].to_dict()
    assert grounding["1. Ollama · llama3.1:8b"] == "prompt cut: not graded"
    assert grounding["2. Ollama · mistral:7b"] != "prompt cut: not graded"
    assert "Grounding: prompt cut: not graded" in captions(at)

    # History, the two runs side by side: the cut one is not graded there either.
    history_page(at)
    runs = at.dataframe[0].value
    cut = {row["model"]: row["id"] for _, row in runs.iterrows()}
    at.multiselect(key="history_open").set_value([cut["llama3.1:8b"], cut["mistral:7b"]]).run()
    assert not at.exception, at.exception
    footers = caption_lines(at, "Grounding:")
    assert footers[0] == "Grounding: prompt cut: not graded"
    assert footers[1] != "Grounding: prompt cut: not graded"


def test_batch_flags_the_rows_before_it_starts(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 4096}, script=ANSWER) as server:
        at = ollama_app(tmp_path, monkeypatch, server, "batch.py")
        names = at.multiselect(key="batch_locations").value[:2]
        at.multiselect(key="batch_locations").set_value(names).run()
        at = click(at, "Run batch")
        assert TOO_SMALL in warnings(at)
        assert f"**#1 {names[0]}**" in warnings(at) and f"**#2 {names[1]}**" in warnings(at)
        assert not [label for label in labels(at) if label.startswith("Run the ")]  # none fit
        assert server.chat_requests == []
        at = click(at, "Run anyway")
        batch = at.session_state["batch"]
        assert batch.wait(30)
        at.run()
    notes = [row["notes"] for row in batch.table()]
    assert notes == ["over the context window (flagged before the start)"] * 2


def test_batch_does_not_grade_the_rows_whose_prompt_was_cut(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 2048}, script=ANSWER) as server:
        at = ollama_app(tmp_path, monkeypatch, server, "batch.py")
        names = at.multiselect(key="batch_locations").value[:1]
        at.multiselect(key="batch_locations").set_value(names).run()
        at = click(click(at, "Run batch"), "Run anyway")
        batch = at.session_state["batch"]
        assert batch.wait(30)
        at.run()
        assert server.cuts
    (row,) = batch.table()
    assert PROMPT_TRUNCATED in row["notes"] and row["grounding"] == "prompt cut: not graded"


def test_vllm_says_its_own_limit_and_the_prompt_has_one_size_on_screen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """"smollm2's 2,048-token window (the most it was trained for)" was the server's
    --max-model-len; the caption said about 2,542 tokens while /tokenize counted 2,860."""
    with FakeVLLM(200, completion("Install 12 panels."), max_model_len=2048,
                  check_context=True) as server:
        at = start_app(tmp_path, monkeypatch, "vllm", server.url, "smollm2")
        assert "(estimated from its length)" in captions(at)
        at = click(at, "Generate")
        assert not at.exception, at.exception
        assert TOO_SMALL in warnings(at)
        (counted,) = [int(n.replace(",", "")) for n in
                      re.findall(r"The prompt alone is ([\d,]+) tokens \(counted exactly\)",
                                 warnings(at))]
        assert "the most it was trained for" not in warnings(at)
        assert "this vLLM server's --max-model-len" in warnings(at)
        assert "restart the vLLM server with --max-model-len" in warnings(at)
        assert "cut" not in warnings(at)
        assert server.chat_requests == []  # held back: nothing sent
        # The editor shows the count the check made, on the same screen as the warning.
        (size,) = [c for c in at.caption if c.value.startswith("Prompt size:")]
        assert f"· {counted:,} tokens (counted exactly)" in size.value


def test_the_status_line_says_loaded_right_after_the_run_that_loaded_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "model not loaded: the next run starts cold" until Refresh (the model's state
    is kept 5 s, and a run is shorter)."""
    with FakeOllama(script=ANSWER) as server:
        at = ollama_app(tmp_path, monkeypatch, server)

        def status() -> str:
            return "\n".join(plain(s.value) for s in at.sidebar.success if "Reachable" in s.value)

        assert "model not loaded: the next run starts cold" in status()
        at.text_area(key="playground_user").set_value("How many panels for 20 kWh a day?")
        at = click(at.run(), "Generate")
        assert not at.exception, at.exception
        assert len(server.chat_requests) == 1 and "llama3.1:8b" in server.loaded
        assert "model loaded" in status() and "not loaded" not in status()


def test_a_run_held_back_by_the_window_check_shows_nothing_of_the_last_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A short prompt answered, then the long one held back: its warning stood above the
    last run's answer, figures and advice ('raise max tokens'), which described another run."""
    with FakeOllama(trained_context={"llama3.1:8b": 4096}, script=ANSWER) as server:
        at = ollama_app(tmp_path, monkeypatch, server)
        editor = at.text_area(key="playground_user")
        long_prompt = editor.value
        editor.set_value("How many panels for 20 kWh a day?").run()
        at = click(at, "Generate")
        assert at.metric and len(server.chat_requests) == 1
        at.text_area(key="playground_user").set_value(long_prompt).run()
        at = click(at, "Generate")
        assert not at.exception, at.exception
        assert TOO_SMALL in warnings(at)
        assert not at.metric and not at.download_button
        assert not any("Install 12 panels" in m.value for m in at.markdown)
        assert len(server.chat_requests) == 1  # held back: nothing more sent
