"""Backend, host and model pickers with a connection status: the sidebar's and each Compare
pane's. Keys are prefixed, so several pickers live side by side."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from backends import backend_class, needs_server
from backends.http import redact
from studio.process import process
from studio.records.render import literal
from studio.runs.connection import BackendStatus, build
from studio.runs.pull import Pull
from studio.settings.config import BACKEND_KINDS, Settings
from ui.auth import current_rules
from ui.state import viewer

PULL_REFRESH_S = 0.5


@dataclass(frozen=True)
class Picked:
    kind: str
    host: str
    model: str
    status: BackendStatus
    think: str = ""  # the Think setting ("" = the server decides)


def cached_probe(settings: Settings, kind: str, host: str = "") -> BackendStatus:
    return process().probes.get(settings, kind, host)


def picker_keys(prefix: str) -> list[str]:
    """Session-state keys of one picker (to seed them and to keep them across pages)."""
    return [f"{prefix}backend_kind", *(f"{prefix}{what}_{kind}" for kind in BACKEND_KINDS
                                       for what in ("host", "model", "think"))]


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
    if needs_server(backend_class(kind)) and settings.allow_custom_hosts is False:
        host = _fixed_host(settings.backends[kind].allowed_hosts, f"{prefix}host_{kind}")
    elif needs_server(backend_class(kind)):
        host = st.text_input("Host", key=f"{prefix}host_{kind}").strip().rstrip("/")
    status = cached_probe(settings, kind, host)
    model = _model_picker(settings, kind, host, status, f"{prefix}model_{kind}")
    if status.reachable:
        count = len(status.models)
        found = (process().probes.state(settings, kind, host, model)
                 if backend_class(kind).find_model(model, status.models) else None)
        notes = "".join(f" · {literal(note)}" for note in (found.notes() if found else []))
        st.success(f"Reachable · {count} model{'s' if count != 1 else ''}{notes}", icon="🟢")
        think = _think_picker(found.think_options if found else (), f"{prefix}think_{kind}")
        return Picked(kind, host, model, status, think)
    if status.bad_host:
        st.error(f"Check the host: {literal(status.message)}", icon="✏️")
    else:
        st.error(f"Not reachable. {literal(status.message)}\n\n{literal(status.hint)}",
                 icon="🔴")
    return Picked(kind, host, model, status)


def _think_picker(options: tuple[str, ...], key: str) -> str:
    """The Think control, where the backend and model take one; by default nothing is sent
    and the server decides (Ollama 0.12.4+ thinks with a thinking model)."""
    if not options:
        return ""
    choices = ["", *options]
    if st.session_state.get(key) not in choices:
        st.session_state[key] = ""
    return str(st.selectbox(
        "Think", choices, key=key,
        format_func=lambda value: value or "server default",
        help="A reasoning model's thinking: off, on, or a level. Server default sends "
             "nothing and lets the server decide."))


def _fixed_host(allowed: tuple[str, ...], key: str) -> str:
    """A shared server's host: one of those config.yaml names, picked, never typed."""
    state = st.session_state
    if state.get(key) not in allowed:
        state[key] = allowed[0] if allowed else ""
    return str(st.selectbox("Host", allowed, key=key, format_func=redact,
                            help="On this shared server the hosts are set in config.yaml."))


def _model_picker(settings: Settings, kind: str, host: str, status: BackendStatus,
                  key: str) -> str:
    state = st.session_state
    cls = backend_class(kind)
    pullable = cls.can_pull_models and status.reachable
    if not status.models:
        model = str(st.text_input("Model", key=key)).strip()
        if pullable and model:
            _missing_model(settings, kind, host, model, key)
        return model
    wanted = state.get(key)
    options = list(status.models)
    if wanted and (listed := cls.find_model(wanted, options)) is not None:
        state[key] = listed  # the server's name: 'tinyllama' is 'tinyllama:latest' once pulled
    elif wanted:
        if pullable:  # kept, so that it can be pulled
            options.append(wanted)
        else:
            st.warning(literal(f"{wanted} is not on the server. "
                               f"{cls.missing_model_hint(wanted)}"), icon="⚠️")
            state[key] = options[0]
    else:
        state[key] = options[0]
    model = str(st.selectbox(
        "Model", options, key=key, accept_new_options=pullable,
        format_func=lambda name: (name if cls.find_model(name, status.models) is not None
                                  else f"{name} (not pulled)"),
        help="Type a model's name to pull it." if pullable else None))
    if pullable and cls.find_model(model, status.models) is None:
        _missing_model(settings, kind, host, model, key)
    return model


def _missing_model(settings: Settings, kind: str, host: str, model: str, key: str) -> None:
    """A model the server lacks: the Pull button, or the pull's progress and outcome. On a
    shared server only those studio.settings.access allows get the button; the others, why not."""
    job = process().pulls.of(redact(host), model)
    if job is not None and not job.done:
        _pull_progress(redact(host), model)
        return
    refusal = current_rules().pull_refusal(viewer().user, model, settings.pull_allow)
    st.warning(literal(f"{model} is not on the server. "
                       f"{backend_class(kind).missing_model_hint(model)}"
                       f"{'' if refusal else ' (or the button below)'}"),
               icon="⚠️")
    if job is not None and job.error is not None:
        st.error(f"{literal(job.error.message)}\n\n{literal(job.error.hint)}", icon="⚠️")
    elif job is not None and job.stopped:
        st.caption(f"Pull of {literal(model)} cancelled.")
    if refusal:
        st.info(literal(refusal), icon="🔒")
        return
    st.button(f"⬇ Pull {literal(model)}", key=f"{key}_pull", width="stretch", on_click=_start_pull,
              args=(settings, kind, host, model))


def _start_pull(settings: Settings, kind: str, host: str, model: str) -> None:
    user = viewer().user
    if current_rules().pull_refusal(user, model, settings.pull_allow):
        return  # the rules changed since the button was drawn
    backend = build(settings, kind, host, model)
    if backend.can_pull_models:
        shared = process()
        shared.pulls.start(backend, redact(host), model, on_success=shared.probes.clear,
                           started_by=user)


@st.fragment(run_every=PULL_REFRESH_S)
def _pull_progress(host: str, model: str) -> None:
    """Repainted on its own while the pull runs; once it ends, the whole app runs again
    (a pulled model joins the list). Cancel is for whoever started it, or an admin."""
    job = process().pulls.of(host, model)
    if job is None or job.done:
        st.rerun(scope="app")
        return
    st.progress(job.fraction, text=literal(f"Pulling {model}: {job.describe()}"))
    if current_rules().may_cancel_pull(viewer().user, job.started_by):
        st.button("Cancel pull", key=f"cancel_pull_{host}_{model}", on_click=_cancel_pull,
                  args=(job,), width="stretch")
    else:
        st.caption("Another user started this pull: only they or an admin can cancel it.")


def _cancel_pull(job: Pull) -> None:
    if current_rules().may_cancel_pull(viewer().user, job.started_by):
        job.stop()


def all_backends_status(settings: Settings, prefix: str = "") -> None:
    """One line per backend: reachable, or the fix. The host without its credentials."""
    for kind in BACKEND_KINDS:
        host = st.session_state.get(f"{prefix}host_{kind}", "") \
            if needs_server(backend_class(kind)) else ""
        found = cached_probe(settings, kind, host)
        light = "🟢 reachable" if found.reachable \
            else f"🔴 {literal(found.hint or found.message)}"
        where = f" · {literal(redact(host))}" if host else ""
        st.caption(f"**{_label(kind)}**{where}: {light}")


def _label(kind: str) -> str:
    return backend_class(kind).label
