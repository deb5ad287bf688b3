"""The pages at a laptop's 1280x800, with the sidebar open: what a click changes is in view,
and no label, value or table column is cut off."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Locator, Page

from studio.pv.library import load_locations
from tests.browser.conftest import IDLE, open_app
from tests.browser.test_compare import pane
from tests.servers.latency import Fail, LatencyServer
from tests.servers.ollama import FakeOllama, Script, tokenize
from tests.servers.streamlit_app import AppServer
from tests.servers.vllm import FakeVLLM, completion

ServeApp = Callable[..., AppServer]
WIDTH, HEIGHT = 1280, 800
QWEN = "qwen3:8b"
ANSWER = "## RECOMMENDATION\n\nInstall **32 panels** within the budget."
WARNING = "The context window is too small"

# Text that the page cuts short because it does not fit: what Streamlit ends with an ellipsis
# (metric labels and values, button and widget labels), and the shown value of a select box
# (an input: its text is clipped).
CUT_TEXT = """() => {
  const main = '[data-testid="stMain"] ';
  const ellipsis = [...document.querySelectorAll(main + '*')].filter(element =>
      element.offsetParent !== null && element.clientWidth > 0 && element.tagName !== 'INPUT'
      && getComputedStyle(element).textOverflow === 'ellipsis'
      && element.scrollWidth > element.clientWidth + 1).map(element =>
      element.textContent.trim() || element.closest('[data-testid]').innerText.trim());
  const selects = [...document.querySelectorAll(main + 'input[role="combobox"]')].filter(
      input => input.offsetParent !== null && input.scrollWidth > input.clientWidth + 1
    ).map(input => input.value);
  return [...ellipsis, ...selects];
}"""


@pytest.fixture
def laptop(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    yield page
    context.close()


def cut_text(page: Page) -> list[str]:
    result: list[str] = page.evaluate(CUT_TEXT)
    return result


def in_view(locator: Locator) -> bool:
    """Whether the element is inside the window now, whole."""
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= HEIGHT


def wait_in_view(locator: Locator, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if in_view(locator):
            return True
        time.sleep(0.1)
    return False


def tables_that_scroll_sideways(page: Page) -> list[str]:
    """The tables (by number) whose columns do not all fit: they scroll sideways. The grid
    lays itself out after the page is idle: watched for a moment."""
    page.wait_for_selector("[data-testid='stMain'] [data-testid='stDataFrame'] .dvn-scroller")
    found: list[str] = []
    deadline = time.monotonic() + 2
    while not found and time.monotonic() < deadline:
        found = page.evaluate("""() => [...document.querySelectorAll(
            '[data-testid="stMain"] [data-testid="stDataFrame"]')].map((table, index) => {
              const scroller = table.querySelector('.dvn-scroller');
              const wide = scroller && scroller.scrollWidth > scroller.clientWidth + 1;
              return wide ? `table ${index + 1}: ${scroller.scrollWidth} px in ` +
                            `${scroller.clientWidth}` : '';
            }).filter(Boolean)""")
        time.sleep(0.2)
    return found


def click_low_on_the_screen(page: Page, name: str) -> None:
    """Click the button where an analyst meets it after the prompts: at the window's bottom
    edge (Playwright alone would scroll it to the middle first)."""
    button = page.get_by_role("button", name=name, exact=True)
    button.evaluate("button => button.scrollIntoView({block: 'end'})")
    button.click()


def warning_in_view(page: Page) -> bool:
    """The window warning and its choices are on screen (after a smooth scroll)."""
    return (wait_in_view(page.get_by_text(WARNING).first)
            and wait_in_view(page.get_by_role("button", name="Run anyway")))


def ollama_config(url: str, model: str = QWEN) -> str:
    return (f"llm:\n  backend: ollama\n  host: {url}\n  model: {model}\n"
            "app:\n  fallback_to_embedded: false\n")


def test_the_playgrounds_window_warning_is_brought_into_view(laptop: Page,
                                                             serve_app: ServeApp) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 2048}) as server:
        open_app(laptop, serve_app(ollama_config(server.url, "llama3.1:8b")))
        click_low_on_the_screen(laptop, "Generate")
        laptop.wait_for_selector(f"text={WARNING}", timeout=20_000)
        laptop.wait_for_selector(IDLE)
        assert warning_in_view(laptop)
        assert server.chat_requests == []


@pytest.mark.parametrize(("path", "title", "button"), [
    ("compare", "Compare backends", "Compare"), ("batch", "Batch", "Run batch")])
def test_the_compare_and_batch_window_warnings_are_brought_into_view(
        laptop: Page, serve_app: ServeApp, path: str, title: str, button: str) -> None:
    with FakeOllama(trained_context={"llama3.1:8b": 2048}) as server:
        app = serve_app(ollama_config(server.url, "llama3.1:8b"))
        laptop.goto(f"{app.url}/{path}")
        laptop.wait_for_selector(f"text={title}", timeout=30_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        click_low_on_the_screen(laptop, button)
        laptop.wait_for_selector(f"text={WARNING}", timeout=60_000)
        laptop.wait_for_selector(IDLE)
        assert warning_in_view(laptop)
        assert server.chat_requests == []


def test_no_statistic_or_button_is_cut_short_after_a_run(laptop: Page,
                                                        serve_app: ServeApp) -> None:
    """A reasoning model's run (the longest labels), then a one-piece vLLM answer that hit
    max tokens ("Hit max tokens"), read in the Playground and again in History."""
    script = Script(tokens=tokenize(ANSWER), thinking=tokenize("The load is 53.76 kWh. " * 3))
    with FakeOllama(models=[QWEN], version="0.18.0", script=script,
                    capabilities={QWEN: ["completion", "thinking"]}) as ollama, \
            FakeVLLM(200, completion(ANSWER, finish_reason="length")) as vllm:
        app = serve_app(ollama_config(ollama.url)
                        + f"backends:\n  vllm:\n    host: {vllm.url}\n    model: smollm2\n")
        open_app(laptop, app)
        laptop.get_by_role("button", name="Generate").click()
        laptop.wait_for_selector("text=Time to first thinking token", timeout=30_000)
        laptop.wait_for_selector(IDLE)
        assert cut_text(laptop) == []

        backend = laptop.get_by_role("combobox", name="Backend")
        backend.click()
        laptop.get_by_role("option", name="vLLM", exact=True).click()
        laptop.wait_for_selector(IDLE)
        laptop.get_by_role("button", name="Generate").click()
        laptop.wait_for_selector("text=Hit max tokens", timeout=30_000)
        laptop.wait_for_selector(IDLE)
        assert laptop.get_by_text("(one piece)").count() > 0
        assert cut_text(laptop) == []

        laptop.locator("[data-testid='stSidebarNav'] a").filter(has_text="History").click()
        laptop.wait_for_selector("text=Run history", timeout=30_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        assert tables_that_scroll_sideways(laptop) == []
        by_id = laptop.locator("input[aria-label='Open run by id']")
        for run_id in ("2", "1"):  # one run alone (statistics, buttons), then side by side
            by_id.fill(run_id)
            by_id.press("Enter")
            laptop.wait_for_selector(IDLE)
            if run_id == "2":
                laptop.get_by_role("button", name="Open in Playground").wait_for(
                    timeout=10_000)
                assert laptop.get_by_text("Grounding:").count() == 1
            else:
                laptop.wait_for_selector(".st-key-history_pane_1", timeout=10_000)
            assert cut_text(laptop) == []


def test_compare_at_four_panes_cuts_no_name_and_shows_every_figure(
        laptop: Page, serve_app: ServeApp) -> None:
    """Four panes across cut "Embedded (SmolLM2)" to "Embedded (SmolLI", and the table of
    fifteen columns hid its right-hand ones."""
    with FakeOllama(models=["llama3.1:8b"], script=Script(tokens=tokenize(ANSWER))) as ollama, \
            FakeVLLM(200, completion(ANSWER)) as vllm:
        app = serve_app(ollama_config(ollama.url, "llama3.1:8b")
                        + f"backends:\n  vllm:\n    host: {vllm.url}\n    model: smollm2\n")
        laptop.goto(f"{app.url}/compare")
        laptop.wait_for_selector("text=Compare backends", timeout=30_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        panes = laptop.locator("input[aria-label='Panes']")
        panes.fill("4")
        panes.press("Enter")
        laptop.wait_for_selector("text=Pane 4", timeout=20_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        shown = [pane(laptop, number).get_by_role("combobox", name="Backend").input_value()
                 for number in (1, 2, 3, 4)]
        assert "Embedded (SmolLM2)" in shown
        assert cut_text(laptop) == []
        for number in (2, 3, 4):  # four panes that answer at once
            backend = pane(laptop, number).get_by_role("combobox", name="Backend")
            backend.click()
            backend.fill("Ollama")
            laptop.keyboard.press("Enter")
            laptop.wait_for_selector(IDLE, timeout=30_000)
        laptop.get_by_role("button", name="Compare", exact=True).click()
        laptop.wait_for_selector("text=Wall time of the last round", timeout=60_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        assert tables_that_scroll_sideways(laptop) == []
        assert cut_text(laptop) == []


def test_the_batch_table_fits_and_a_batch_that_all_failed_reads_red(
        laptop: Page, serve_app: ServeApp) -> None:
    rows = len(load_locations())
    failures = {location.name: Fail(400) for location in load_locations()}  # not retried
    with LatencyServer(latency=0.01, failures=failures) as server:
        app = serve_app(f"llm:\n  backend: vllm\n  host: {server.url}\n  model: smollm2\n"
                        "app:\n  fallback_to_embedded: false\n")
        laptop.goto(f"{app.url}/batch")
        laptop.wait_for_selector("text=Run batch", timeout=30_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        laptop.get_by_role("button", name="Run batch").click()
        laptop.wait_for_selector("text=Wall time", timeout=120_000)
        laptop.wait_for_selector(IDLE, timeout=30_000)
        assert f"{rows} of {rows} rows ended: 0 done · {rows} failed" in laptop.locator(
            "[data-testid='stProgress']").inner_text()
        alert = laptop.locator("[data-testid='stAlertContentError']")
        assert f"All {rows} rows failed" in alert.inner_text()
        assert tables_that_scroll_sideways(laptop) == []
        assert cut_text(laptop) == []
