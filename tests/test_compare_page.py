"""The Compare page (AppTest) over a comparison that has ended: what each pane shows after a
per-pane Stop, and the charts when nothing (or not everything) was measured."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from backends.sampling import Sampling
from studio.runs.compare import Comparison
from studio.runs.request import RunParams
from tests.conftest import caption_lines, open_app, use_config, wait_until
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.vllm import FakeVLLM, completion
from tests.test_compare import (
    OLLAMA_ANSWER,
    VLLM_ANSWER,
    Answering,
    answered,
    compare,
    ollama_pane,
    vllm_pane,
)


def show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, comparison: Comparison) -> AppTest:
    """The Compare page drawing ``comparison`` (ended) as its last one."""
    use_config(tmp_path, monkeypatch, {"llm": {"backend": "embedded"},
                                       "app": {"fallback_to_embedded": False}})
    at = open_app("compare.py")
    at.session_state["comparison"] = comparison
    at.run()
    assert not at.exception, at.exception
    return at


def bar_charts(at: AppTest) -> list[pd.DataFrame]:
    """The data of the bar charts on the page: one row per bar."""
    return [pa.ipc.open_stream(dataset.data.data).read_pandas()
            for chart in at.get("vega_lite_chart") if '"bar"' in chart.proto.spec
            for dataset in chart.proto.datasets]


def test_a_pane_stopped_on_its_own_shows_its_stopped_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop pane 1 in round 1 of 2: it shows that run's partial answer, marked stopped, with
    that answer's grounding; not round 2's empty run that it sat out."""
    slow = Script(tokens=tokenize(OLLAMA_ANSWER * 4), delay=0.2)
    with FakeOllama(script=slow) as ollama, FakeVLLM(200, completion(VLLM_ANSWER)) as vllm:
        comparison = compare([ollama_pane(ollama.url), vllm_pane(vllm.url)], repeats=2)
        assert wait_until(lambda: len(comparison.rounds) == 1)
        stream = comparison.current_round[0]
        assert wait_until(lambda: "53.76" in stream.text, 10)
        comparison.stop_pane(0)
        assert comparison.wait(10) and len(comparison.rounds) == 2
        at = show(tmp_path, monkeypatch, comparison)
    captions = [caption.value for caption in at.caption]
    assert any(c.startswith("Stopped · ") and not c.startswith("Stopped · 0.0 s")
               for c in captions), captions
    assert any("Average daily consumption" in m.value for m in at.markdown)
    report = comparison.grounding(0)
    assert report is not None and report.grounded  # 53.76 is in the prompt
    assert f"Grounding: {report.summary()}" in caption_lines(at, "Grounding:")


def test_no_measured_run_draws_no_chart_but_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = Answering([("", "thinking " * 40, answered(9.0, "length"))] * 2)
    pane = RunParams("embedded", "", "answering-1",
                     sampling=Sampling(max_tokens=150, temperature=0.0))
    comparison = compare([pane, pane], builder=lambda _: backend)
    assert comparison.wait(5)
    at = show(tmp_path, monkeypatch, comparison)
    assert at.get("vega_lite_chart") == []
    assert any(c.value.startswith("Nothing was measured") for c in at.caption)


def test_a_pane_with_nothing_measured_gets_no_bar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backends = iter([Answering([("Install 12 panels.", "", answered(2.0))]),
                     Answering([("", "thinking " * 40, answered(9.0, "length"))])])
    pane = RunParams("embedded", "", "answering-1",
                     sampling=Sampling(max_tokens=150, temperature=0.0))
    comparison = compare([pane, pane], builder=lambda _: next(backends))
    assert comparison.wait(5)
    first, _ = comparison.labels
    at = show(tmp_path, monkeypatch, comparison)
    charts = bar_charts(at)
    assert len(charts) == 2  # timings, tokens/s
    for bars in charts:  # pane 1's bars only, every one with its value
        assert set(bars.iloc[:, 0]) == {first}
        assert bars.iloc[:, -1].notna().all()
    assert any(c.value.startswith("Nothing measured for 2") for c in at.caption)
