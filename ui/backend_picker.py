"""Backend, host and model pickers with a connection status: the sidebar's and each Compare
pane's. Keys are prefixed, so several pickers live side by side."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from backends import backend_class, needs_server
from studio.config import BACKEND_KINDS, Settings
from studio.connection import BackendStatus, ProbeCache


@dataclass(frozen=True)
class Picked:
    kind: str
    host: str
    model: str
    status: BackendStatus


@st.cache_resource(show_spinner=False)
def probes() -> ProbeCache:
    """One probe cache for the whole server (its entries are per config, backend and host)."""
    return ProbeCache()


def cached_probe(settings: Settings, kind: str, host: str = "") -> BackendStatus:
    return probes().get(settings, kind, host)


def picker_keys(prefix: str) -> list[str]:
    """Session-state keys of one picker (to seed them and to keep them across pages)."""
    return [f"{prefix}backend_kind", *(f"{prefix}{what}_{kind}" for kind in BACKEND_KINDS
                                       for what in ("host", "model"))]


def seed_picker(prefix: str, settings: Settings, kind: str, host: str = "",
                model: str = "") -> None:
    """Default values: config.yaml's hosts and models, with ``kind`` selected."""
    state = st.session_state
    state[f"{prefix}backend_kind"] = kind
    for name in BACKEND_KINDS:
        state[f"{prefix}host_{name}"] = settings.backends[name].host
        state[f"{prefix}model_{name}"] = settings.backends[name].model
    if host:
        state[f"{prefix}host_{kind}"] = host
    if model:
        state[f"{prefix}model_{kind}"] = model


def backend_picker(settings: Settings, prefix: str = "",
                   on_change: Callable[[], None] | None = None) -> Picked:
    kind = st.selectbox("Backend", BACKEND_KINDS, format_func=_label,
                        key=f"{prefix}backend_kind", on_change=on_change)
    host = ""
    if needs_server(backend_class(kind)):
        host = st.text_input("Host", key=f"{prefix}host_{kind}").strip().rstrip("/")
    status = cached_probe(settings, kind, host)
    model = _model_picker(kind, status, f"{prefix}model_{kind}")
    if status.reachable:
        count = len(status.models)
        st.success(f"Reachable · {count} model{'s' if count != 1 else ''}", icon="🟢")
    elif status.bad_host:
        st.error(f"Check the host: {status.message}", icon="✏️")
    else:
        st.error(f"Not reachable. {status.message}\n\n{status.hint}", icon="🔴")
    return Picked(kind, host, model, status)


def _model_picker(kind: str, status: BackendStatus, key: str) -> str:
    state = st.session_state
    if not status.models:
        return str(st.text_input("Model", key=key))
    wanted = state.get(key)
    if wanted and wanted not in status.models:
        st.warning(f"{wanted} is not on the server. "
                   f"{backend_class(kind).missing_model_hint(wanted)}", icon="⚠️")
        state[key] = status.models[0]
    elif not wanted:
        state[key] = status.models[0]
    return str(st.selectbox("Model", status.models, key=key))


def all_backends_status(settings: Settings, prefix: str = "") -> None:
    """One line per backend: reachable, or the fix."""
    for kind in BACKEND_KINDS:
        host = st.session_state.get(f"{prefix}host_{kind}", "") \
            if needs_server(backend_class(kind)) else ""
        found = cached_probe(settings, kind, host)
        light = "🟢 reachable" if found.reachable else f"🔴 {found.hint or found.message}"
        where = f" · {host}" if host else ""
        st.caption(f"**{_label(kind)}**{where}: {light}")


def _label(kind: str) -> str:
    return backend_class(kind).label
