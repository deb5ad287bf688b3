"""A shared demo server under attack, in Chromium against the real app: Streamlit's own
``clear_cache`` message does not reset the login throttle, and an upload over the cap is
refused before anyone has logged in. The test talks to the app's websocket as the page does
(Playwright's route_web_socket), with Streamlit's own protobuf messages."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
from collections.abc import Callable

import requests
from playwright.sync_api import Browser, Page, WebSocketRoute
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from studio.records.store import RunStore
from studio.runs.request import RunRequest
from tests.browser.conftest import IDLE
from tests.conftest import wait_until
from tests.servers.ollama import FakeOllama
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[..., AppServer]
PASSWORD = "demo-pass-7"
STREAM = re.compile(r".*/_stcore/stream$")
UPLOAD_CAP_MB = 32  # .streamlit/config.toml: server.maxUploadSize


def config(url: str) -> str:
    return (f"llm:\n  backend: ollama\n  host: {url}\n  model: llama3.1:8b\n"
            f"app:\n  fallback_to_embedded: false\n")


def new_page(browser: Browser, address: str = "") -> Page:
    """A browser session; ``address``: the client as a reverse proxy on this host names it
    (``X-Forwarded-For``, which uvicorn trusts from loopback)."""
    return browser.new_context(
        viewport={"width": 1400, "height": 1000},
        extra_http_headers={"X-Forwarded-For": address} if address else None).new_page()


class Socket:
    """The page's websocket to the app, passed through: the test can send BackMsgs of its
    own on it and reads the session id from the app's Initialize message."""

    def __init__(self, page: Page) -> None:
        self.server: WebSocketRoute | None = None
        self.session_id = ""
        page.route_web_socket(STREAM, self._route)

    def _route(self, page_side: WebSocketRoute) -> None:
        server = self.server = page_side.connect_to_server()

        def from_server(message: str | bytes) -> None:
            if isinstance(message, bytes):
                msg = ForwardMsg.FromString(message)
                if msg.HasField("new_session") and msg.new_session.initialize.session_id:
                    self.session_id = msg.new_session.initialize.session_id
            page_side.send(message)

        server.on_message(from_server)

    def send(self, msg: BackMsg) -> None:
        assert self.server is not None, "the page has no websocket yet"
        self.server.send(msg.SerializeToString())


def try_login(page: Page, name: str, password: str) -> None:
    page.locator("input[aria-label='Your name']").fill(name)
    page.locator("input[aria-label='Password']").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_streamlits_clear_cache_does_not_reset_the_login_throttle(
        browser: Browser, serve_app: ServeApp) -> None:
    with FakeOllama() as server:
        app = serve_app(config(server.url), env={"PV_STUDIO_PASSWORD": PASSWORD})
        insider = new_page(browser)  # a logged-in user on the History page
        insider.goto(app.url)
        try_login(insider, "bob", PASSWORD)
        insider.wait_for_selector("text=Generate", timeout=30_000)
        insider.get_by_role("link", name="History").click()
        insider.wait_for_selector("text=Run history", timeout=20_000)
        insider.wait_for_selector(IDLE)
        # A run left 'running' by a dead process: the app's RunStore (st.cache_resource)
        # marks it interrupted when it is opened, so a new store means the cache was cleared.
        dead = dead_run(app)

        guesser = new_page(browser, "203.0.113.66")  # the attacker: never logged in
        attacker = Socket(guesser)
        guesser.goto(app.url)
        guesser.wait_for_selector("input[aria-label='Password']", timeout=30_000)
        try_login(guesser, "ann", "guess-1")
        guesser.wait_for_selector("text=Wrong password", timeout=20_000)
        for count in (2, 3):
            guesser.wait_for_selector(IDLE)
            try_login(guesser, "ann", f"guess-{count}")
            guesser.wait_for_selector(f"text={count} failed logins", timeout=20_000)
        guesser.wait_for_selector(IDLE)

        attacker.send(BackMsg(clear_cache=True))  # what the attacker sent, before any login
        insider.get_by_role("link", name="Playground").click()
        insider.wait_for_selector("text=Generate", timeout=20_000)
        insider.get_by_role("link", name="History").click()
        assert wait_until(lambda: stored_status(app, dead) == "interrupted", 20,
                          poll_s=0.1)  # it arrived

        try_login(guesser, "ann", "guess-4")
        guesser.wait_for_selector("text=4 failed logins", timeout=30_000)  # not back to 1

        # Another client, another name: the attacker's failures are not theirs.
        colleague = new_page(browser, "198.51.100.7")
        colleague.goto(app.url)
        colleague.wait_for_selector("input[aria-label='Password']", timeout=30_000)
        try_login(colleague, "carol", "typo")
        colleague.wait_for_selector("text=Wrong password", timeout=20_000)
        assert "failed logins" not in colleague.inner_text("body")
        colleague.wait_for_selector(IDLE)
        try_login(colleague, "carol", PASSWORD)
        colleague.wait_for_selector("text=Generate", timeout=30_000)


def dead_run(app: AppServer) -> int:
    store = RunStore(str(app.history_db))
    run_id = store.start_run(RunRequest(backend="ollama", host="h", model="m", system="",
                                        prompt="p"), "playground", user="bob")
    with sqlite3.connect(app.history_db) as db:
        db.execute("UPDATE runs SET owner = ? WHERE id = ?",
                   (f"{socket.gethostname()}:{os.getpid()}:not-this-process", run_id))
    assert stored_status(app, run_id) == "running"
    return run_id


def stored_status(app: AppServer, run_id: int) -> str:
    with sqlite3.connect(app.history_db) as db:
        (status,) = db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
    return str(status)



def test_an_upload_over_the_cap_is_refused_before_login(browser: Browser,
                                                        serve_app: ServeApp) -> None:
    with FakeOllama() as server:
        app = serve_app(config(server.url), env={"PV_STUDIO_PASSWORD": PASSWORD})
        page = new_page(browser)
        socket = Socket(page)
        page.goto(app.url)
        page.wait_for_selector("input[aria-label='Password']", timeout=30_000)
        assert socket.session_id and "Generate" not in page.inner_text("body")
        (xsrf,) = [c["value"] for c in page.context.cookies() if c["name"] == "_streamlit_xsrf"]

        def upload(size: int, file_id: str) -> requests.Response:
            return requests.put(
                f"{app.url}/_stcore/upload_file/{socket.session_id}/{file_id}",
                files={"file": ("results.jsonl", b"x" * size, "application/octet-stream")},
                headers={"X-Xsrftoken": xsrf}, cookies={"_streamlit_xsrf": xsrf}, timeout=60)

        small = upload(1000, "small")
        assert small.status_code in (200, 204), small.text  # the endpoint takes a small file
        assert upload(UPLOAD_CAP_MB * 1024 * 1024 + 4096, "big").status_code == 413
