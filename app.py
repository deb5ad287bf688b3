"""PV LLM Studio: the entry point. Loads config.yaml, draws the shared sidebar, runs a page."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import streamlit as st

from studio.process import process
from studio.records.render import literal
from studio.runs.capacity import Limits
from studio.settings.config import ConfigError, load_config
from ui.auth import access, gate, logout_button
from ui.blind import hides_names
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
user = gate(rules)  # on a shared server nothing else renders before a login
# Typed hosts only where no login is configured (or config.yaml allows them explicitly).
settings = replace(settings, allow_custom_hosts=rules.allow_custom_hosts)
process().capacity.configure(Limits(settings.max_runs_per_backend, settings.max_runs_per_user,
                                    settings.max_queued_per_user))

PAGES = Path(__file__).resolve().parent / "pages"
page = st.navigation([
    st.Page(PAGES / "playground.py", title="Playground", icon="☀️", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page(PAGES / "batch.py", title="Batch", icon="📦", url_path="batch"),
    st.Page(PAGES / "evaluate.py", title="Evaluate", icon="🏁", url_path="evaluate"),
    st.Page(PAGES / "leaderboard.py", title="Leaderboard", icon="🏆", url_path="leaderboard"),
    st.Page(PAGES / "history.py", title="History", icon="🗂️", url_path="history"),
])

init_session(settings)
st.session_state["_settings"] = settings
st.session_state["_viewer"] = Viewer(user, rules.sees_all(user))
# A blind vote still to cast on this page: the sidebar's pickers would name a contender
# (the last run's selection stands meanwhile).
if not hides_names(page.url_path) or "_selection" not in st.session_state:
    st.session_state["_selection"] = sidebar(settings)
with st.sidebar:
    logout_button(rules, user)
page.run()
