"""7. Load: 10 browser sessions (10 contexts in one Chromium) open the Playground and click
Generate at about the same time against one test server that streams each session an answer
of its own. Every session must end with its full, own text and nothing of another's; the
app's memory is sampled throughout.
"""

from __future__ import annotations

import os
import re
import time
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

from playwright.sync_api import Page

from bench.browser import IDLE, RssSampler, chromium, new_page, settle, tree_rss_mb
from bench.common import Figure, Result, median
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer

SESSIONS = 10
TOKENS = 300
DELAY_S = 0.01
MODEL = "llama3.1:8b"
MARKER = re.compile(r"SESSION-(\d\d)")
WORD = re.compile(r"\bs(\d\d)w(\d{3})\b")
DEADLINE_S = 120.0
CLICK_AT = """at => {
    window.__benchClicked = null;
    setTimeout(() => {
        const button = [...document.querySelectorAll('button')]
            .find(b => b.innerText.trim() === 'Generate');
        button.click();
        window.__benchClicked = Date.now();
    }, Math.max(0, at - Date.now()));
}"""


def session_tokens(number: str) -> list[str]:
    """``TOKENS`` tokens that only session ``number`` should ever see, ending on a marker."""
    words = [f" s{number}w{k:03d}" for k in range(TOKENS - 3)]
    return ["Answer", f" for SESSION-{number}:", *words, f" SESSION-{number}-END"]


class EchoOllama(FakeOllama):
    """FakeOllama that answers each chat with ``session_tokens`` of the ``SESSION-NN`` marker
    found in its user message (or a short complaint when there is none)."""

    def __init__(self) -> None:
        super().__init__(models=(MODEL,), script=Script(delay=DELAY_S))
        self.streams: list[tuple[float, float]] = []  # (start, end), time.time()
        server = self
        base: Any = self._httpd.RequestHandlerClass

        class Handler(base):
            def _stream_chat(self, body: dict[str, Any], script: Script) -> None:
                prompt = " ".join(str(m.get("content", "")) for m in body.get("messages", [])
                                  if m.get("role") == "user")
                found = MARKER.search(prompt)
                tokens = session_tokens(found.group(1)) if found else \
                    tokenize("No SESSION marker in the prompt.")
                started = time.time()
                try:
                    super()._stream_chat(body, replace(script, tokens=tokens))
                finally:
                    server.streams.append((started, time.time()))

        self._httpd.RequestHandlerClass = Handler


def _answer(page: Page) -> str:
    text = page.evaluate("document.querySelector('.st-key-answer')?.textContent || ''")
    return str(text)


def _complete(text: str, number: str) -> bool:
    return f"SESSION-{number}-END" in text and "▌" not in text


def _own_and_whole(text: str, number: str) -> bool:
    """All of its words, in order, the end marker, no cursor."""
    words = [f"s{number}w{k:03d}" for k in range(TOKENS - 3)]
    found = [match.group(0) for match in WORD.finditer(text) if match.group(1) == number]
    return _complete(text, number) and found == words


def _foreign(text: str, number: str) -> set[str]:
    """Session numbers other than ``number`` that appear in ``text``."""
    seen = {m.group(1) for m in MARKER.finditer(text)} | {m.group(1) for m in
                                                          WORD.finditer(text)}
    return seen - {number}


def run() -> Result:
    numbers = [f"{i:02d}" for i in range(1, SESSIONS + 1)]
    server = EchoOllama()
    with server, chromium() as browser, \
            AppServer("app.py", f"llm:\n  backend: ollama\n  host: {server.url}\n  model: "
                                f"{MODEL}\napp:\n  fallback_to_embedded: false\n") as app, \
            RssSampler(app.pid, interval=0.2) as rss, ExitStack() as pages_open:
        idle_mb = tree_rss_mb(app.pid)
        pages = [pages_open.enter_context(new_page(browser)) for _ in numbers]
        for page in pages:  # all ten load at once
            page.goto(app.url, wait_until="commit")
        for page, number in zip(pages, numbers, strict=True):
            page.wait_for_selector(IDLE, timeout=60_000)
            page.wait_for_selector("text=Generate", timeout=60_000)
            prompt = page.get_by_label("User prompt")
            prompt.fill(f"SESSION-{number}: size a PV system for this household.")
            prompt.press("Tab")  # commit the text area
        for page in pages:
            settle(page, seconds=0.3, timeout=60)
        opened_mb = tree_rss_mb(app.pid)
        # Each page clicks Generate itself at one agreed moment: Playwright's clicks one by
        # one would spread over seconds on a busy 2-core machine.
        at_ms = (time.time() + 1.0 + 0.15 * SESSIONS) * 1000
        for page in pages:
            page.evaluate(CLICK_AT, at_ms)
        time.sleep(max(at_ms / 1000 - time.time(), 0) + 0.2)
        clicked = [page.evaluate("window.__benchClicked") for page in pages]
        clicks = [time.time() if at is None else float(at) / 1000 for at in clicked]
        finished: dict[str, float] = {}
        foreign: dict[str, set[str]] = {number: set() for number in numbers}
        polls = 0
        deadline = min(clicks) + DEADLINE_S
        while len(finished) < SESSIONS and time.time() < deadline:
            for page, number in zip(pages, numbers, strict=True):
                if number in finished:
                    continue
                text = _answer(page)  # partial answers are checked too, not just the last
                polls += 1
                foreign[number] |= _foreign(text, number)
                if _complete(text, number):
                    finished[number] = time.time()
            time.sleep(0.1)
        for page in pages:
            settle(page, seconds=0.3, timeout=30)
        texts = {number: _answer(page) for page, number in zip(pages, numbers, strict=True)}
        for number in numbers:
            foreign[number] |= _foreign(texts[number], number)
        asked = sorted(m.group(1) for body in server.chat_requests
                       if (m := MARKER.search(str(body.get("messages")))))

    whole = [n for n in numbers if _own_and_whole(texts[n], n)]
    crossed = {n: sorted(seen) for n, seen in foreign.items() if seen}
    peak = rss.peak
    durations = [finished[n] - clicks[i] for i, n in enumerate(numbers) if n in finished]
    spread = max(clicks) - min(clicks)
    streamed = [end - start for start, end in server.streams]
    return Result(
        title=f"Load: {SESSIONS} browser sessions streaming at once",
        figures=[
            Figure("Sessions that ended with their full, own text", len(whole), f"/ {SESSIONS}",
                   f">= {SESSIONS}", len(whole) >= SESSIONS),
            Figure("Sessions that showed another session's text", len(crossed), "", "== 0",
                   not crossed),
            Figure("App's peak memory (RSS) while they ran", peak, "MB", "< 1024",
                   None if peak is None else peak < 1024),
        ],
        notes=[
            f"{SESSIONS} Chromium contexts (one Streamlit session each) opened the Playground "
            "together; each put its own marker `SESSION-NN` in the user prompt and clicked "
            "Generate at one agreed moment (a timer in each page clicks the button), the clicks "
            f"{spread * 1000:.0f} ms apart from first to last. One FakeOllama "
            f"(subclass `EchoOllama`) streamed each request {TOKENS} tokens "
            f"{DELAY_S * 1000:.0f} ms apart, every word carrying the marker it was sent "
            f"(`sNNwKKK`); requests seen with markers: {', '.join(asked) or 'none'}.",
            f"Full, own text: every one of the session's {TOKENS - 3} words in order, its end "
            "marker, no cursor. Another's text: any other session's marker or word in the "
            f"answer, in its final state or in any of {polls} looks at the answers while they "
            "grew. " + (f"Crossed: {crossed}. " if crossed else "")
            + (f"Incomplete: {sorted(set(numbers) - set(whole))}. "
               if len(whole) < SESSIONS else "")
            + (f"Click to final text shown: median {median(durations):.1f} s, max "
               f"{max(durations):.1f} s (the stream alone takes "
               f"{(TOKENS - 1) * DELAY_S:.1f} s; the server took median "
               f"{median(streamed) or 0:.1f} s, max {max(streamed, default=0):.1f} s to send "
               "them, first request to last end "
               f"{max(e for _, e in server.streams) - min(s for s, _ in server.streams):.1f} s)."
               if durations else ""),
            f"Memory: VmRSS of the `streamlit run` process and its children from "
            f"/proc/<pid>/status every 0.2 s ({len(rss.samples)} samples): {idle_mb:.0f} MB "
            f"idle after start, {opened_mb:.0f} MB with the {SESSIONS} sessions open, peak "
            f"{peak or 0:.0f} MB. Load average (1 min) at the end: {os.getloadavg()[0]:.1f}.",
        ])
