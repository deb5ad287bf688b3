"""Who may use a shared server, and what it may contact (UI-free; ui.auth draws the forms).

Three modes, from the environment and ``.streamlit/secrets.toml``:
- ``sso``: an ``[auth]`` section -> Streamlit's own OIDC login (``st.login``); the identity
  is the user's email;
- ``password``: ``PV_STUDIO_PASSWORD`` or ``password`` in secrets (one shared password; the
  visitor also gives a name that keeps their history apart), or a ``[passwords]`` table
  (``name = "password"`` per user: the name is then checked too);
- ``open``: none of these, the local single-user app.

Any login makes the server shared: hosts come only from config.yaml (``allow_custom_hosts``
says otherwise explicitly), each user sees their own runs, admins see all. A name is proven
only by a ``[passwords]`` table or single sign-on; with one shared password it is a label, so
``app.admins`` applies only to proven names.

The login throttle (``LoginThrottle``) and the current logins (``Logins``) are one per
process, held by ``studio.process``'s object: no client message reaches them (Streamlit's
``clear_cache`` wipes ``st.cache_*`` and the session's state, not these).
"""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from studio.runs.pull import registry_host

PASSWORD_ENV = "PV_STUDIO_PASSWORD"
OPEN, PASSWORD, SSO = "open", "password", "sso"


@dataclass(frozen=True)
class Access:
    mode: str = OPEN
    password: str = ""  # the shared password (password mode without a [passwords] table)
    passwords: Mapping[str, str] = field(default_factory=dict)  # per-user passwords
    admins: tuple[str, ...] = ()
    allow_custom_hosts: bool = True

    @property
    def shared(self) -> bool:
        return self.mode != OPEN or not self.allow_custom_hosts

    @property
    def names_proven(self) -> bool:
        """Whether a login proves the name: a ``[passwords]`` table or single sign-on. With
        one shared password the name is a label anyone can type."""
        return self.mode == SSO or (self.mode == PASSWORD and bool(self.passwords))

    def is_admin(self, user: str) -> bool:
        """``app.admins`` counts only where names are proven."""
        return self.names_proven and bool(user) and user in self.admins

    def sees_all(self, user: str) -> bool:
        """Whether ``user`` sees (and may delete) every run: everyone without a login, else
        admins; with a shared password nobody: each name only its own runs."""
        return self.mode == OPEN or self.is_admin(user)

    def pull_refusal(self, user: str, model: str, allowed: tuple[str, ...] = ()) -> str:
        """'' when ``user`` may pull ``model``, else the sentence that says why not. Locally
        anything; on a shared server admins, or anyone for a model ``app.pull_allow`` lists
        (``allowed``); a model from another registry (a host in its name) only when listed."""
        if not self.shared:
            return ""
        listed = pull_listed(model, allowed)
        host = registry_host(model)
        if host and not listed:
            return (f"{model} names another registry ({host}). On this shared server a model "
                    "comes from another registry only when config.yaml lists it under "
                    "app.pull_allow.")
        if listed or self.is_admin(user):
            return ""
        return ("On this shared server only an admin pulls models"
                + (f" (anyone may pull: {', '.join(allowed)})" if allowed else "")
                + f". Ask an admin to pull {model}.")

    def may_cancel_pull(self, user: str, started_by: str) -> bool:
        """Cancel is for whoever started the pull, or an admin (anyone on a local app)."""
        return not self.shared or user == started_by or self.is_admin(user)


def pull_listed(model: str, allowed: Iterable[str]) -> bool:
    """Whether ``allowed`` lists ``model``: the same name (any case, no tag = ``latest``), or
    an entry without a tag, which allows every tag of that model."""
    base, tag = _name_and_tag(model)
    for entry in allowed:
        entry_base, entry_tag = _name_and_tag(entry)
        if entry_base == base and (entry_tag in (tag, "") or (entry_tag, tag) == ("latest", "")):
            return True
    return False


def _name_and_tag(model: str) -> tuple[str, str]:
    """('qwen3', '8b') for 'Qwen3:8b'; the tag is after a ':' in the last path segment."""
    name = model.strip().lower()
    head, slash, last = name.rpartition("/")
    base, colon, tag = last.partition(":")
    return head + slash + base, tag if colon else ""


def access_from(secrets: Mapping[str, Any], environ: Mapping[str, str],
                admins: tuple[str, ...] = (), allow_custom_hosts: bool | None = None) -> Access:
    """The access rules from secrets.toml (as a mapping), the environment and config.yaml's
    ``app.admins`` / ``app.allow_custom_hosts``."""
    passwords = secrets.get("passwords")
    password = environ.get(PASSWORD_ENV) or str(secrets.get("password") or "")
    if isinstance(secrets.get("auth"), Mapping):
        mode = SSO
    elif password or (isinstance(passwords, Mapping) and passwords):
        mode = PASSWORD
    else:
        mode = OPEN
    custom = (mode == OPEN) if allow_custom_hosts is None else allow_custom_hosts
    return Access(mode, password,
                  {str(k): str(v) for k, v in passwords.items()}
                  if isinstance(passwords, Mapping) else {},
                  admins, custom)


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), on bytes so any text compares."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def check_login(access: Access, name: str, password: str) -> str | None:
    """The user's identity when the credentials are right, else None."""
    name = name.strip()
    if not name or not password:
        return None
    if access.passwords:
        expected = access.passwords.get(name)
        # Compare against something even for an unknown name: the timing says nothing.
        ok = same_secret(password, expected if expected is not None else "\0" * 32)
        return name if ok and expected is not None else None
    return name if access.password and same_secret(password, access.password) else None


def login_refusal(access: Access, name: str, password: str) -> str:
    """What was wrong with a refused login, and only that: with a shared password the name
    (missing) or the password (wrong or missing); with a ``[passwords]`` table the pair,
    which does not tell whether a name exists."""
    missing = [what for what, value in (("a name", name.strip()), ("the password", password))
               if not value]
    if missing:
        return f"{' and '.join(missing).capitalize()} {'are' if len(missing) > 1 else 'is'} needed."
    return "Wrong name or password." if access.passwords else "Wrong password."


def login_keys(session_id: str, address: str | None, name: str) -> tuple[str, ...]:
    """What the throttle counts a login attempt against: this browser session, the client's
    address and the name tried. ``address``: Streamlit's ``st.context.ip_address``, None on a
    loopback connection. Behind a reverse proxy on this host it is already the client's:
    uvicorn takes it from ``X-Forwarded-For`` when the peer is a trusted proxy
    (``FORWARDED_ALLOW_IPS``, loopback by default), the last address the proxy appended."""
    name = name.strip().casefold()
    return (f"session {session_id}", f"client {address or 'loopback'}",
            *((f"name {name}",) if name else ()))


@dataclass
class _Counter:
    failures: deque[float] = field(default_factory=deque)
    pending: int = 0  # attempts being judged now: they count before their answer
    free_at: float = 0.0  # when the latest attempt is (or was) answered


@dataclass(frozen=True)
class Attempt:
    """A login attempt admitted by the throttle: wait ``wait`` seconds, check, then
    ``throttle.end(attempt, ok)``; or refused (``retry_in`` seconds) without a check."""

    keys: tuple[str, ...]
    wait: float = 0.0
    retry_in: float = 0.0
    failures: int = 0  # the most recent failures of any key, before this attempt

    @property
    def refused(self) -> bool:
        return self.retry_in > 0


class LoginThrottle:
    """Slows down repeated login failures per key (a session, a client's address, a name), so
    that one attacker slows down their own attempts and the names they try, not everyone's.

    Each failure in the last ``window_s`` (and each attempt still being judged) doubles the
    gap before a key's next answer: 0.5 s, 1 s, 2 s ... up to ``max_delay``, counted from
    that key's previous answer, so parallel attempts queue behind each other. An attempt that
    would wait longer than ``max_delay`` is refused without a check."""

    def __init__(self, window_s: float = 60.0, max_delay: float = 8.0,
                 max_keys: int = 10_000) -> None:
        self.window_s, self.max_delay, self.max_keys = window_s, max_delay, max_keys
        self._counters: dict[str, _Counter] = {}
        self._lock = threading.Lock()

    def delay_after(self, count: int) -> float:
        return 0.0 if count <= 0 else min(0.5 * 2 ** (count - 1), self.max_delay)

    def begin(self, keys: Iterable[str]) -> Attempt:
        keys = tuple(keys)
        with self._lock:
            now = time.monotonic()
            self._forget(now)
            answer_at, failures = now, 0
            for key in keys:
                counter = self._counters.get(key)
                if counter is None:
                    continue
                failures = max(failures, len(counter.failures))
                count = len(counter.failures) + counter.pending
                if count:
                    answer_at = max(answer_at, counter.free_at + self.delay_after(count))
            wait = answer_at - now
            if wait > self.max_delay:
                return Attempt(keys, retry_in=math.ceil(wait - self.max_delay),
                               failures=failures)
            for key in keys:
                counter = self._counters.setdefault(key, _Counter())
                counter.pending += 1
                counter.free_at = answer_at
            return Attempt(keys, wait=wait, failures=failures)

    def end(self, attempt: Attempt, ok: bool) -> None:
        """The attempt's answer: a failure counts for every key of it."""
        if attempt.refused:
            return
        with self._lock:
            now = time.monotonic()
            for key in attempt.keys:
                counter = self._counters.setdefault(key, _Counter())
                counter.pending = max(counter.pending - 1, 0)
                if not ok:
                    counter.failures.append(now)

    def failures(self, keys: Iterable[str]) -> int:
        """The most failures of any of ``keys`` in the last ``window_s``."""
        with self._lock:
            self._forget(time.monotonic())
            return max((len(self._counters[key].failures) for key in keys
                        if key in self._counters), default=0)

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()

    def __len__(self) -> int:
        """How many keys it holds now."""
        with self._lock:
            return len(self._counters)

    def _forget(self, now: float) -> None:
        """Drop failures older than the window and keys with nothing left; past
        ``max_keys`` the oldest idle keys go (memory stays bounded whatever names are
        tried)."""
        for key, counter in list(self._counters.items()):
            while counter.failures and now - counter.failures[0] > self.window_s:
                counter.failures.popleft()
            if not counter.failures and not counter.pending and counter.free_at <= now:
                del self._counters[key]
        excess = len(self._counters) - self.max_keys
        for key in [key for key, counter in self._counters.items()
                    if not counter.pending][:max(excess, 0)]:
            del self._counters[key]


class Logins:
    """The current logins of this process, per user. Log out ends every session of that
    user on this server (Streamlit's sessions are per tab): each session keeps the
    generation it logged in with, and a session whose generation is no longer current shows
    the login form on its next rerun."""

    def __init__(self) -> None:
        self._generation: dict[str, int] = {}
        self._lock = threading.Lock()

    def log_in(self, user: str) -> int:
        """The generation this session keeps for ``user``."""
        with self._lock:
            return self._generation.get(user, 0)

    def is_current(self, user: str, generation: int) -> bool:
        with self._lock:
            return self._generation.get(user, 0) == generation

    def log_out(self, user: str) -> None:
        """Ends every session of ``user`` (each on its next rerun)."""
        with self._lock:
            self._generation[user] = self._generation.get(user, 0) + 1
