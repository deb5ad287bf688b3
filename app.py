"""PV LLM Studio: the entry point. Loads config.yaml, draws the shared sidebar, runs a page."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from studio.config import ConfigError, load_config
from ui.sidebar import init_session, sidebar

st.set_page_config(page_title="PV LLM Studio", page_icon="☀️", layout="wide")

try:
    settings = load_config()
except ConfigError as exc:
    st.error(f"**config.yaml has a problem.** {exc}", icon="🛠️")
    st.caption("Fix the file and reload this page.")
    st.stop()

init_session(settings)
st.session_state["_settings"] = settings
st.session_state["_selection"] = sidebar(settings)

PAGES = Path(__file__).resolve().parent / "pages"
page = st.navigation([
    st.Page(PAGES / "playground.py", title="Playground", icon="☀️", default=True),
    st.Page(PAGES / "compare.py", title="Compare", icon="⚖️", url_path="compare"),
    st.Page(PAGES / "batch.py", title="Batch", icon="📦", url_path="batch"),
    st.Page(PAGES / "history.py", title="History", icon="🗂️", url_path="history"),
])
page.run()
