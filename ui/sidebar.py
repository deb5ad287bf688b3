"""The sidebar every page shares: backend, host, model, max tokens, temperature.

Drawn by app.py before the page runs, so the choices survive page switches.
"""

from __future__ import annotations

import streamlit as st

from backends import EmbeddedBackend, backend_class, needs_server
from backends.sampling import (
    MAX_TOKENS_RANGE,
    REPEAT_PENALTY_RANGE,
    TEMPERATURE_RANGE,
    Sampling,
)
from studio.process import process
from studio.records.render import literal
from studio.runs.request import AnswerFormat, RunParams
from studio.settings.config import Settings
from ui.backend_picker import (
    all_backends_status,
    backend_picker,
    cached_probe,
    picker_keys,
    seed_picker,
)
from ui.state import keep

REPEAT_PENALTY_PLACEHOLDER = "server default"
MAX_TOKENS_PICKABLE = 32768  # the widget's top (config.yaml may name more)
DEMO_MODEL_NOTICE = (
    "**Demo model.** The embedded SmolLM2 has 135M parameters: the pipeline is real (prompt, "
    "streaming, statistics, history), but its figures are not advice. The grounding check "
    "below the answer marks the figures it invented. Point the sidebar at Ollama or vLLM "
    "for a real recommendation.")


def init_session(settings: Settings) -> None:
    """First visit: defaults from config.yaml, and the embedded fallback when the configured
    server is unreachable (said on the page, never silently)."""
    state = st.session_state
    if "backend_kind" not in state:
        seed_picker("", settings, settings.backend)
        _set_sampling(settings.sampling)
        state.fallback_notice = ""
        if needs_server(backend_class(settings.backend)) and settings.fallback_to_embedded:
            status = cached_probe(settings, settings.backend, settings.selected.host)
            if not status.reachable:
                # The probe's message already names the backend and host: said once.
                state.fallback_notice = (
                    f"{status.message} {status.hint} Using the embedded model until you "
                    "pick another backend.")
                state.backend_kind = EmbeddedBackend.name
        state.answer_format = AnswerFormat.MARKDOWN.value
    keep(*picker_keys(""), "max_tokens", "temperature", "repeat_penalty", "answer_format")


def load_selection(settings: Settings, params: RunParams) -> None:
    """Set the sidebar to a run's parameters (History -> Playground), before it is drawn."""
    seed_picker("", settings, params.backend, params.host, params.model)
    _set_sampling(params.sampling, params.backend)
    st.session_state.answer_format = params.answer_format.value
    st.session_state.fallback_notice = ""  # the analyst picked this backend


def _set_sampling(sampling: Sampling, backend: str | None = None) -> None:
    """The sidebar's sampling widgets set to ``sampling`` (Think: ``backend``'s picker)."""
    state = st.session_state
    state.max_tokens, state.temperature = sampling.max_tokens, sampling.temperature
    state.repeat_penalty = sampling.repeat_penalty
    if backend is not None:
        state[f"think_{backend}"] = sampling.think


def _forget_notice() -> None:
    st.session_state.fallback_notice = ""


def sidebar(settings: Settings) -> RunParams:
    """The sidebar's widgets, drawn where the caller is (app.py: a slot in the sidebar);
    what they pick, as the parameters of the next run."""
    st.header("☀️ Model")
    picked = backend_picker(settings, "", on_change=_forget_notice)
    st.button("↻ Refresh models", on_click=lambda: process().probes.clear(), width="stretch")
    with st.expander("All backends"):
        all_backends_status(settings)
    st.header("Parameters")
    max_tokens, temperature = sampling_inputs("")
    low, high = REPEAT_PENALTY_RANGE
    repeat_penalty = st.number_input(
        "Repeat penalty", min_value=low, max_value=high, step=0.05, format="%.2f",
        key="repeat_penalty", placeholder=REPEAT_PENALTY_PLACEHOLDER,
        help="Above 1 discourages repeating the same words. Empty: the server's own "
             "setting (Ollama 1.1, vLLM 1.0); the embedded model uses 1.1.")
    answer_format = answer_format_input("")
    penalty = None if repeat_penalty is None else float(repeat_penalty)
    sampling = Sampling(max_tokens, temperature, penalty, picked.think)
    return RunParams(picked.kind, picked.host, picked.model, sampling,
                     answer_format=answer_format)


FORMAT_HELP = ("Markdown report: the model writes the report as it likes. Structured: the "
               "server's constrained decoding holds the answer to a JSON schema (the asked-for "
               "figures as numbers, the sections as markdown), shown as the same report as it "
               "streams; an answer that is not valid JSON of the schema is shown raw, with "
               "why.")


def answer_format_input(prefix: str) -> AnswerFormat:
    """The answer format widget (the sidebar's, a Compare pane's)."""
    value = st.radio("Answer format", [f.value for f in AnswerFormat],
                     format_func=lambda v: AnswerFormat(v).label, key=f"{prefix}answer_format",
                     horizontal=True, help=FORMAT_HELP)
    return AnswerFormat(value or AnswerFormat.MARKDOWN)


def sampling_inputs(prefix: str) -> tuple[int, float]:
    """The max tokens and temperature widgets (the sidebar's, a Compare pane's)."""
    max_tokens = st.number_input("Max tokens", min_value=MAX_TOKENS_RANGE[0],
                                 max_value=MAX_TOKENS_PICKABLE, step=256,
                                 key=f"{prefix}max_tokens")
    low, high = TEMPERATURE_RANGE
    temperature = st.slider("Temperature", low, high, step=0.05, key=f"{prefix}temperature")
    return int(max_tokens), float(temperature)


def show_fallback_notice() -> None:
    """The reason the embedded model answers, until the analyst picks a backend; and, while
    the bundled demo model answers, what its answers are worth."""
    notice = st.session_state.get("fallback_notice")
    if notice:
        st.warning(literal(notice), icon="🔌")
    selection: RunParams | None = st.session_state.get("_selection")
    if selection is not None and selection.backend_class.is_demo_model(selection.model):
        st.info(DEMO_MODEL_NOTICE, icon="🧪")
