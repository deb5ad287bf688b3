"""2. Stop: from the click on the Playground's Stop button (Chromium) to the server seeing the
connection closed. An Ollama stream, and a vLLM one-piece request still being "generated", on
each of vLLM's paths (``backends.vllm.client``: the openai SDK, and plain requests).

The test servers run in this process, so their clocks (``time.monotonic()`` in the server
thread) compare directly with the time taken here just before the click.
"""

from __future__ import annotations

import time

from playwright.sync_api import Page

from backends.openai_sdk import CLIENT_OPENAI, CLIENT_REQUESTS, CLIENTS
from bench.browser import chromium, new_page, open_page, settle, wait_until
from bench.common import Figure, Result, at_most, median
from tests.servers.ollama import FakeOllama, Script
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import FakeVLLM, completion

RUNS = 5
TOKENS = 2000
DELAY_S = 0.05  # a slow stream: 20 tokens/s, 100 s in all, stopped after ~1 s
STOP_AFTER = 20  # tokens shown in the page before the click
VLLM_DELAY_S = 10.0
VLLM_WAIT_S = 1.0  # how long the one-piece request has been waiting when Stop is clicked
# Who sent a chat, by its User-Agent's product: the openai SDK or requests.
AGENTS = {CLIENT_OPENAI: "OpenAI", CLIENT_REQUESTS: "python-requests"}
NO_CLOSE_S = 15.0  # no hang-up seen within this: recorded as not closed


def _config(kind: str, url: str, model: str, vllm_client: str = "openai") -> str:
    return (f"llm:\n  backend: {kind}\n  host: {url}\n  model: {model}\n"
            f"backends:\n  vllm:\n    client: {vllm_client}\n"
            "app:\n  fallback_to_embedded: false\n")


def _click_stop(page: Page) -> float:
    stop = page.get_by_role("button", name="Stop")
    stop.wait_for(timeout=10_000)
    clicked = time.monotonic()
    stop.click()
    return clicked


def ollama_stops(page: Page, server: FakeOllama) -> list[float]:
    """Seconds from the click to the server's hang-up, one per run."""
    results = []
    for run in range(RUNS):
        words = [f" r{run}w{k}" for k in range(TOKENS)]  # unique per run: no stale match
        server.script = Script(tokens=words, delay=DELAY_S)
        settle(page)
        before = len(server.hangups)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "w => document.querySelector('.st-key-answer')?.textContent.includes(w)",
            arg=f"r{run}w{STOP_AFTER} ", timeout=30_000)
        clicked = _click_stop(page)
        def hung_up(n: int = before) -> bool:
            return len(server.hangups) > n

        if not wait_until(hung_up, NO_CLOSE_S):
            raise RuntimeError(f"run {run}: the Ollama server never saw the connection close")
        results.append(server.hangups[before] - clicked)
        page.wait_for_selector("text=Stopped", timeout=20_000)
        settle(page)
    return results


def vllm_stops(page: Page, server: FakeVLLM) -> list[float | None]:
    """Seconds from the click to the server noticing the hang-up; None where it never did
    within ``NO_CLOSE_S`` (the request ran to its end)."""
    results: list[float | None] = []
    for _ in range(RUNS):
        settle(page)
        calls, hangups = server.chat_calls, server.hangups
        page.get_by_role("button", name="Generate").click()
        def asked(n: int = calls) -> bool:
            return server.chat_calls > n

        def hung_up(n: int = hangups) -> bool:
            return server.hangups > n

        if not wait_until(asked, 20):
            raise RuntimeError("the vLLM server never got the request")
        time.sleep(VLLM_WAIT_S)
        clicked = _click_stop(page)
        closed = wait_until(hung_up, NO_CLOSE_S, step=0.002)
        results.append(time.monotonic() - clicked if closed else None)
        page.wait_for_selector("text=Stopped", timeout=20_000)
        settle(page)
    return results


def run() -> Result:
    with chromium() as browser:
        with FakeOllama(script=Script(delay=DELAY_S)) as ollama, \
                AppServer("app.py", _config("ollama", ollama.url, "llama3.1:8b")) as app, \
                new_page(browser) as page:
            open_page(page, app.url)
            ollama_times = ollama_stops(page, ollama)
        body = completion("## RECOMMENDATION\n\nInstall **31 panels**.", completion_tokens=9)
        vllm_times: dict[str, list[float | None]] = {}
        for client in CLIENTS:  # one server and app per client, the same steps
            with FakeVLLM(200, body, delay=VLLM_DELAY_S) as vllm, \
                    AppServer("app.py", _config("vllm", vllm.url, "smollm2", client)) as app, \
                    new_page(browser) as page:
                open_page(page, app.url)
                vllm_times[client] = vllm_stops(page, vllm)
                agents = {str(agent).split("/")[0] for agent in vllm.chat_agents}
                if agents != {AGENTS[client]}:  # the app took the configured path
                    raise RuntimeError(f"client {client}: the chats came from {agents}")

    ollama_ms = median(ollama_times)
    ollama_ms = None if ollama_ms is None else ollama_ms * 1000

    def vllm_ms(times: list[float | None]) -> float | None:
        closed = [t for t in times if t is not None]
        value = median(closed) if len(closed) == len(times) else None
        return None if value is None else value * 1000

    def listed(times: list[float | None] | list[float]) -> str:
        return ", ".join("not closed" if t is None else f"{t * 1000:.0f}" for t in times)

    paths = {CLIENT_OPENAI: "openai SDK (Path A)", CLIENT_REQUESTS: "requests (Path B)"}
    return Result(
        title="Stop: click -> server sees the connection closed",
        figures=[
            Figure(f"Ollama stream, median of {RUNS}", ollama_ms, "ms", "<= 1000",
                   at_most(ollama_ms, 1000)),
            *(Figure(f"vLLM one-piece request, {paths[client]}, median of {RUNS}",
                     vllm_ms(times), "ms", "<= 1000", at_most(vllm_ms(times), 1000))
              for client, times in vllm_times.items()),
        ],
        notes=[
            "Playground in Chromium (Playwright), `streamlit run app.py` with a config "
            "pointing at the test server; the time is taken just before Playwright clicks "
            "Stop and ends when the server thread records the hang-up (same process, "
            "`time.monotonic()`).",
            f"Ollama: FakeOllama streaming {TOKENS:,} tokens {DELAY_S * 1000:.0f} ms apart, "
            f"each run's words unique; Stop clicked once `r<run>w{STOP_AFTER}` is on the page. "
            f"Runs: {listed(ollama_times)} ms.",
            f"vLLM: FakeVLLM answering in one piece after {VLLM_DELAY_S:.0f} s; Stop clicked "
            f"{VLLM_WAIT_S:.0f} s after the request reached the server; the hang-up seen by "
            f"polling the server's counter every 2 ms; for each `backends.vllm.client` a server "
            f"and an app of its own, the same steps (the chats' User-Agent checked). Runs: "
            + "; ".join(f"{paths[client]} {listed(times)} ms" for client, times
                        in vllm_times.items())
            + (f" (\"not closed\": no hang-up within {NO_CLOSE_S:.0f} s)"
               if any(t is None for times in vllm_times.values() for t in times) else "")
            + ".",
        ])
