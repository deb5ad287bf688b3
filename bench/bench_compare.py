"""3. Compare: a 2-pane run (Ollama streaming, vLLM in one piece) against the slower pane
alone, in Chromium. The panes run at once, so a round should take the slower pane's time.

Three figures: the page's own "Wall time of the last round / slowest pane"; the round's wall
time over the slower backend run alone on the Playground (same servers, same prompt); and the
same seen from the browser: click to both answers shown, over click to the answer shown alone.
"""

from __future__ import annotations

import re
import secrets
import time

from playwright.sync_api import Browser, Locator, Page, expect

from bench.browser import chromium, new_page, open_page, pick_sidebar_backend, settle
from bench.common import Figure, Result, at_most, median
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import FakeVLLM, completion

ROUNDS = 3  # comparisons; and runs of each backend alone on the Playground
OLLAMA_TOKENS, OLLAMA_DELAY_S = 200, 0.01
VLLM_DELAY_S = 2.0
CURSOR_FREE = """([selectors, markers]) => selectors.every((selector, i) => {
    const text = document.querySelector(selector)?.textContent || '';
    return text.includes(markers[i]) && !text.includes('\\u258c');
})"""


def _config(ollama_url: str, vllm_url: str) -> str:
    return (f"llm:\n  backend: ollama\n  host: {ollama_url}\n  model: llama3.1:8b\n"
            f"backends:\n  vllm:\n    host: {vllm_url}\n    model: smollm2\n"
            "app:\n  fallback_to_embedded: false\n")


def _new_answers(ollama: FakeOllama, vllm: FakeVLLM) -> tuple[str, str]:
    """Answers unique to this round, so the right paint is waited for; their end markers."""
    tag = secrets.token_hex(3)
    ollama_end, vllm_end = f"OLLAMA-END-{tag}", f"VLLM-END-{tag}"
    words = " ".join(f"word{i}" for i in range(OLLAMA_TOKENS - 4))
    tokens = tokenize(f"## OLLAMA PANE\n\n{words} {ollama_end}")
    assert len(tokens) == OLLAMA_TOKENS, len(tokens)
    ollama.script = Script(tokens=tokens, delay=OLLAMA_DELAY_S)
    vllm.body = completion(f"## VLLM PANE\n\nInstall **31 panels**. {vllm_end}",
                           completion_tokens=12)
    return ollama_end, vllm_end


def _pane(page: Page, number: int) -> Locator:
    """The bordered settings box of pane ``number`` (1-based)."""
    boxes = page.locator("[data-testid='stMain'] [data-testid='stVerticalBlock']").filter(
        has=page.get_by_text(f"Pane {number}", exact=True))
    for other in (n for n in range(1, 5) if n != number):
        boxes = boxes.filter(has_not=page.get_by_text(f"Pane {other}", exact=True))
    return boxes.last


def _set_up_panes(page: Page) -> None:
    """Pane 1 on Ollama (the sidebar's backend), pane 2 switched to vLLM, both reachable."""
    for number, label, model in ((1, "Ollama", "llama3.1:8b"), (2, "vLLM", "smollm2")):
        backend = _pane(page, number).get_by_role("combobox", name="Backend")
        if backend.input_value() != label:
            backend.click()
            page.get_by_role("option", name=label, exact=True).click()
        box = _pane(page, number)
        expect(box.get_by_role("combobox", name="Backend")).to_have_value(label)
        expect(box.get_by_role("combobox", name="Model")).to_have_value(model, timeout=15_000)
        expect(box.get_by_text("Reachable", exact=False)).to_be_visible(timeout=15_000)
    settle(page)


def _seconds(page: Page, pattern: str, timeout_ms: int = 30_000) -> tuple[float, ...]:
    """Numbers from the first text on the page matching ``pattern`` (a regex with groups)."""
    regex = re.compile(pattern)
    locator = page.get_by_text(regex).first
    locator.wait_for(timeout=timeout_ms)
    match = regex.search(locator.inner_text())
    assert match, locator.inner_text()
    return tuple(float(group.replace(",", "")) for group in match.groups())


def compare_round(browser: Browser, url: str, ollama: FakeOllama,
                  vllm: FakeVLLM) -> dict[str, float]:
    with new_page(browser) as page:
        open_page(page, f"{url}/compare", ready_text="Compare backends")
        _set_up_panes(page)
        markers = _new_answers(ollama, vllm)
        clicked = time.monotonic()
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_function(
            CURSOR_FREE, arg=[[".st-key-pane_answer_0", ".st-key-pane_answer_1"], markers],
            timeout=60_000, polling=20)
        seen = time.monotonic() - clicked
        wall, slowest = _seconds(page, r"Wall time of the last round: ([\d.,]+) s "
                                       r"\(slowest pane ([\d.,]+) s\)")
        settle(page)
    return {"wall": wall, "slowest": slowest, "seen": seen}


def alone_run(browser: Browser, url: str, ollama: FakeOllama, vllm: FakeVLLM,
              kind: str) -> dict[str, float]:
    with new_page(browser) as page:
        open_page(page, url)
        if kind == "vllm":
            pick_sidebar_backend(page, "vLLM", "smollm2")
        ollama_end, vllm_end = _new_answers(ollama, vllm)
        marker = vllm_end if kind == "vllm" else ollama_end
        clicked = time.monotonic()
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(CURSOR_FREE, arg=[[".st-key-answer"], [marker]],
                               timeout=60_000, polling=20)
        seen = time.monotonic() - clicked
        metric = page.locator("[data-testid='stMetric']").filter(has_text="Total time")
        metric.wait_for(timeout=30_000)
        found = re.search(r"([\d.,]+) s", metric.inner_text())
        assert found, metric.inner_text()
        total = float(found.group(1).replace(",", ""))
        settle(page)
    return {"total": total, "seen": seen}


def run() -> Result:
    rounds: list[dict[str, float]] = []
    alone: dict[str, list[dict[str, float]]] = {"ollama": [], "vllm": []}
    with FakeOllama() as ollama, \
            FakeVLLM(200, completion("-"), delay=VLLM_DELAY_S) as vllm, \
            AppServer("app.py", _config(ollama.url, vllm.url)) as app, \
            chromium() as browser:
        for _ in range(ROUNDS):  # interleaved, so other load on the machine hits all alike
            rounds.append(compare_round(browser, app.url, ollama, vllm))
            for kind, runs in alone.items():
                runs.append(alone_run(browser, app.url, ollama, vllm, kind))

    def med(runs: list[dict[str, float]], key: str) -> float:
        value = median([r[key] for r in runs])
        assert value is not None
        return value

    def listed(runs: list[dict[str, float]], key: str) -> str:
        return ", ".join(f"{r[key]:.2f}" for r in runs)

    page_ratio = median([r["wall"] / r["slowest"] for r in rounds])
    slower = max(alone, key=lambda kind: med(alone[kind], "total"))
    alone_total = med(alone[slower], "total")
    wall_ratio = med(rounds, "wall") / alone_total
    slower_seen = max(med(runs, "seen") for runs in alone.values())
    seen_ratio = med(rounds, "seen") / slower_seen
    names = {"ollama": "Ollama", "vllm": "vLLM"}
    return Result(
        title="Compare: 2 panes at once vs the slower pane alone",
        figures=[
            Figure(f"Page's wall time / its slowest pane (median of {ROUNDS})", page_ratio,
                   "", "<= 1.1", at_most(page_ratio, 1.1)),
            Figure("Comparison wall time / slower backend alone on the Playground",
                   wall_ratio, "", "<= 1.1", at_most(wall_ratio, 1.1)),
            Figure("Click to both answers shown / click to the slower answer shown alone",
                   seen_ratio),
        ],
        notes=[
            f"Pane 1: Ollama (FakeOllama), {OLLAMA_TOKENS} tokens {OLLAMA_DELAY_S * 1000:.0f}"
            f" ms apart, streamed. Pane 2: vLLM (FakeVLLM), one piece after "
            f"{VLLM_DELAY_S:.0f} s. Both started by one click on Compare (Repeat 1) in "
            "Chromium; every comparison and every Playground run in a fresh browser session, "
            f"with answers unique to the run; {ROUNDS} of each, interleaved.",
            f"Page's figures, s: wall {listed(rounds, 'wall')}; slowest pane "
            f"{listed(rounds, 'slowest')} (the comparison's own clock: from starting the panes"
            " to the last one ending, and the slowest run's elapsed time).",
            "Alone: the same backend and prompt from the Playground, its 'Total time' "
            f"statistic, s: Ollama {listed(alone['ollama'], 'total')}; vLLM "
            f"{listed(alone['vllm'], 'total')}. The slower alone (by median): "
            f"{names[slower]}, {alone_total:.2f} s; comparison wall median "
            f"{med(rounds, 'wall'):.2f} s (one pane after the other would take about the sum, "
            f"{sum(med(runs, 'total') for runs in alone.values()):.2f} s). The page shows "
            "seconds with two decimals, so its ratios are good to about 0.01.",
            "As seen in the browser (click until the final text of every pane is in the DOM, "
            f"polled every 20 ms), s: comparison {listed(rounds, 'seen')}; alone Ollama "
            f"{listed(alone['ollama'], 'seen')}, vLLM {listed(alone['vllm'], 'seen')}. "
            "This includes the page's own work (rerun, repaint) on both sides.",
        ])
