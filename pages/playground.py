"""Playground: pick a preset, edit the prompts, generate, watch the answer stream in."""

from __future__ import annotations

import streamlit as st

from backends.base import BackendError
from studio.presets import build_user_prompt, load_locations, load_system_prompts
from studio.prompts import prompt_size
from studio.runner import Run, RunRequest
from ui.output import follow, show_answer, show_outcome
from ui.sidebar import show_fallback_notice
from ui.state import current_selection, settings

state = st.session_state
locations = {location.name: location for location in load_locations()}
system_prompts = load_system_prompts()


def load_preset() -> None:
    state.system_prompt = system_prompts[state.system_preset]
    state.user_prompt = build_user_prompt(locations[state.location_preset])


if "user_prompt" not in state:
    state.location_preset = next(iter(locations))
    state.system_preset = next(iter(system_prompts))
    load_preset()

st.title("☀️ PV Playground")
show_fallback_notice()

left, right = st.columns(2)
left.selectbox("Location preset", list(locations), key="location_preset", on_change=load_preset,
               format_func=lambda name: f"{name} (sample data)" if locations[name].is_sample
               else name)
right.selectbox("System prompt preset", list(system_prompts), key="system_preset",
                on_change=load_preset)
st.text_area("System prompt", key="system_prompt", height=120)
st.text_area("User prompt", key="user_prompt", height=300)
size = prompt_size(state.system_prompt, state.user_prompt)
st.caption(f"Prompt size: {size.characters:,} characters · about {size.tokens:,} tokens")

selection = current_selection()
run: Run | None = state.get("playground_run")
running = run is not None and not run.done
buttons = st.columns([1, 1, 4])
generate = buttons[0].button("Generate", type="primary", disabled=running,
                             use_container_width=True)
if generate:
    request = RunRequest(backend=selection.kind, host=selection.host, model=selection.model,
                         system=state.system_prompt, prompt=state.user_prompt,
                         max_tokens=selection.max_tokens, temperature=selection.temperature,
                         preset=state.location_preset)
    try:
        backend = selection.backend(settings())
    except (BackendError, ValueError) as exc:  # e.g. a GGUF path that does not exist
        st.error(f"Cannot use this backend: {exc}", icon="⚠️")
    else:
        run = state.playground_run = Run(backend, request).start()
        running = True

if running and run is not None:
    # Drawn above the answer; the click runs the callback first, which closes the stream.
    buttons[1].button("Stop", on_click=run.stop, use_container_width=True)

if run is not None:
    with st.container(key="answer", border=True):
        answer_slot = st.empty()
    progress_slot = st.empty()
    if running:
        follow(run, answer_slot, progress_slot)
        st.rerun()  # redraw as finished: Generate enabled again, no Stop button
    show_answer(run, answer_slot)
    show_outcome(run)
