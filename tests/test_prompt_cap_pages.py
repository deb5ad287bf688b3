"""app.max_prompt_chars on the pages that send many prompts at once (Compare, Batch,
Evaluate): over the cap nothing is sent and nothing is recorded, and the page says the size
and the cap (the Playground's refusal is tested in tests/test_app.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import open_app, use_config
from tests.servers.ollama import FakeOllama

CAP = 1_000  # the PV prompts are ~8,000 characters


@pytest.mark.parametrize(("page", "button"), [("compare.py", "Compare"),
                                               ("batch.py", "Run batch"),
                                               ("evaluate.py", "Start evaluation")])
def test_a_prompt_over_the_cap_is_refused_unsent_and_unrecorded_on_every_page(
        page: str, button: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        fake_ollama: FakeOllama) -> None:
    use_config(tmp_path, monkeypatch, {
        "llm": {"backend": "ollama", "host": fake_ollama.url, "model": "llama3.1:8b"},
        "app": {"fallback_to_embedded": False, "max_prompt_chars": CAP}})
    at: AppTest = open_app(page)
    (clicked,) = [b for b in at.button if b.label == button]
    clicked.click().run()
    assert not at.exception, at.exception
    warned = "\n".join(w.value for w in at.warning)
    assert f"at most {CAP:,}" in warned and "characters" in warned
    assert "app.max_prompt_chars" in warned
    assert fake_ollama.chat_requests == []
    assert all(key not in at.session_state for key in ("comparison", "batch", "evaluation"))
    history = tmp_path / "history.sqlite3"
    if history.exists():
        with sqlite3.connect(history) as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)
