"""What app.py prepares for the pages: the loaded settings and the sidebar's selection."""

from __future__ import annotations

import streamlit as st

from studio.config import Settings
from ui.sidebar import Selection


def settings() -> Settings:
    value: Settings = st.session_state["_settings"]
    return value


def current_selection() -> Selection:
    value: Selection = st.session_state["_selection"]
    return value
