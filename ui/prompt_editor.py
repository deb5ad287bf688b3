"""Preset pickers and the system/user prompt editors, with the prompt's size."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from studio.presets import Location, build_user_prompt, load_locations, load_system_prompts
from studio.prompts import prompt_size
from ui.state import keep


@dataclass(frozen=True)
class Prompts:
    system: str
    user: str
    preset: str  # the location preset the user prompt started from


@st.cache_data(show_spinner=False)
def _presets() -> tuple[dict[str, Location], dict[str, str]]:
    return {loc.name: loc for loc in load_locations()}, load_system_prompts()


def prompt_editor(prefix: str, user_height: int = 300) -> Prompts:
    """Location and system presets fill the editors; edits are kept until the next pick."""
    locations, system_prompts = _presets()
    state = st.session_state
    keys = {name: f"{prefix}_{name}" for name in ("location", "system_preset", "system", "user")}

    def load_preset() -> None:
        state[keys["system"]] = system_prompts[state[keys["system_preset"]]]
        state[keys["user"]] = build_user_prompt(locations[state[keys["location"]]])

    if keys["user"] not in state:
        state[keys["location"]] = next(iter(locations))
        state[keys["system_preset"]] = next(iter(system_prompts))
        load_preset()
    keep(*keys.values())

    left, right = st.columns(2)
    left.selectbox("Location preset", list(locations), key=keys["location"],
                   on_change=load_preset,
                   format_func=lambda name: f"{name} (sample data)"
                   if locations[name].is_sample else name)
    right.selectbox("System prompt preset", list(system_prompts), key=keys["system_preset"],
                    on_change=load_preset)
    st.text_area("System prompt", key=keys["system"], height=120)
    st.text_area("User prompt", key=keys["user"], height=user_height)
    size = prompt_size(state[keys["system"]], state[keys["user"]])
    st.caption(f"Prompt size: {size.characters:,} characters · about {size.tokens:,} tokens")
    return Prompts(state[keys["system"]], state[keys["user"]], state[keys["location"]])
