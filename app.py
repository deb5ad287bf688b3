"""PV LLM Studio: the entry point. Loads config.yaml, draws the shared sidebar, runs a page."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from studio.process import process
from studio.records.render import literal
from studio.runs.capacity import Limits
from studio.settings.config import ConfigError, load_config
from ui.auth import access, gate, login_form, logout_button
from ui.blind import hides_names, keep_sidebar_slot
from ui.sidebar import init_session, sidebar
from ui.state import Viewer

st.set_page_config(page_title="PV LLM Studio", page_icon="☀️", layout="wide")

try:
    settings = load_config()
except ConfigError as exc:
    st.error(f"**config.yaml has a problem.** {literal(str(exc))}", icon="🛠️")
    st.caption("Fix the file and reload this page.")
    st.stop()

rules = access(settings)
PAGES = Path(__file__).resolve().parent / "pages"
SHARED = st.Page(PAGES / "shared.py", title="Shared", icon="🔗", url_path="shared")
# On a shared server nothing else renders before a login, but a share link keeps its page
# (so that the login leads to it) and, where config.yaml allows, opens without one.
user = gate(rules, let_through="token" in st.query_params)
if user is None:
    # Not logged in, on a share link: the login form, and that link's page where config
    # allows (its token checked there, every run): nothing else is in this session's
    # navigation, whatever URL it asks for; no sidebar, nothing probed.
    st.session_state["_settings"] = settings
    st.session_state["_viewer"] = Viewer("", sees_all=False, anonymous=True)
    shown = st.navigation([st.Page(lambda: login_form(rules), title="Log in", icon="🔒",
                                   url_path="login", default=True), SHARED],
                          position="hidden")
    if shown.url_path == SHARED.url_path and not settings.share_without_login:
        login_form(rules)
    else:
        shown.run()
    st.stop()
# Typed hosts only where no login is configured (or config.yaml allows them explicitly).
settings = replace(settings, allow_custom_hosts=rules.allow_custom_hosts)
process().capacity.configure(Limits(settings.max_runs_per_backend, settings.max_runs_per_user,
                                    settings.max_queued_per_user))

page = st.navigation([
    st.Page(PAGES / "playground.py", title="Playground", icon="☀️", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page(PAGES / "batch.py", title="Batch", icon="📦", url_path="batch"),
    st.Page(PAGES / "evaluate.py", title="Evaluate", icon="🏁", url_path="evaluate"),
    st.Page(PAGES / "leaderboard.py", title="Leaderboard", icon="🏆", url_path="leaderboard"),
    st.Page(PAGES / "history.py", title="History", icon="🗂️", url_path="history"),
    SHARED,
])

init_session(settings)
st.session_state["_settings"] = settings
st.session_state["_viewer"] = Viewer(user, rules.sees_all(user))
# A blind vote still to cast on this page: the sidebar's pickers would name a contender
# (the last run's selection stands meanwhile).
if not hides_names(page.url_path) or "_selection" not in st.session_state:
    with st.sidebar:
        pickers = st.empty()  # emptied the moment a blind round starts (ui.blind)
    with pickers.container():
        st.session_state["_selection"] = sidebar(settings)
    keep_sidebar_slot(pickers)
with st.sidebar:
    logout_button(rules, user)
page.run()
