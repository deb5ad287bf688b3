"""The figure check in Chromium: the seed's sample answer, streamed by the test Ollama on the
San Diego preset, shows its "128" struck through against the data's 30."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import answer_text, open_app
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.test_grounding import SAMPLE_ANSWER

ServeApp = Callable[[str], AppServer]


@pytest.fixture
def seed_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(script=Script(tokens=tokenize(SAMPLE_ANSWER), delay=0.02)) as server:
        yield server


def test_the_seeds_answer_shows_128_wrong_against_30(page: Page, serve_app: ServeApp,
                                                     seed_ollama: FakeOllama) -> None:
    config = f"llm:\n  backend: ollama\n  host: {seed_ollama.url}\n  model: llama3.1:8b\n"
    open_app(page, serve_app(config))
    assert "San Diego, CA" in page.get_by_role("combobox", name="Location preset").input_value()
    page.get_by_role("button", name="Generate").click()
    line = page.get_by_text("Figures right: 1 of 8 right", exact=False)
    line.wait_for(timeout=30_000)
    assert "panels to offset 100%: 128 stated, 30 in the data (4.3x)" in line.inner_text()
    # In the answer: 128 struck through, the data's 30 beside it; 31 (right) unmarked.
    struck = page.locator(".st-key-answer del", has_text="128 panels")
    assert struck.count() == 1
    assert "✗ 30 in the data" in answer_text(page)
    assert page.locator(".st-key-answer del", has_text="31 panels").count() == 0
    # Every wrong figure is struck through (not only highlighted as "not in the data").
    struck_texts = page.locator(".st-key-answer del").all_inner_texts()
    assert struck_texts == ["128 panels", "150 panels", "10.03 years", "132.15%", "$1,480.42"]
