"""Shared pieces of the browser benchmarks (the app itself runs under
``tests.servers.streamlit_app.AppServer``): Debian's Chromium driven by Playwright, websocket
traffic counters and memory sampling.

Everything here cleans up after itself: use the context managers.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page, WebSocket, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
CURSOR = "▌"


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium under Playwright (browsers cannot be downloaded here)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError("Chromium is missing: `make dev` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync",
                  # Ten tabs at once must all keep running, not be throttled as hidden.
                  "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                  "--disable-backgrounding-occluded-windows"])
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def new_page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own: a fresh Streamlit session."""
    context: BrowserContext = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


class Traffic:
    """Websocket frames and bytes the page receives (Playwright's ``framereceived``).

    Attach before the page opens its websocket; ``mark()`` and ``since()`` measure a window.
    """

    def __init__(self, page: Page) -> None:
        self.frames = 0
        self.bytes = 0
        page.on("websocket", self._watch)

    def _watch(self, ws: WebSocket) -> None:
        ws.on("framereceived", self._received)

    def _received(self, payload: bytes | str) -> None:
        self.frames += 1
        self.bytes += len(payload) if isinstance(payload, bytes) else len(payload.encode())

    def mark(self) -> tuple[int, int]:
        return self.frames, self.bytes

    def since(self, mark: tuple[int, int]) -> tuple[int, int]:
        return self.frames - mark[0], self.bytes - mark[1]


def open_page(page: Page, url: str, ready_text: str = "Generate") -> Page:
    page.goto(url)
    page.wait_for_selector(IDLE, timeout=60_000)
    page.wait_for_selector(f"text={ready_text}", timeout=60_000)
    return page


def text_of(page: Page, selector: str) -> str:
    locator = page.locator(selector)
    return locator.first.inner_text() if locator.count() else ""


def settle(page: Page, seconds: float = 0.5, timeout: float = 30.0) -> None:
    """Wait until the script has been idle for ``seconds`` (a st.rerun() passes through a
    short idle-looking moment, so one look at the state is not enough)."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        if page.locator(IDLE).count():
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= seconds:
                return
        else:
            quiet_since = None
        page.wait_for_timeout(50)
    raise TimeoutError("the page did not become idle")


# Installed with ``page.add_init_script`` before the page loads: notes when the websocket
# message carrying the final text (the watched marker, no cursor) reaches the page's JS.
FRAME_CLOCK = """
(() => {
  const Original = window.WebSocket;
  window.__benchMarker = null; window.__benchFrame = null;
  window.WebSocket = class extends Original {
    constructor(...args) {
      super(...args);
      const decoder = new TextDecoder('utf-8');
      this.addEventListener('message', (event) => {
        const marker = window.__benchMarker;
        if (marker === null || window.__benchFrame !== null) return;
        const text = typeof event.data === 'string' ? event.data
          : event.data instanceof ArrayBuffer ? decoder.decode(event.data) : '';
        if (text.includes(marker) && !text.includes('\\u258c')) window.__benchFrame = Date.now();
      });
    }
  };
})();
"""


def watch_final(page: Page, selector: str, marker: str) -> None:
    """Start watching, in the page, for ``marker`` inside ``selector`` with no cursor.

    A MutationObserver records ``Date.now()`` when the DOM first holds the final text
    (``window.__benchDom``) and again after the next animation frame has been painted
    (``window.__benchPaint``); with ``FRAME_CLOCK`` installed, ``window.__benchFrame`` is
    when the websocket message with that text arrived. Read them with ``final_times``.
    """
    page.evaluate(
        """([selector, marker, cursor]) => {
            window.__benchDom = null; window.__benchPaint = null;
            window.__benchFrame = null; window.__benchMarker = marker;
            if (window.__benchObserver) window.__benchObserver.disconnect();
            const check = () => {
                const el = document.querySelector(selector);
                if (!el) return false;
                const text = el.textContent;
                return text.includes(marker) && !text.includes(cursor);
            };
            const seen = () => {
                window.__benchDom = Date.now();
                window.__benchObserver.disconnect();
                requestAnimationFrame(() => setTimeout(() => {
                    window.__benchPaint = Date.now(); }, 0));
            };
            window.__benchObserver = new MutationObserver(() => {
                if (window.__benchDom === null && check()) seen();
            });
            window.__benchObserver.observe(document.body,
                {subtree: true, childList: true, characterData: true});
        }""",
        [selector, marker, CURSOR])


def final_times(page: Page, timeout_s: float) -> tuple[float | None, float, float]:
    """(frame arrived or None, DOM, painted) times of ``watch_final``, in seconds on the
    ``time.time()`` scale."""
    page.wait_for_function("window.__benchPaint !== null", timeout=timeout_s * 1000,
                           polling=50)
    frame, dom, paint = page.evaluate(
        "[window.__benchFrame, window.__benchDom, window.__benchPaint]")
    return (None if frame is None else frame / 1000), dom / 1000, paint / 1000


def pick_sidebar_backend(page: Page, label: str, model: str) -> None:
    """Switch the sidebar's backend and wait until its server's model is picked."""
    sidebar = page.locator("[data-testid='stSidebar']")
    backend = sidebar.get_by_role("combobox", name="Backend")
    if backend.input_value() != label:
        backend.click()
        page.get_by_role("option", name=label, exact=True).click()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        picker = sidebar.get_by_role("combobox", name="Model")
        if (backend.input_value() == label and picker.count()
                and picker.input_value() == model):
            settle(page)
            return
        page.wait_for_timeout(100)
    raise TimeoutError(f"the sidebar did not switch to {label} / {model}")


def wait_until(condition: Callable[[], bool], timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MB (VmRSS)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total_kb = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        pending.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except OSError:
            continue
    return total_kb / 1024


class RssSampler:
    """Samples ``tree_rss_mb(pid)`` every ``interval`` seconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid, self.interval = pid, interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(tree_rss_mb(self.pid))
            if self._stop.wait(self.interval):
                return

    @property
    def peak(self) -> float | None:
        return max(self.samples) if self.samples else None

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
