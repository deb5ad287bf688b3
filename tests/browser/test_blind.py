"""Compare's blind vote in Chromium: from the moment the blind round shows until the vote, no
backend, model or host name is in the page or in what the websocket brings it; after the vote
every one is; the vote is kept, and the Leaderboard and History reflect it."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable

from playwright.sync_api import Page, WebSocket, expect

from tests.browser.conftest import IDLE, download, open_page
from tests.browser.test_compare import pane, pick_backend
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import FakeVLLM, completion

ServeApp = Callable[[str], AppServer]
ALPHA, BETA = "alpha-secret-model:7b", "beta-hidden-model"
OLLAMA_ANSWER = "## Alpha says\n\n" + " ".join(f"w{i}" for i in range(30)) + " Install 12 panels."
VLLM_ANSWER = "## Beta says\n\nInstall **14 panels** within the $15,000 budget."


def names(ollama: FakeOllama, vllm: FakeVLLM) -> list[str]:
    return [ALPHA, BETA, "alpha-secret", "beta-hidden", "Ollama", "vLLM", ollama.url,
            vllm.url, f":{ollama.port}", f":{vllm.port}"]


def test_no_name_before_the_vote_every_name_after_and_the_vote_counts(
        page: Page, serve_app: ServeApp) -> None:
    with FakeOllama(models=[ALPHA], script=Script(tokens=tokenize(OLLAMA_ANSWER),
                                                  delay=0.06)) as ollama, \
            FakeVLLM(200, completion(VLLM_ANSWER, model=BETA), served=(BETA,),
                     delay=1.0) as vllm:
        config = (f"llm:\n  backend: ollama\n  host: {ollama.url}\n  model: {ALPHA}\n"
                  f"backends:\n  vllm:\n    host: {vllm.url}\n    model: {BETA}\n"
                  "app:\n  fallback_to_embedded: false\n")
        app = serve_app(config)
        frames: list[bytes] = []
        recording = {"on": False}

        def watch(socket: WebSocket) -> None:
            def received(payload: str | bytes) -> None:
                if recording["on"]:
                    frames.append(payload.encode() if isinstance(payload, str) else payload)
            socket.on("framereceived", received)

        page.on("websocket", watch)
        open_page(page, app, "compare", "Compare backends")
        pick_backend(page, 1, "Ollama")
        pick_backend(page, 2, "vLLM")
        expect(pane(page, 2).get_by_role("combobox", name="Model")).to_have_value(
            BETA, timeout=15_000)
        page.get_by_text("Blind vote", exact=True).click()
        page.wait_for_selector(IDLE, timeout=30_000)
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("text=Blind comparison: the panes are lettered",
                               timeout=30_000)
        recording["on"] = True  # from here until the vote, nothing may name a contender
        hidden = names(ollama, vllm)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            content = page.content()
            for name in hidden:
                assert name not in content, f"{name!r} in the page before the vote"
            if page.get_by_role("button", name="A is better").count():
                break
            time.sleep(0.1)
        page.wait_for_selector(IDLE, timeout=30_000)
        content = page.content()
        assert "12 panels" in content and "14 panels" in content  # both answers, whole
        assert "Figures right" in content
        for name in hidden:
            assert name not in content, f"{name!r} in the page before the vote"
        page.get_by_label("Reason (optional)").fill("A quotes the budget")
        page.get_by_label("Reason (optional)").press("Enter")
        page.wait_for_selector(IDLE, timeout=30_000)
        recording["on"] = False
        for frame in frames:
            for name in hidden:
                assert name.encode() not in frame, f"{name!r} sent before the vote"
        assert frames, "no websocket frame was watched"
        page.get_by_role("button", name="A is better").click()
        page.wait_for_selector("text=Your vote: A is better", timeout=30_000)
        page.wait_for_selector(IDLE, timeout=30_000)
        content = page.content()
        for name in (ALPHA, BETA, "Ollama", "vLLM"):
            assert name in content, f"{name!r} not shown after the vote"
        mapping = page.get_by_text("was Ollama", exact=False).first.inner_text()
        winner = ALPHA if "A was Ollama" in mapping else BETA

        open_page(page, app, "leaderboard", "Leaderboard")
        page.wait_for_selector("text=Bradley–Terry", timeout=30_000)
        _, board = download(page, "⬇ Leaderboard (CSV)")
        rows = {row["choice"]: row for row in csv.DictReader(io.StringIO(board))}
        assert set(rows) == {f"Ollama · {ALPHA}", f"vLLM · {BETA}"}, board
        assert all(row["votes"] == "1" for row in rows.values())
        winner_row = next(row for label, row in rows.items() if winner in label)
        assert winner_row["wins"] == "1" and winner_row["rating"] == ""
        # One vote: the winner won every vote it was in, so there is no finite rating yet.
        assert "insufficient votes" in page.content()
        assert page.get_by_text("won every vote it was in", exact=False).count() or \
            page.get_by_text("lost every vote it was in", exact=False).count()

        open_page(page, app, "history", "Run history")
        page.get_by_text("Blind votes (1)").click()
        _, votes = download(page, "⬇ Votes (CSV)")
        (kept,) = csv.DictReader(io.StringIO(votes))
        assert kept["reason"] == "A quotes the budget" and kept["winner"] == "A"
        assert kept["user_prompt"].strip() and kept["location"]
        assert ALPHA in kept["pairing"] and BETA in kept["pairing"]
