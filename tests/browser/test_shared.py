"""A shared demo server in Chromium: the login gate, hosts fixed by config.yaml (a canary that
must receive nothing), and each user seeing only their own runs."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

from oidc_provider_mock import User, run_server_in_thread
from playwright.sync_api import Browser, Page

from tests.browser.conftest import IDLE, answer_text, open_app
from tests.servers.ollama import FakeOllama, Script
from tests.servers.streamlit_app import AppServer
from tests.test_access import Canary

ServeApp = Callable[..., AppServer]
PASSWORD = "demo-pass-7"
ANSWER = Script(tokens=["Install", " 12", " panels", "."])


def config(url: str, **app: Any) -> str:
    lines = "".join(f"  {key}: {value}\n" for key, value in app.items())
    return (f"llm:\n  backend: ollama\n  host: {url}\n  model: llama3.1:8b\n"
            f"app:\n  fallback_to_embedded: false\n{lines}")


def login(page: Page, url: str, name: str, password: str) -> None:
    page.goto(url)
    page.wait_for_selector("text=Log in", timeout=30_000)
    page.locator("input[aria-label='Your name'], input[aria-label='User name']").fill(name)
    page.locator("input[aria-label='Password']").fill(password)
    page.get_by_role("button", name="Log in").click()


def new_page(browser: Browser) -> Page:
    return browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()


def test_the_gate_lets_only_the_right_password_in_per_session(
        browser: Browser, serve_app: ServeApp) -> None:
    with FakeOllama(script=ANSWER) as server:
        app = serve_app(config(server.url), env={"PV_STUDIO_PASSWORD": PASSWORD})
        page = new_page(browser)
        page.goto(app.url)
        page.wait_for_selector("text=Log in", timeout=30_000)
        page.wait_for_selector(IDLE)
        body = page.inner_text("body")
        assert "Generate" not in body and "Backend" not in body  # nothing but the form
        assert server.chat_requests == [] and "Playground" not in body

        login(page, app.url, "ann", "wrong")
        page.wait_for_selector("text=Wrong password", timeout=20_000)
        assert "Generate" not in page.inner_text("body")

        login(page, app.url, "ann", PASSWORD)
        page.wait_for_selector("text=Generate", timeout=30_000)
        assert "Logged in as ann" in page.inner_text("[data-testid='stSidebar']")

        other = new_page(browser)  # a second browser session logs in on its own
        other.goto(app.url)
        other.wait_for_selector("text=Log in", timeout=30_000)
        assert "Generate" not in other.inner_text("body")

        page.get_by_role("button", name="Log out").click()
        page.wait_for_selector("text=Log in", timeout=20_000)
        assert "Generate" not in page.inner_text("body")


def test_hosts_are_picked_from_config_and_a_typed_one_is_never_contacted(
        browser: Browser, serve_app: ServeApp) -> None:
    with FakeOllama(script=ANSWER) as server, Canary() as canary:
        app = serve_app(config(server.url), env={"PV_STUDIO_PASSWORD": PASSWORD})
        page = new_page(browser)
        login(page, app.url, "ann", PASSWORD)
        page.wait_for_selector("text=Generate", timeout=30_000)
        host = page.get_by_role("combobox", name="Host")  # a choice, not a text box
        assert host.input_value() == server.url
        assert page.get_by_role("textbox", name="Host").count() == 0  # nothing to type in
        # Try to type the canary's URL into the host box (a select box: not one of its
        # options, so it cannot be picked), then run.
        host.click()
        page.keyboard.type(canary.url)
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        page.wait_for_selector(IDLE)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('panels')",
            timeout=20_000)
        time.sleep(0.5)
        assert len(server.chat_requests) == 1  # the run went to the configured host
    assert canary.hits == []


def test_each_user_sees_only_their_own_runs(browser: Browser, serve_app: ServeApp) -> None:
    """Per-user passwords (with a shared password a name proves nothing, so it makes no
    admin: tests/test_shared_pages.py)."""
    with FakeOllama(script=ANSWER) as server:
        app = serve_app(config(server.url, admins=["root"]),
                        secrets="[passwords]\n" + "".join(f'{name} = "{PASSWORD}"\n'
                                                          for name in ("ann", "bob", "root")))
        for name in ("ann", "bob"):
            page = new_page(browser)
            login(page, app.url, name, PASSWORD)
            page.wait_for_selector("text=Generate", timeout=30_000)
            page.get_by_role("button", name="Generate").click()
            page.wait_for_function(
                "document.querySelector('.st-key-answer')?.innerText.includes('panels')",
                timeout=20_000)
            assert "panels" in answer_text(page)
            page.wait_for_selector(IDLE)
        page = new_page(browser)
        login(page, app.url, "bob", PASSWORD)
        page.wait_for_selector("text=Generate", timeout=30_000)
        page.get_by_role("link", name="History").click()
        page.wait_for_selector("text=Runs 1–1 of 1", timeout=20_000)
        admin = new_page(browser)
        login(admin, app.url, "root", PASSWORD)
        admin.wait_for_selector("text=Generate", timeout=30_000)
        admin.get_by_role("link", name="History").click()
        admin.wait_for_selector("text=Runs 1–2 of 2", timeout=20_000)
    with sqlite3.connect(app.history_db) as db:
        assert sorted(db.execute("SELECT user FROM runs").fetchall()) == [("ann",), ("bob",)]


def test_single_sign_on_through_a_local_oidc_provider(browser: Browser,
                                                      serve_app: ServeApp) -> None:
    """An [auth] section: Streamlit's st.login against a real (local) OpenID provider; the
    identity is the email claim, and the user's runs are theirs."""
    claims = [User(sub="ann", claims={"email": "ann@example.com", "name": "Ann"})]
    with FakeOllama(script=ANSWER) as server, \
            run_server_in_thread(port=0, user_claims=claims) as provider:
        secrets = (
            "[auth]\n"
            'redirect_uri = "{url}/oauth2callback"\n'
            'cookie_secret = "a-long-random-cookie-secret-for-this-test-only"\n'
            'client_id = "pv-studio"\nclient_secret = "pv-studio-secret"\n'
            f'server_metadata_url = "http://127.0.0.1:{provider.server_port}'
            '/.well-known/openid-configuration"\n')
        app = serve_app(config(server.url), secrets=secrets)
        page = new_page(browser)
        page.goto(app.url)
        page.wait_for_selector("text=Log in", timeout=30_000)
        assert "Generate" not in page.inner_text("body")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_selector("text=Authorize Client", timeout=20_000)  # the provider's page
        page.get_by_role("button", name="ann").click()  # a predefined user
        page.wait_for_selector("text=Generate", timeout=30_000)
        assert "Logged in as ann@example.com" in page.inner_text("[data-testid='stSidebar']")
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('panels')",
            timeout=60_000)
        page.wait_for_selector(IDLE)
        # Log out ends the user's other sessions too: another tab, at its next click.
        other = page.context.new_page()
        other.goto(app.url)
        other.wait_for_selector("text=Generate", timeout=30_000)
        other.wait_for_selector(IDLE)
        page.get_by_role("button", name="Log out").click()
        # The Log out has been handled once its own tab is sent to the provider's logout.
        page.wait_for_url("**/oauth2/end_session**", timeout=30_000)
        other.get_by_role("button", name="↻ Refresh models").click()
        # Its next click logs it out too: Streamlit sends it back to the app's start, which
        # asks for a login. (No goto of our own: on a busy machine that navigation, still on
        # its way, overtook it.)
        other.wait_for_selector("text=Log in", timeout=30_000)
        assert "Logged in as" not in other.inner_text("body")
        assert "Generate" not in other.inner_text("body")
    with sqlite3.connect(app.history_db) as db:
        assert db.execute("SELECT user FROM runs").fetchall() == [("ann@example.com",)]


def test_a_tab_closed_mid_run_gives_its_slot_to_the_queued_run(
        browser: Browser, serve_app: ServeApp) -> None:
    """One slot per backend: the second tab's run waits, "next in line". The first tab
    closes mid-answer; its run stops once nobody watches it, and the second run starts."""
    # Minutes of distinct words (a repeating answer would be stopped as a loop).
    slow = Script(tokens=[f"word{number} " for number in range(3000)], delay=0.05)
    with FakeOllama(script=slow) as server:
        app = serve_app(config(server.url, max_runs_per_backend=1, stop_unwatched_after_s=2))
        first = open_app(new_page(browser), app)
        first.get_by_role("button", name="Generate").click()
        first.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('word')",
            timeout=20_000)
        second = open_app(new_page(browser), app)
        second.get_by_role("button", name="Generate").click()
        second.wait_for_selector("text=Queued for Ollama: next in line", timeout=20_000)
        assert len(server.chat_requests) == 1
        first.context.close()  # the tab goes; its run is still streaming
        second.wait_for_function(
            "document.querySelector('.st-key-answer')?.innerText.includes('word')",
            timeout=30_000)
        assert len(server.chat_requests) == 2
        second.get_by_role("button", name="Stop").click()
        second.wait_for_selector(IDLE, timeout=20_000)
    with sqlite3.connect(app.history_db) as db:
        rows = db.execute("SELECT status, error FROM runs ORDER BY id").fetchall()
    assert [status for status, _ in rows] == ["stopped", "stopped"]
    assert "tab closed" in rows[0][1] and rows[1][1] is None
