"""The Shared page (AppTest): a share link opens its run or group read-only, for another
user too and, where config allows, without a login (that page only); revoked and made-up
links say so; your links list with Revoke; no credential is ever shown."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from studio.pv.library import load_locations
from studio.records.store import SHARE_GROUP, SHARE_RUN, RunStore
from studio.runs.evaluation import KIND as EVALUATION_KIND
from studio.runs.evaluation import Choice, EvaluationSpec
from studio.runs.request import RunRequest
from tests.conftest import PAGES, history_page, log_in, open_app, switch_to, use_config

SECRET = "hunter2-secret"
PASSWORDS = {"passwords": {"ann": "a-pass", "bob": "b-pass"}}


def db(tmp_path: Path) -> Path:
    return tmp_path / "history.sqlite3"


def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **app: Any) -> RunStore:
    use_config(tmp_path, monkeypatch, {"llm": {"backend": "embedded"},
                                       "app": {"history_db": str(db(tmp_path)), **app}})
    monkeypatch.delenv("PV_STUDIO_PASSWORD", raising=False)
    return RunStore(db(tmp_path))


def seed(store: RunStore, user: str = "", answer: str = "Install **31 panels**.",
         group_id: int | None = None, position: int = 0) -> int:
    request = RunRequest(backend="ollama", host=f"http://admin:{SECRET}@gpu-box:11434",
                         model="llama3.1:8b", system="system", prompt=f"prompt of {user}",
                         preset="San Diego, CA")
    run_id = store.start_run(request, "compare" if group_id else "playground", group_id,
                             position, user=user)
    store.finish_run(run_id, answer, "finished", stats={"output_tokens": 12})
    # An older file may hold a host with its credentials: the page still never shows them.
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET host = ? WHERE id = ?", (request.host, run_id))
    return run_id


def shared(at: AppTest, token: str | None) -> AppTest:
    if token is not None:
        at.query_params["token"] = token
    return switch_to(at, "shared.py")


def page_text(at: AppTest) -> str:
    parts = [element.value for kind in ("title", "markdown", "caption", "error", "warning",
                                        "info", "subheader", "code")
             for element in getattr(at.main, kind)]
    return "\n".join(str(part) for part in parts).replace("\\", "")


def main_buttons(at: AppTest) -> list[str]:
    return [button.label for button in at.main.button]


def test_a_shared_run_opens_read_only_without_credentials(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    run_id = seed(store)
    share = store.create_share(SHARE_RUN, run_id, user="", title="My run")
    assert share is not None
    at = shared(open_app(), share.token)
    text = page_text(at)
    assert "My run" in text and "31 panels" in text and "gpu-box" in text
    assert SECRET not in text and SECRET not in str(at.main)
    assert main_buttons(at) == []  # nothing to run, edit or delete


def test_revoked_and_made_up_links_say_so_plainly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    share = store.create_share(SHARE_RUN, seed(store), user="")
    assert share is not None and store.revoke_share(share.token, user="")
    at = shared(open_app(), share.token)
    assert "This link was revoked on" in page_text(at)
    assert "ask its owner for a new one" in page_text(at)
    assert "31 panels" not in page_text(at)
    made_up = shared(open_app(), "A" * 43)
    assert "No shared item has this link: check it was copied whole." in page_text(made_up)


def test_a_deleted_run_says_it_was_deleted(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    run_id = seed(store)
    share = store.create_share(SHARE_RUN, run_id, user="")
    assert share is not None
    store.delete(run_id)
    assert "deleted from the history since" in page_text(shared(open_app(), share.token))


def test_a_shared_comparison_shows_its_panes_and_no_other_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    group = store.create_group("compare")
    for position in range(2):
        seed(store, answer=f"Pane answer {position}", group_id=group, position=position)
    seed(store, answer="Not in the group")
    share = store.create_share(SHARE_GROUP, group, user="", title="Comparison")
    assert share is not None
    text = page_text(shared(open_app(), share.token))
    assert "Pane answer 0" in text and "Pane answer 1" in text
    assert "Not in the group" not in text and SECRET not in text


def test_history_shares_a_run_and_the_list_revokes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    run_id = seed(store)
    at = history_page()
    at.multiselect(key="history_open").select(run_id).run()
    (share_button,) = [b for b in at.button if b.label == "🔗 Share this run"]
    share_button.click().run()
    (link,) = [code.value for code in at.code if "token=" in code.value]
    token = link.rpartition("token=")[2]
    assert store.get_share(token) is not None
    links = shared(at, None)
    assert main_buttons(links) == ["Revoke…"]  # the list's only button
    links.button(key=f"revoke_{token}").click().run()
    assert sorted(main_buttons(links)) == ["Keep it", "Yes, revoke"]
    links.button(key=f"revoke_yes_{token}").click().run()
    assert store.get_share(token).revoked  # type: ignore[union-attr]
    assert main_buttons(links) == [] and "revoked" in page_text(links)


def test_another_user_opens_the_link_and_keeps_their_own_history(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    run_id = seed(store, user="ann", answer="Ann's answer")
    assert store.create_share(SHARE_RUN, run_id, user="bob", only="bob") is None
    share = store.create_share(SHARE_RUN, run_id, user="ann", only="ann")
    assert share is not None
    bob = log_in(open_app(secrets=PASSWORDS), "bob", "b-pass")
    assert "Ann's answer" in page_text(shared(bob, share.token))
    assert main_buttons(bob) == []
    history = history_page(bob)
    assert history.dataframe[0].value.empty  # bob's History holds only bob's runs
    bob.query_params.clear()
    assert "You have shared nothing yet" in page_text(shared(bob, None))


def test_without_a_login_a_link_opens_only_where_config_allows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    share = store.create_share(SHARE_RUN, seed(store, user="ann"), user="ann", only="ann")
    assert share is not None
    at = open_app(secrets=PASSWORDS)
    at.query_params["token"] = share.token
    at.run()
    assert [b.label for b in at.button] == ["Log in"]  # not allowed: the login form only
    at = shared(at, share.token)  # the link's own page: the login form too, then the item
    assert [b.label for b in at.button] == ["Log in"]
    assert "31 panels" not in str(at.main) and "31 panels" not in page_text(at)
    assert "31 panels" in page_text(log_in(at, "bob", "b-pass"))


def test_an_anonymous_link_shows_that_item_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch, share_without_login=True)
    share = store.create_share(SHARE_RUN, seed(store, user="ann"), user="ann", only="ann")
    revoked = store.create_share(SHARE_RUN, seed(store, user="ann"), user="ann", only="ann")
    assert share is not None and revoked is not None
    store.revoke_share(revoked.token, user="ann")
    at = open_app(secrets=PASSWORDS)
    assert [b.label for b in at.button] == ["Log in"]  # no token: the login form
    at = shared(at, share.token)
    assert "31 panels" in page_text(at) and SECRET not in str(at.main)
    assert not at.sidebar.selectbox and not at.sidebar.button  # no pickers, no Log out
    assert main_buttons(at) == []
    # No other page of the app is in this session's navigation: the login form and this.
    with pytest.raises(ValueError, match=r"Known pages: \['Log in', '[^']*shared.py'\]"):
        at.switch_page(str(PAGES / "history.py"))
    # The token is checked at every run: a revoked one, or none, shows nothing.
    at = shared(at, revoked.token)
    assert "This link was revoked on" in page_text(at)
    at.query_params.clear()
    at.run()
    assert "Your shared links" not in page_text(at)
    assert [b.label for b in at.button] == ["Log in"]


def test_history_shares_a_runs_comparison(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    group = store.create_group("compare")
    run_id = seed(store, group_id=group)
    at = history_page()
    at.multiselect(key="history_open").select(run_id).run()
    (button,) = [b for b in at.button if b.label == "🔗 Share its comparison"]
    button.click().run()
    (share,) = store.list_shares()
    assert (share.kind, share.target_id, share.title) == (SHARE_GROUP, group,
                                                         f"Comparison #{group}")


def test_a_shared_batch_lists_its_rows_and_reads_one(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    group = store.create_group("batch")
    for position in range(3):
        seed(store, answer=f"Row answer {position}", group_id=group, position=position)
    share = store.create_share(SHARE_GROUP, group, user="")
    assert share is not None
    at = shared(open_app(), share.token)
    assert list(at.dataframe[0].value["row"]) == [1, 2, 3]
    at.selectbox(key="shared_row").select(2).run()
    assert "Row answer 2" in page_text(at) and main_buttons(at) == []


def test_a_shared_evaluation_shows_a_locations_cells(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    store = configure(tmp_path, monkeypatch)
    locations = load_locations()[:2]
    spec = EvaluationSpec(choices=tuple(Choice(backend="ollama", host="http://h:11434",
                                               model=model) for model in ("m1", "m2")),
                          scenarios=locations, system="s")
    group = store.create_group(EVALUATION_KIND, spec=spec.to_json())
    for position in range(spec.cells):
        seed(store, answer=f"Cell answer {position}", group_id=group, position=position)
    share = store.create_share(SHARE_GROUP, group, user="")
    assert share is not None
    at = shared(open_app(), share.token)
    assert list(at.dataframe[0].value["location"]) == [row.name for row in locations]
    at.selectbox(key="shared_location").select(1).run()
    text = page_text(at)
    assert "Cell answer 1" in text and "Cell answer 3" in text  # choice 1 and 2, row 2
    assert "Cell answer 0" not in text and main_buttons(at) == []
