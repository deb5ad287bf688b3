"""Text the app does not write itself, in Chromium: a host's credentials appear on no page and
in no download; model names, error texts and an imported batch's ids, shown on every page,
are literal text that makes the browser fetch nothing."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Locator, Page
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from studio.records.batch_files import import_results
from studio.records.store import RunStore
from tests.browser.conftest import IDLE
from tests.servers.ollama import FakeOllama, Script
from tests.servers.streamlit_app import AppServer
from tests.test_access import Canary

ServeApp = Callable[..., AppServer]
PASSWORD = "s3cretHostPW"
ANSWER = Script(tokens=["Install", " 12", " panels", "."])


def open_page(page: Page, app: AppServer, path: str, marker: str) -> None:
    page.goto(f"{app.url}/{path}")
    page.wait_for_selector(f"text={marker}", timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)


def settle(page: Page) -> None:
    page.wait_for_selector(IDLE, timeout=60_000)
    time.sleep(0.5)  # a rerun that starts right after the last one
    page.wait_for_selector(IDLE, timeout=60_000)


def choose(page: Page, box: Locator, option: str) -> None:
    """Pick ``option`` in a select box."""
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def download(page: Page, name: str) -> tuple[str, bytes]:
    """Click a download button on an idle page: (file name, content). A click during a
    rerun (a download button reruns the app) can be lost: then it is clicked again."""
    for attempt in range(3):
        settle(page)
        try:
            with page.expect_download(timeout=15_000) as info:
                page.get_by_role("button", name=name).first.click()
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
            continue
        got = info.value
        return got.suggested_filename, Path(got.path()).read_bytes()
    raise AssertionError("not reached")


def download_buttons(page: Page) -> list[str]:
    labels = page.locator("[data-testid='stDownloadButton'] button").all_inner_texts()
    return list(dict.fromkeys(label.strip() for label in labels))


def open_run(page: Page, run_id: int) -> None:
    box = page.locator("input[aria-label='Open run by id']")
    box.fill(str(run_id))
    box.press("Enter")
    settle(page)


class Seen:
    """Everything the browser got: the pages' HTML and text, and every download's files."""

    def __init__(self) -> None:
        self.where: dict[str, str] = {}

    def page(self, page: Page, what: str) -> None:
        settle(page)
        self.where[f"{what} (HTML)"] = page.content()
        self.where[f"{what} (text)"] = page.inner_text("body")

    def downloads(self, page: Page, what: str) -> list[str]:
        """Every download button of the page, clicked; a ZIP's files read one by one."""
        names = download_buttons(page)
        for name in names:
            file_name, content = download(page, name)
            if file_name.endswith(".zip"):
                with zipfile.ZipFile(io.BytesIO(content)) as archive:
                    for inner in archive.namelist():
                        self.where[f"{what}: {file_name}/{inner}"] = \
                            archive.read(inner).decode("utf-8")
            else:
                self.where[f"{what}: {file_name}"] = content.decode("utf-8")
        return names

    def containing(self, secret: str) -> list[str]:
        return [where for where, text in self.where.items() if secret in text]


def test_host_credentials_appear_on_no_page_and_in_no_download(
        page: Page, serve_app: ServeApp, closed_port: int) -> None:
    with FakeOllama(script=ANSWER) as ollama:
        good = ollama.url.replace("http://", f"http://demo:{PASSWORD}@")
        down = f"http://demo:{PASSWORD}@127.0.0.1:{closed_port}"
        app = serve_app(
            f"llm:\n  backend: ollama\n  host: {good}\n  model: llama3.1:8b\n"
            f"  max_tokens: 64\n"
            f"backends:\n  ollama:\n    hosts: ['{down}']\n  vllm:\n    host: '{down}'\n"
            "app:\n  allow_custom_hosts: false\n  fallback_to_embedded: false\n")
        seen = Seen()

        # Playground: a finished run (statistics, downloads), every backend's status line.
        open_page(page, app, "", "Generate")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Stop reason", timeout=30_000)
        page.get_by_text("All backends", exact=True).click()
        page.wait_for_selector("text=vLLM", timeout=10_000)
        seen.page(page, "Playground, a run done")
        assert seen.downloads(page, "Playground") == ["⬇ Markdown", "⬇ HTML", "⬇ JSON"]
        # The server that is down: its status line, and a run that fails.
        host = page.get_by_role("combobox", name="Host")
        choose(page, host, f"http://127.0.0.1:{closed_port}")
        page.wait_for_selector("text=Not reachable", timeout=20_000)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Cannot reach Ollama", timeout=30_000)
        seen.page(page, "Playground, the host down")

        # Compare: pane 1 answers, pane 2 (vLLM, down) fails.
        open_page(page, app, "compare", "Compare backends")
        choose(page, page.get_by_role("combobox", name="Backend").nth(2), "vLLM")
        page.get_by_role("button", name="Compare", exact=True).click()
        page.wait_for_selector("text=Report (HTML)", timeout=60_000)
        seen.page(page, "Compare")
        assert len(seen.downloads(page, "Compare")) == 2

        # Batch: every location, its table and files; the earlier batches.
        open_page(page, app, "batch", "Run batch")
        page.get_by_role("button", name="Run batch").click()
        page.wait_for_selector("text=Answers (ZIP)", timeout=120_000)
        page.get_by_text("Resume an earlier batch", exact=True).click()
        seen.page(page, "Batch")
        assert len(seen.downloads(page, "Batch")) == 3  # JSONL, CSV, ZIP

        # History: the list, one run, two side by side, the exports.
        open_page(page, app, "history", "Run history")
        seen.page(page, "History")
        open_run(page, 1)
        page.wait_for_selector(".st-key-history_answer", timeout=10_000)
        seen.page(page, "History, one run")
        open_run(page, 2)
        page.wait_for_selector(".st-key-history_pane_1", timeout=10_000)
        seen.page(page, "History, two runs")
        assert len(seen.downloads(page, "History")) == 2

    assert len(seen.where) > 20
    assert any("127.0.0.1" in text for text in seen.where.values())  # hosts are shown...
    assert seen.containing(PASSWORD) == []  # ...never their password
    assert seen.containing("demo:") == []


def beacon_batch(canary: str) -> tuple[str, str]:
    """An imported batch whose model, custom ids and error text carry markdown images."""
    model = f"![i]({canary}/imported-model.png)"
    ids = [f"![c]({canary}/custom-id-{n}.png)" for n in (1, 2)]
    lines = [json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": model, "max_tokens": 64, "temperature": 0.0,
                                  "messages": [{"role": "user", "content": "PV?"}]}})
             for cid in ids]
    results = [
        json.dumps({"id": "1", "custom_id": ids[0], "response": None, "error": {
            "message": f"![x]({canary}/imported-error.png) <img src='{canary}/img.png'>"}}),
        json.dumps({"id": "2", "custom_id": ids[1], "error": None, "response": {
            "status_code": 200, "body": {"choices": [{"message": {
                "content": "Install 12 panels."}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5}}}}),
    ]
    return "\n".join(lines), "\n".join(results)


def test_names_and_errors_with_markdown_are_literal_text_and_fetch_nothing(
        page: Page, serve_app: ServeApp, tmp_path: Path) -> None:
    with Canary() as canary:
        model = f"![m]({canary.url}/model.png)"
        error = f"![e]({canary.url}/error.png) **bold** [link]({canary.url}/link)"
        db = tmp_path / "history.sqlite3"
        import_results(RunStore(db), *beacon_batch(canary.url), label="results.jsonl")
        with FakeOllama(models=[model, "llama3.1:8b"], script=ANSWER) as ollama:
            app = serve_app(f"llm:\n  backend: ollama\n  host: {ollama.url}\n"
                            f"  model: '{model}'\napp:\n  fallback_to_embedded: false\n",
                            history_db=db)
            open_page(page, app, "", "Generate")
            page.get_by_role("button", name="Generate").click()  # run 3: answered
            page.wait_for_selector("text=Stop reason", timeout=30_000)
            settle(page)
            ollama.script = Script(status=500, error=error)
            page.get_by_role("button", name="Generate").click()  # run 4: the server's error
            page.wait_for_selector("text=Ollama answered HTTP 500", timeout=30_000)
            settle(page)
            main = page.locator("[data-testid='stMain']")
            assert error in main.inner_text()

            open_page(page, app, "history", "Run history")
            for run_id in (1, 3):  # one run: the imported failure, the model's own run
                open_page(page, app, "history", "Run history")
                open_run(page, run_id)
                page.wait_for_selector(".st-key-history_answer", timeout=10_000)
                text = main.inner_text()
                assert f"{canary.url}/" in text  # the names, as typed
            open_run(page, 4)  # side by side: the model's run and its error
            page.wait_for_selector(".st-key-history_pane_1", timeout=10_000)
            text = main.inner_text()
            assert model in text and error in text
            open_page(page, app, "history", "Run history")
            open_run(page, 1)
            open_run(page, 2)  # side by side: the two imported rows
            page.wait_for_selector(".st-key-history_pane_1", timeout=10_000)
            text = main.inner_text()
            assert f"![i]({canary.url}/imported-model.png)" in text
            assert f"![x]({canary.url}/imported-error.png)" in text
            time.sleep(1)  # give any image the chance to load
            assert main.locator("img").count() == 0
            # No markdown link: Streamlit (GFM) may link a bare URL, but only as itself.
            links = main.locator("a").evaluate_all(
                "els => els.map(e => [e.getAttribute('href'), e.innerText])")
            assert all(href == text for href, text in links if not href.startswith("#")), links
        assert canary.hits == [], f"the page fetched {canary.hits}"
