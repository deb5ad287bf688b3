"""The login gate of a shared server: nothing but the form renders until this browser session
has logged in (each session on its own). Rules and checks live in studio.settings.access; the
failure throttle and the current logins are the process's (studio.process: not st.cache_*,
which any client may clear)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from studio.process import process
from studio.records.render import literal
from studio.settings.access import (
    PASSWORD,
    SSO,
    Access,
    access_from,
    check_login,
    login_keys,
    login_refusal,
)
from studio.settings.config import Settings

USER_KEY = "_user"
LOGIN_KEY = "_login"  # the generation of this session's login (studio.settings.access.Logins)
RULES_KEY = "_access"
LOGOUT_HELP = ("Logs out every session of this name on this server: this tab, your other "
               "tabs and browsers. Each shows the login form at its next click.")


def _secrets() -> Mapping[str, Any]:
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except Exception:  # no secrets.toml at all: Streamlit raises rather than return nothing
        return {}


def access(settings: Settings) -> Access:
    return access_from(_secrets(), os.environ, settings.admins, settings.allow_custom_hosts)


def current_rules() -> Access:
    """The access rules gate() applied in this run (those of a local app before it)."""
    value: Access = st.session_state.get(RULES_KEY, Access())
    return value


def gate(rules: Access, let_through: bool = False) -> str | None:
    """The user of this session ('' when no login is configured); draws the login form and
    stops the page until there is one. ``let_through``: a share link: then None for a
    session not logged in, and nothing drawn (app.py draws the login form, or that link's
    page where ``app.share_without_login`` allows, and offers nothing else)."""
    st.session_state[RULES_KEY] = rules
    if rules.mode == SSO:
        if st.user.is_logged_in:
            user = str(st.user.get("email") or st.user.get("sub") or "")
            if _still_logged_in(user):
                return user
            st.session_state.clear()
            st.logout()  # Log out in another session of this user
        if let_through:
            return None
        login_form(rules)
        st.stop()
    if rules.mode != PASSWORD:
        return ""
    name = str(st.session_state.get(USER_KEY) or "")
    if name and _still_logged_in(name):
        return name
    if name:  # logged out in another session
        for key in (USER_KEY, LOGIN_KEY):
            st.session_state.pop(key, None)
        st.info("You were logged out (Log out in another tab or browser).", icon="🔒")
    if let_through:
        return None
    login_form(rules)
    st.stop()
    return ""  # not reached


def login_form(rules: Access) -> None:
    """The login of this server: single sign-on's button, or the password form."""
    if rules.mode == SSO:
        st.title("☀️ PV LLM Studio")
        st.button("Log in", type="primary", on_click=st.login)
    elif rules.mode == PASSWORD:
        _password_form(rules)


def _still_logged_in(user: str) -> bool:
    """Whether this session's login of ``user`` stands (no Log out of that user since)."""
    generation = st.session_state.get(LOGIN_KEY)
    if generation is None:  # the first run after a login (single sign-on: Streamlit's)
        st.session_state[LOGIN_KEY] = process().logins.log_in(user)
        return True
    return process().logins.is_current(user, int(generation))


def _password_form(rules: Access) -> None:
    st.title("☀️ PV LLM Studio")
    if not rules.passwords:
        st.caption("Everyone logs in here with the same password, so your name is a label "
                   "that keeps your runs apart, not a proof of who you are: anyone with the "
                   "password can type any name (and so nobody is an admin).")
    with st.form("login"):
        name = st.text_input("Your name" if not rules.passwords else "User name",
                             help="Your runs are kept under this name." if not rules.passwords
                             else None)
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted:
        return
    keys = login_keys(_session_id(), st.context.ip_address, name)
    attempt = process().login_throttle.begin(keys)
    if attempt.refused:
        st.error(f"Too many failed logins from here or for this name. Try again in "
                 f"{attempt.retry_in:.0f} s.", icon="🔒")
        return
    user = None
    try:
        time.sleep(attempt.wait)  # repeated failures slow this client's and name's attempts
        user = check_login(rules, name, password)
    finally:
        # also when the session went away meanwhile
        process().login_throttle.end(attempt, user is not None)
    if user is None:
        failures = process().login_throttle.failures(keys)
        st.error(login_refusal(rules, name, password)
                 + (f" {failures} failed logins here in the last minute: each one more makes "
                    f"the next wait longer (up to {process().login_throttle.max_delay:.0f} s)."
                    if failures > 1 else ""), icon="🔒")
        return
    st.session_state[USER_KEY] = user
    st.session_state[LOGIN_KEY] = process().logins.log_in(user)
    st.rerun()


def _session_id() -> str:
    """Streamlit's id of this browser session (it survives a ``clear_cache``, which empties
    st.session_state)."""
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else ""


def logout_button(rules: Access, user: str) -> None:
    """In the sidebar: who is logged in, and Log out (of every session of this user)."""
    if rules.mode in (SSO, PASSWORD):
        st.caption(f"Logged in as {literal(user)}")
        st.button("Log out", on_click=_log_out, args=(user, rules.mode == SSO),
                  width="stretch", help=LOGOUT_HELP)


def _log_out(user: str, sso: bool) -> None:
    process().logins.log_out(user)
    st.session_state.clear()
    if sso:
        st.logout()
