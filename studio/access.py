"""Who may use a shared server, and what it may contact (UI-free; ui.auth draws the forms).

Three modes, from the environment and ``.streamlit/secrets.toml``:
- ``sso``: an ``[auth]`` section -> Streamlit's own OIDC login (``st.login``); the identity
  is the user's email;
- ``password``: ``PV_STUDIO_PASSWORD`` or ``password`` in secrets (one shared password; the
  visitor also gives a name that keeps their history apart), or a ``[passwords]`` table
  (``name = "password"`` per user: the name is then checked too);
- ``open``: none of these, the local single-user app.

Any login makes the server shared: hosts come only from config.yaml (``allow_custom_hosts``
says otherwise explicitly), each user sees their own runs, admins see all.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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

    def sees_all(self, user: str) -> bool:
        """Whether ``user`` sees every run: everyone without a login, else admins."""
        return self.mode == OPEN or user in self.admins


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


class Throttle:
    """Slows down repeated failures, server-wide: each failure in the last minute doubles
    the wait before the next answer (0.5 s, 1 s, 2 s ... up to ``max_delay``)."""

    def __init__(self, window_s: float = 60.0, max_delay: float = 8.0) -> None:
        self.window_s, self.max_delay = window_s, max_delay
        self._failures: deque[float] = deque()
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Seconds to wait before judging the next attempt."""
        with self._lock:
            now = time.monotonic()
            while self._failures and now - self._failures[0] > self.window_s:
                self._failures.popleft()
            count = len(self._failures)
        return 0.0 if count == 0 else min(0.5 * 2 ** (count - 1), self.max_delay)

    def failed(self) -> None:
        with self._lock:
            self._failures.append(time.monotonic())
