"""A shared server's pages (AppTest): the login page, a typed admin name, Log out in every
session of a user, and who may pull or cancel a pull."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamlit.testing.v1 import AppTest

from backends.ollama_backend import OllamaBackend
from studio.process import process
from studio.records.store import RunStore
from studio.runs.request import RunRequest
from tests.conftest import Start, history_page, log_in
from tests.servers.ollama import FakeOllama


def ollama(url: str, model: str = "llama3.1:8b", **app: Any) -> dict[str, Any]:
    return {"llm": {"backend": "ollama", "host": url, "model": model}, "app": dict(app)}


def logged_in(at: AppTest) -> bool:
    return any(b.label == "Log out" for b in at.button)


def plain(markdown: str) -> str:
    """Text shown literally (studio.records.render.literal) without its escapes."""
    return markdown.replace("\\", "")


def buttons(at: AppTest) -> list[str]:
    return [plain(b.label) for b in at.button]


def test_the_login_page_says_a_shared_password_makes_names_labels(
        start: Start, fake_ollama: FakeOllama) -> None:
    at = start(ollama(fake_ollama.url))
    text = " ".join(caption.value for caption in at.caption)
    assert "label" in text and "not a proof of who you are" in text
    named = start(ollama(fake_ollama.url), secrets={"passwords": {"ann": "a-pass"}})
    assert not any("label" in caption.value for caption in named.caption)


def test_a_wrong_shared_password_with_a_name_says_only_the_password_is_wrong(
        start: Start, fake_ollama: FakeOllama) -> None:
    at = log_in(start(ollama(fake_ollama.url)), "alice", "wrong")
    assert not logged_in(at)
    (error,) = at.error
    assert error.value.startswith("Wrong password.") and "name" not in error.value


def test_an_admins_name_typed_with_the_shared_password_reads_and_deletes_nothing_else(
        start: Start, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    at = start(ollama(fake_ollama.url, admins=["root"]))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    request = RunRequest(backend="ollama", host="h", model="m", system="", prompt="p")
    anns = store.start_run(request, "playground", user="ann")
    log_in(at, "root")
    history_page(at)
    assert any(c.value == "No runs match." for c in at.caption)  # ann's run is not root's
    at.number_input(key="history_open_id").set_value(anns).run()
    assert f"There is no run #{anns}" in at.warning[0].value
    assert "Delete…" not in buttons(at) and store.get(anns) is not None


def test_an_admin_with_a_password_of_their_own_sees_every_run(
        start: Start, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    at = start(ollama(fake_ollama.url, admins=["root"]),
               secrets={"passwords": {"root": "r-pass", "ann": "a-pass"}})
    store = RunStore(str(tmp_path / "history.sqlite3"))
    request = RunRequest(backend="ollama", host="h", model="m", system="", prompt="p")
    anns = store.start_run(request, "playground", user="ann")
    log_in(at, "root", "r-pass")
    history_page(at)
    assert list(at.dataframe[0].value["id"]) == [anns]


def test_log_out_in_one_session_logs_out_every_session_of_that_user(
        start: Start, fake_ollama: FakeOllama) -> None:
    config = ollama(fake_ollama.url)
    first, second, bobs = start(config), start(config), start(config)
    for at, name in ((first, "ann"), (second, "ann"), (bobs, "bob")):
        assert logged_in(log_in(at, name))
    (log_out,) = [b for b in first.button if b.label == "Log out"]
    log_out.click().run()
    assert not logged_in(first) and "Log in" in buttons(first)
    second.run()  # the other tab's next action
    assert not logged_in(second) and "Log in" in buttons(second)
    assert any("You were logged out" in info.value for info in second.info)
    bobs.run()
    assert logged_in(bobs)  # another user's session stands
    assert logged_in(log_in(second, "ann"))  # and ann may log in again
    (log_out,) = [b for b in second.button if b.label == "Log out"]
    assert "every session" in (log_out.help or "")  # the button says so


def test_a_visitor_on_a_shared_server_gets_no_pull_button_and_the_reason(start: Start) -> None:
    with FakeOllama(pullable={"qwen3:8b": [1000]}) as server:
        at = log_in(start(ollama(server.url, model="qwen3:8b")), "ann")
        assert "qwen3:8b is not on the server" in plain(at.sidebar.warning[0].value)
        assert not any(label.startswith("⬇ Pull") for label in buttons(at))
        assert "only an admin pulls models" in plain(at.sidebar.info[0].value)
        listed = log_in(start(ollama(server.url, model="qwen3:8b", pull_allow=["qwen3"])),
                        "bob")
        assert "⬇ Pull qwen3:8b" in buttons(listed)
    assert server.pulls == []


def test_an_admin_pulls_but_not_from_another_registry(start: Start) -> None:
    secrets = {"passwords": {"root": "r-pass"}}
    evil = "127.0.0.1:11798/library/evil:latest"
    with FakeOllama(pullable={"qwen3:8b": [1000]}) as server:
        root = log_in(start(ollama(server.url, model="qwen3:8b", admins=["root"]), secrets),
                      "root", "r-pass")
        assert "⬇ Pull qwen3:8b" in buttons(root)
        root = log_in(start(ollama(server.url, model=evil, admins=["root"]), secrets),
                      "root", "r-pass")
        assert not any(label.startswith("⬇ Pull") for label in buttons(root))
        assert "another registry (127.0.0.1:11798)" in plain(root.sidebar.info[0].value)
    assert server.pulls == []


def test_only_whoever_started_a_pull_gets_its_cancel(start: Start) -> None:
    with FakeOllama(pullable={"qwen3:8b": [10_000_000] * 50}, pull_delay=0.2) as server:
        job = process().pulls.start(OllamaBackend(server.url), server.url, "qwen3:8b",
                                    started_by="ann")
        try:
            config = ollama(server.url, model="qwen3:8b", pull_allow=["qwen3"])
            bob = log_in(start(config), "bob")
            assert "Cancel pull" not in buttons(bob)
            assert any("only they or an admin can cancel" in c.value for c in bob.caption)
            ann = log_in(start(config), "ann")
            assert "Cancel pull" in buttons(ann)
        finally:
            job.stop()
            assert job.wait(10)
