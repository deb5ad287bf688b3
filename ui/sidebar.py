"""The sidebar every page shares: backend, host, model, max tokens, temperature.

Drawn by app.py before the page runs, so the choices survive page switches.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from backends.base import Backend
from studio.config import Settings
from studio.connection import BACKEND_LABELS, build
from ui.backend_picker import (
    all_backends_status,
    backend_picker,
    cached_probe,
    picker_keys,
    seed_picker,
)
from ui.state import keep


@dataclass(frozen=True)
class Selection:
    """What the analyst picked in the sidebar."""

    kind: str
    host: str
    model: str
    max_tokens: int
    temperature: float

    def backend(self, settings: Settings) -> Backend:
        return build(settings, self.kind, self.host, self.model)


def init_session(settings: Settings) -> None:
    """First visit: defaults from config.yaml, and the embedded fallback when the configured
    server is unreachable (said on the page, never silently)."""
    state = st.session_state
    if "backend_kind" not in state:
        seed_picker("", settings, settings.backend)
        state.max_tokens = settings.max_tokens
        state.temperature = settings.temperature
        state.fallback_notice = ""
        if settings.backend != "embedded" and settings.fallback_to_embedded:
            status = cached_probe(settings.backend, settings.selected.host, settings.path,
                                  settings)
            if not status.reachable:
                label = BACKEND_LABELS[settings.backend]
                state.fallback_notice = (
                    f"{label} at {settings.selected.host} is not reachable: {status.message} "
                    f"{status.hint} Using the embedded model until you pick another backend.")
                state.backend_kind = "embedded"
    keep(*picker_keys(""), "max_tokens", "temperature")


def _forget_notice() -> None:
    st.session_state.fallback_notice = ""


def sidebar(settings: Settings) -> Selection:
    with st.sidebar:
        st.header("☀️ Model")
        picked = backend_picker(settings, "", on_change=_forget_notice)
        st.button("↻ Refresh models", on_click=cached_probe.clear, width="stretch")
        with st.expander("All backends"):
            all_backends_status(settings)
        st.header("Parameters")
        max_tokens = st.number_input("Max tokens", min_value=1, max_value=32768, step=256,
                                     key="max_tokens")
        temperature = st.slider("Temperature", 0.0, 2.0, step=0.05, key="temperature")
    return Selection(picked.kind, picked.host, picked.model, int(max_tokens),
                     float(temperature))


def show_fallback_notice() -> None:
    """The reason the embedded model answers, until the analyst picks a backend."""
    notice = st.session_state.get("fallback_notice")
    if notice:
        st.warning(notice, icon="🔌")
