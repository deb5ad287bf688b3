"""Share links in Chromium against the real app: a link opens read-only for another user
and not after its owner revokes it; a revoked or made-up token says so plainly, also to a
visitor without a login where config.yaml allows that (who then reaches nothing else)."""

from __future__ import annotations

import re
from collections.abc import Callable

from playwright.sync_api import Browser, Page

from studio.records.store import SHARE_RUN, RunStore
from studio.runs.request import RunRequest
from tests.browser.conftest import IDLE
from tests.servers.ollama import FakeOllama
from tests.servers.streamlit_app import AppServer

ServeApp = Callable[..., AppServer]
PASSWORD = "share-pass-3"
SECRETS = "[passwords]\n" + "".join(f'{name} = "{PASSWORD}"\n' for name in ("ann", "bob"))
ANSWER = "Install 31 panels facing south."
ACTIONS = re.compile(r"Generate|Delete|Playground|Share|Revoke|Stop|Run", re.IGNORECASE)


def config(url: str, share_without_login: bool = False) -> str:
    return (f"llm:\n  backend: ollama\n  host: {url}\n  model: llama3.1:8b\n"
            f"app:\n  fallback_to_embedded: false\n"
            f"  share_without_login: {str(share_without_login).lower()}\n")


def seed(app: AppServer, user: str) -> int:
    store = RunStore(app.history_db)
    request = RunRequest(backend="ollama", host="http://admin:s3cret@gpu-box:11434",
                         model="llama3.1:8b", system="system", prompt="a prompt")
    run_id = store.start_run(request, "playground", user=user)
    store.finish_run(run_id, ANSWER, "finished")
    store.close()
    return run_id


def new_page(browser: Browser) -> Page:
    return browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()


def log_in(page: Page, url: str, name: str) -> None:
    """Open ``url`` (a new browser session) and log in there; the page stays on ``url``."""
    page.goto(url)
    page.wait_for_selector("text=Log in", timeout=30_000)
    page.locator("input[aria-label='User name']").fill(name)
    page.locator("input[aria-label='Password']").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_selector("text=Log out", timeout=30_000)
    page.wait_for_selector(IDLE, timeout=30_000)


def wait_for_text(page: Page, text: str) -> None:
    """Until the page's main area reads ``text`` (an answer's figures are marked up apart)."""
    page.wait_for_function(
        "text => document.querySelector(\"[data-testid='stMain']\")?.innerText"
        ".includes(text)", arg=text, timeout=30_000)


def main_text(page: Page) -> str:
    page.wait_for_selector(IDLE, timeout=30_000)
    return page.locator("[data-testid='stMain']").inner_text()


def main_actions(page: Page) -> list[str]:
    names = [button.inner_text() for button in
             page.locator("[data-testid='stMain'] button").all()]
    return [name for name in names if ACTIONS.search(name)]


def test_a_share_link_opens_read_only_for_another_user_and_not_after_revocation(
        browser: Browser, serve_app: ServeApp) -> None:
    with FakeOllama() as server:
        app = serve_app(config(server.url), secrets=SECRETS)
        run_id = seed(app, "ann")
        ann = new_page(browser)
        log_in(ann, f"{app.url}/history", "ann")
        box = ann.get_by_role("spinbutton", name="Open run by id")
        box.fill(str(run_id))
        box.press("Enter")
        ann.get_by_role("button", name="🔗 Share this run").click()
        code = ann.locator("[data-testid='stCode']").filter(has_text="token=")
        code.wait_for(timeout=20_000)
        link = code.inner_text().strip()
        assert link.startswith(f"{app.url}/shared?token="), link

        bob = new_page(browser)
        log_in(bob, link, "bob")  # the login keeps the link's page and token
        wait_for_text(bob, ANSWER)
        text = main_text(bob)
        assert "s3cret" not in bob.content() and "gpu-box" in text
        assert main_actions(bob) == []  # nothing to run, edit or delete
        bob.get_by_role("link", name="History").click()
        bob.wait_for_selector("text=No runs match.", timeout=20_000)  # still only bob's

        ann.get_by_role("link", name="Shared").click()
        ann.get_by_role("button", name="Revoke…").click()
        ann.get_by_role("button", name="Yes, revoke").click()
        ann.wait_for_selector("text=revoked", timeout=20_000)

        log_in(bob, link, "bob")
        bob.wait_for_selector("text=This link was revoked on", timeout=30_000)
        assert ANSWER not in main_text(bob)


def test_a_revoked_or_made_up_token_says_so_plainly(browser: Browser,
                                                   serve_app: ServeApp) -> None:
    with FakeOllama() as server:
        app = serve_app(config(server.url, share_without_login=True), secrets=SECRETS)
        store = RunStore(app.history_db)
        live = store.create_share(SHARE_RUN, seed(app, "ann"), user="ann", only="ann")
        revoked = store.create_share(SHARE_RUN, seed(app, "ann"), user="ann", only="ann")
        assert live is not None and revoked is not None
        store.revoke_share(revoked.token, user="ann", only="ann")
        page = new_page(browser)  # never logged in: config.yaml lets links open
        page.goto(f"{app.url}/shared?token={live.token}")
        wait_for_text(page, ANSWER)
        body = page.inner_text("body")
        assert "History" not in body and "Playground" not in body and "Log out" not in body
        assert page.locator("[data-testid='stSidebar']").count() == 0 \
            or not page.locator("[data-testid='stSidebar']").inner_text().strip()
        assert main_actions(page) == []
        page.goto(f"{app.url}/history?token={live.token}")  # another page: the login form
        page.wait_for_selector("text=Log in", timeout=30_000)
        assert "Run history" not in main_text(page) and ANSWER not in main_text(page)

        page.goto(f"{app.url}/shared?token={revoked.token}")
        page.wait_for_selector("text=This link was revoked on", timeout=30_000)
        assert "ask its owner for a new one" in main_text(page)
        page.goto(f"{app.url}/shared?token={'Q' * 43}")
        page.wait_for_selector("text=No shared item has this link: check it was copied whole.",
                               timeout=30_000)
        assert ANSWER not in main_text(page)
