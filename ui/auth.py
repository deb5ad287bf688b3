"""The login gate of a shared server: nothing but the form renders until this browser session
has logged in (each session on its own). Rules and checks live in studio.access."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import streamlit as st

from studio.access import PASSWORD, SSO, Access, Throttle, access_from, check_login
from studio.config import Settings
from studio.render import literal

USER_KEY = "_user"


@st.cache_resource(show_spinner=False)
def _throttle() -> Throttle:
    """One for the whole server: a new session does not start with a clean slate."""
    return Throttle()


def _secrets() -> Mapping[str, Any]:
    try:
        return {key: st.secrets[key] for key in st.secrets}
    except Exception:  # no secrets.toml at all: Streamlit raises rather than return nothing
        return {}


def access(settings: Settings) -> Access:
    return access_from(_secrets(), os.environ, settings.admins, settings.allow_custom_hosts)


def gate(rules: Access) -> str:
    """The user of this session ('' when no login is configured); draws the login form and
    stops the page until there is one."""
    if rules.mode == SSO:
        if not st.user.is_logged_in:
            st.title("☀️ PV LLM Studio")
            st.button("Log in", type="primary", on_click=st.login)
            st.stop()
        return str(st.user.get("email") or st.user.get("sub") or "")
    if rules.mode != PASSWORD:
        return ""
    user = st.session_state.get(USER_KEY)
    if user:
        return str(user)
    _password_form(rules)
    st.stop()
    return ""  # not reached


def _password_form(rules: Access) -> None:
    st.title("☀️ PV LLM Studio")
    with st.form("login"):
        name = st.text_input("Your name" if not rules.passwords else "User name",
                             help="Your runs are kept under this name." if not rules.passwords
                             else None)
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Log in", type="primary")
    if not submitted:
        return
    wait = _throttle().delay()
    if wait:
        time.sleep(wait)  # repeated failures slow every attempt down
    user = check_login(rules, name, password)
    if user is None:
        _throttle().failed()
        st.error("Wrong name or password." if rules.passwords else
                 "Wrong password (and a name is needed).", icon="🔒")
        return
    st.session_state[USER_KEY] = user
    st.rerun()


def logout_button(rules: Access, user: str) -> None:
    """In the sidebar: who is logged in, and Log out."""
    if rules.mode == SSO:
        st.caption(f"Logged in as {literal(user)}")
        st.button("Log out", on_click=st.logout, width="stretch")
    elif rules.mode == PASSWORD:
        st.caption(f"Logged in as {literal(user)}")
        st.button("Log out", on_click=lambda: st.session_state.clear(), width="stretch")
