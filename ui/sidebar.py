"""The sidebar every page shares: backend, host, model, max tokens, temperature.

Drawn by app.py before the page runs, so the choices survive page switches.
"""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from backends.base import Backend
from studio.config import BACKEND_KINDS, Settings
from studio.connection import BACKEND_LABELS, BackendStatus, build, probe

MODEL_LIST_TTL_S = 20  # short: a server started a moment ago shows up soon
SIDEBAR_KEYS = ("backend_kind", "max_tokens", "temperature",
                *(f"{what}_{kind}" for kind in BACKEND_KINDS for what in ("host", "model")))


@dataclass(frozen=True)
class Selection:
    """What the analyst picked in the sidebar."""

    kind: str
    host: str
    model: str
    max_tokens: int
    temperature: float
    reachable: bool

    def backend(self, settings: Settings) -> Backend:
        return build(settings, self.kind, self.host, self.model)


@st.cache_data(ttl=MODEL_LIST_TTL_S, show_spinner=False)
def cached_probe(kind: str, host: str, config_path: str, _settings: Settings) -> BackendStatus:
    return probe(_settings, kind, host)


def init_session(settings: Settings) -> None:
    """First visit: defaults from config.yaml, and the embedded fallback when the configured
    server is unreachable (said on the page, never silently)."""
    state = st.session_state
    if "backend_kind" not in state:
        state.backend_kind = settings.backend
        for kind in BACKEND_KINDS:
            state[f"host_{kind}"] = settings.backends[kind].host
            state[f"model_{kind}"] = settings.backends[kind].model
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
    # Streamlit drops the state of widgets it did not draw in the previous run (the host box
    # is hidden for the embedded backend; a page switch redraws everything). Writing the
    # values back each run keeps every choice.
    for key in SIDEBAR_KEYS:
        if key in state:
            state[key] = state[key]


def _forget_notice() -> None:
    st.session_state.fallback_notice = ""


def sidebar(settings: Settings) -> Selection:
    state = st.session_state
    with st.sidebar:
        st.header("☀️ Model")
        kind = st.selectbox("Backend", BACKEND_KINDS, format_func=BACKEND_LABELS.__getitem__,
                            key="backend_kind", on_change=_forget_notice)
        host = ""
        if kind != "embedded":
            host = st.text_input("Host", key=f"host_{kind}").strip().rstrip("/")
        status = cached_probe(kind, host, settings.path, settings)
        model = _model_picker(kind, status)
        if status.reachable:
            count = len(status.models)
            st.success(f"Reachable · {count} model{'s' if count != 1 else ''}", icon="🟢")
        else:
            st.error(f"Not reachable. {status.message}\n\n{status.hint}", icon="🔴")
        st.button("↻ Refresh models", on_click=cached_probe.clear, use_container_width=True)
        with st.expander("All backends"):
            for other in BACKEND_KINDS:
                other_host = state.get(f"host_{other}", "") if other != "embedded" else ""
                found = cached_probe(other, other_host, settings.path, settings)
                light = "🟢 reachable" if found.reachable else f"🔴 {found.hint or found.message}"
                where = f" · {other_host}" if other_host else ""
                st.caption(f"**{BACKEND_LABELS[other]}**{where}: {light}")
        st.header("Parameters")
        max_tokens = st.number_input("Max tokens", min_value=1, max_value=32768, step=256,
                                     key="max_tokens")
        temperature = st.slider("Temperature", 0.0, 2.0, step=0.05, key="temperature")
    return Selection(kind, host, model or state.get(f"model_{kind}", ""), int(max_tokens),
                     float(temperature), status.reachable)


def _model_picker(kind: str, status: BackendStatus) -> str:
    key = f"model_{kind}"
    state = st.session_state
    if not status.models:
        return str(st.text_input("Model", key=key))
    wanted = state.get(key)
    if wanted and wanted not in status.models:
        hint = f"`ollama pull {wanted}`" if kind == "ollama" else "pick one of the served models"
        st.warning(f"{wanted} is not on the server: {hint}.", icon="⚠️")
        state[key] = status.models[0]
    elif not wanted:
        state[key] = status.models[0]
    return str(st.selectbox("Model", status.models, key=key))


def show_fallback_notice() -> None:
    """The reason the embedded model answers, until the analyst picks a backend."""
    notice = st.session_state.get("fallback_notice")
    if notice:
        st.warning(notice, icon="🔌")
