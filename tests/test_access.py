"""A shared server: who may log in, what the server may contact, whose runs each user sees,
and the fair-capacity queue a run waits in."""

from __future__ import annotations

import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from backends.errors import InvalidHostError
from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling
from studio.records.batch_files import MAX_FILE_BYTES
from studio.records.store import RunStore
from studio.runs.capacity import Capacity, Limits
from studio.runs.connection import build, probe
from studio.runs.request import RunRequest
from studio.runs.runner import Recording, Run
from studio.settings.access import (
    OPEN,
    PASSWORD,
    SSO,
    Access,
    Logins,
    LoginThrottle,
    access_from,
    check_login,
    login_keys,
    login_refusal,
)
from studio.settings.config import parse_config
from tests.servers.base import LocalServer
from tests.servers.ollama import FakeOllama, Script

REPO = Path(__file__).resolve().parents[1]


class Canary(LocalServer):
    """A server that must never be contacted: it counts every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                canary.hits.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_POST = do_GET

        super().__init__(Handler)


class Redirector(LocalServer):
    """A configured host that answers every request with a redirect to ``target``."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", target + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET

        super().__init__(Handler)


def test_modes_come_from_the_environment_and_secrets() -> None:
    assert access_from({}, {}).mode == OPEN
    assert access_from({}, {}).allow_custom_hosts and not access_from({}, {}).shared
    by_env = access_from({}, {"PV_STUDIO_PASSWORD": "s3cret"})
    assert by_env.mode == PASSWORD and by_env.shared and not by_env.allow_custom_hosts
    assert access_from({"password": "x"}, {}).mode == PASSWORD
    assert access_from({"passwords": {"ann": "a"}}, {}).passwords == {"ann": "a"}
    sso = access_from({"auth": {"redirect_uri": "https://x/oauth2callback"}}, {})
    assert sso.mode == SSO and sso.shared
    assert access_from({}, {}, allow_custom_hosts=False).shared  # no login, hosts fixed


def test_the_shared_password_wants_a_name_and_the_right_password() -> None:
    rules = Access(PASSWORD, password="s3cret")
    assert check_login(rules, "Ann ", "s3cret") == "Ann"
    assert check_login(rules, "Ann", "wrong") is None
    assert check_login(rules, "", "s3cret") is None
    assert check_login(rules, "Ann", "") is None


def test_a_refused_login_says_only_what_was_wrong() -> None:
    shared = Access(PASSWORD, password="s3cret")
    assert login_refusal(shared, "alice", "wrong") == "Wrong password."
    assert login_refusal(shared, " ", "s3cret") == "A name is needed."
    assert login_refusal(shared, "alice", "") == "The password is needed."
    assert login_refusal(shared, "", "") == "A name and the password are needed."
    table = Access(PASSWORD, passwords={"ann": "a-pass"})
    assert login_refusal(table, "eve", "a-pass") == "Wrong name or password."
    assert login_refusal(table, "", "a-pass") == "A name is needed."


def test_per_user_passwords_check_the_name_too() -> None:
    rules = Access(PASSWORD, passwords={"ann": "a-pass", "bob": "b-pass"})
    assert check_login(rules, "ann", "a-pass") == "ann"
    assert check_login(rules, "ann", "b-pass") is None
    assert check_login(rules, "eve", "a-pass") is None


def test_admins_see_everything_users_their_own_and_no_login_everyone() -> None:
    rules = Access(PASSWORD, passwords={"root": "r", "ann": "a"}, admins=("root",))
    assert rules.sees_all("root") and not rules.sees_all("ann")
    assert Access(SSO, admins=("ops@example.com",)).sees_all("ops@example.com")
    assert Access().sees_all("")


def test_with_a_shared_password_an_admins_name_is_only_a_label() -> None:
    """Anyone with the shared password can type any name: app.admins does not apply."""
    rules = Access(PASSWORD, password="x", admins=("root",))
    assert not rules.names_proven and not rules.is_admin("root")
    assert not rules.sees_all("root") and not rules.sees_all("ann")


def test_a_clients_failures_slow_down_its_next_attempts_then_refuse_them() -> None:
    """Each failure doubles the gap before the next answer, counted from the previous answer;
    past the longest wait an attempt is refused without a check."""
    throttle = LoginThrottle(window_s=60, max_delay=8)
    keys = login_keys("session-1", "198.51.100.7", "ann")
    waits = []
    for _ in range(5):
        attempt = throttle.begin(keys)
        waits.append(attempt.wait)
        throttle.end(attempt, ok=False)
    assert waits == pytest.approx([0, 0.5, 1.5, 3.5, 7.5], abs=0.05)
    refused = throttle.begin(keys)
    assert refused.refused and refused.retry_in >= 7
    assert throttle.failures(keys) == 5
    throttle.end(refused, ok=False)  # a refused attempt was not checked: it counts nothing
    assert throttle.failures(keys) == 5


def test_parallel_attempts_count_before_their_answer() -> None:
    """Twenty sessions of one client at once: they queue behind each other, and only the few
    that fit in the longest wait are checked at all."""
    throttle = LoginThrottle(window_s=60, max_delay=8)
    attempts = [throttle.begin(login_keys(f"session-{n}", "198.51.100.7", f"guess-{n}"))
                for n in range(20)]
    admitted = [attempt for attempt in attempts if not attempt.refused]
    assert [a.wait for a in admitted] == pytest.approx([0, 0.5, 1.5, 3.5, 7.5], abs=0.05)
    for attempt in attempts:
        throttle.end(attempt, ok=False)
    assert throttle.failures(["client 198.51.100.7"]) == 5


def test_an_attacker_slows_down_only_their_own_client_and_the_names_they_try() -> None:
    throttle = LoginThrottle(window_s=60, max_delay=8)
    for n in range(10):  # sessions one after another from one address, all on ann
        attempt = throttle.begin(login_keys(f"attacker-{n}", "203.0.113.66", "ann"))
        throttle.end(attempt, ok=False)
    bob = throttle.begin(login_keys("bob-tab", "198.51.100.7", "bob"))
    assert not bob.refused and bob.wait == 0  # another client, another name: no wait
    throttle.end(bob, ok=True)
    same_client = throttle.begin(login_keys("attacker-new", "203.0.113.66", "carol"))
    same_name = throttle.begin(login_keys("ann-tab", "198.51.100.8", "Ann "))
    assert same_client.refused or same_client.wait > 0
    assert same_name.refused or same_name.wait > 0


def test_failures_are_forgotten_after_the_window_and_memory_stays_bounded() -> None:
    throttle = LoginThrottle(window_s=0.05, max_delay=0.01, max_keys=50)
    for n in range(500):  # a new name, session and address each time
        attempt = throttle.begin(login_keys(f"s{n}", f"10.0.{n // 250}.{n % 250}", f"n{n}"))
        throttle.end(attempt, ok=False)
        assert len(throttle) <= 50 + 3
    time.sleep(0.1)
    keys = login_keys("s1", "10.0.0.1", "n1")
    assert throttle.failures(keys) == 0 and throttle.begin(keys).wait == 0


def test_a_loopback_client_is_one_client() -> None:
    throttle = LoginThrottle()
    keys = login_keys("s", None, "")
    assert keys == ("session s", "client loopback")
    attempt = throttle.begin(keys)
    throttle.end(attempt, ok=False)
    assert throttle.failures(login_keys("another-session", None, "")) == 1


def test_log_out_ends_every_session_of_that_user() -> None:
    logins = Logins()
    first_tab, second_tab, bobs = logins.log_in("ann"), logins.log_in("ann"), logins.log_in("bob")
    logins.log_out("ann")
    assert not logins.is_current("ann", first_tab) and not logins.is_current("ann", second_tab)
    assert logins.is_current("bob", bobs)
    assert logins.is_current("ann", logins.log_in("ann"))  # a new login stands


def test_streamlits_upload_cap_is_the_batch_imports_limit() -> None:
    """Streamlit takes uploads before any login: .streamlit/config.toml caps them at what
    the app reads at most (a batch file), not Streamlit's default 200 MB."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    cap_mb = config["server"]["maxUploadSize"]
    assert cap_mb * 1024 * 1024 == MAX_FILE_BYTES and cap_mb < 200
    assert MAX_FILE_BYTES > 2_000 * 12_000  # 2,000 results of 2,048-token answers


def shared_settings(host: str, *more: str) -> Any:
    settings = parse_config({"llm": {"backend": "ollama", "host": host},
                             "backends": {"ollama": {"hosts": list(more)}},
                             "app": {"allow_custom_hosts": False}})
    assert settings.backends["ollama"].allowed_hosts == (host, *more)
    return settings


def test_a_host_config_does_not_name_is_never_contacted() -> None:
    with FakeOllama() as allowed, Canary() as canary:
        settings = shared_settings(allowed.url)
        assert build(settings, "ollama", allowed.url).host == allowed.url
        with pytest.raises(InvalidHostError, match=r"not one of the hosts config\.yaml names"):
            build(settings, "ollama", canary.url)
        status = probe(settings, "ollama", canary.url)  # the status line's probe too
        assert not status.reachable and status.bad_host
        for metadata in ("http://169.254.169.254", "http://user:pw@10.0.0.1:8080"):
            with pytest.raises(InvalidHostError) as caught:
                build(settings, "vllm", metadata)
            assert "pw" not in str(caught.value)
    assert canary.hits == []


def test_a_redirect_to_another_host_is_not_followed() -> None:
    with Canary() as canary, Redirector(canary.url) as configured:
        backend = OllamaBackend(configured.url)
        with pytest.raises(Exception):  # noqa: B017 - whatever the 302 becomes, no request
            backend.list_models()
        with pytest.raises(Exception):  # noqa: B017
            backend.generate("Hi")
    assert canary.hits == []


def test_each_user_sees_and_deletes_only_their_runs(tmp_path: Path) -> None:
    store = RunStore(str(tmp_path / "history.sqlite3"))
    request = RunRequest(backend="ollama", host="h", model="m", system="", prompt="p")
    legacy = store.start_run(request, "playground")  # before users: belongs to no one
    ann = store.start_run(request, "playground", user="ann")
    bob = store.start_run(request, "playground", user="bob")
    assert [run.id for run in store.list_runs(user="ann")] == [ann]
    assert store.count_runs(user="bob") == 1
    assert {run.id for run in store.list_runs()} == {legacy, ann, bob}  # admins
    assert store.get(bob, user="ann") is None and store.get(bob, user="bob") is not None
    assert not store.delete(bob, user="ann") and store.get(bob) is not None
    assert [run.user for run in store.iter_runs(user="ann")] == ["ann"]
    group = store.create_group("batch", spec="{}", user="ann")
    assert store.group_summaries("batch", user="bob") == []
    assert [s.group.id for s in store.group_summaries("batch", user="ann")] == [group]


def test_a_run_waits_for_a_slot_and_says_where_it_is_in_the_queue(tmp_path: Path) -> None:
    gate = threading.Event()
    capacity = Capacity(Limits(per_backend=1))
    store = RunStore(str(tmp_path / "history.sqlite3"))
    with FakeOllama(script=Script(tokens=["a", "b", "c"], gate=gate)) as server:
        request = RunRequest(backend="ollama", host=server.url, model="llama3.1:8b",
                             system="", prompt="Hi", sampling=Sampling(max_tokens=5))
        first = Run(OllamaBackend(server.url), request, Recording(store, "playground",
                                                                  user="ann"),
                    capacity=capacity).start()
        while not first.text:
            assert not first.wait(0.01)
        second = Run(OllamaBackend(server.url), request, Recording(store, "playground",
                                                                   user="bob"),
                     capacity=capacity).start()
        assert second.queue_position == 0  # next in line, nobody else ahead
        assert len(server.chat_requests) == 1
        gate.set()
        assert first.wait(10) and second.wait(10)
        assert second.text == "abc" and len(server.chat_requests) == 2
    assert [run.user for run in store.list_runs()] == ["bob", "ann"]


def test_stop_while_queued_sends_nothing() -> None:
    capacity = Capacity(Limits(per_backend=1))
    holder = capacity.enter("ollama http://x", "ann")
    with FakeOllama() as server:
        request = RunRequest(backend="ollama", host="http://x", model="llama3.1:8b",
                             system="", prompt="Hi")
        run = Run(OllamaBackend(server.url), request, capacity=capacity).start()
        assert run.queue_position == 0
        run.stop()
        assert run.wait(5) and run.status == "stopped"
        assert server.chat_requests == []
        capacity.leave(holder)
        deadline = time.monotonic() + 3  # the stopped run's worker gives its place back
        while capacity.running() or capacity.position(holder) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert server.chat_requests == []  # admitted after its Stop: still nothing sent
