"""Preset pickers and the system/user prompt editors, with the prompt's size."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import streamlit as st

from backends.http import redact
from studio.process import process
from studio.pv.library import load_locations, load_system_prompts
from studio.pv.location import Location
from studio.pv.prompt import build_user_prompt, preset_of
from studio.records.render import literal
from studio.runs.prompt_check import prompt_size
from studio.runs.window import counted_tokens, prompt_tokens_text
from ui.state import current_selection, keep, settings


@dataclass(frozen=True)
class Prompts:
    system: str
    user: str
    preset: str  # the preset the user prompt came from, or "custom" once it differs
    # The row the figure check grades against: a reopened run's own, else the picked preset's
    # (an edited DATA CONTEXT no longer matches it, and the check says so).
    location: Location | None = None


@st.cache_data(show_spinner=False)
def _presets() -> tuple[dict[str, Location], dict[str, str]]:
    return {loc.name: loc for loc in load_locations()}, load_system_prompts()


def prompt_editor(prefix: str, user_height: int = 300) -> Prompts:
    """Location and system presets fill the editors; edits are kept until the next pick."""
    locations, system_prompts = _presets()
    state = st.session_state
    keys = {name: f"{prefix}_{name}" for name in ("location", "system_preset", "system", "user")}

    def load_preset() -> None:
        fill_from_presets(state, keys, locations, system_prompts, settings().prompt_layout)
        state.pop(_origin_key(prefix), None)
        state.pop(_origin_location_key(prefix), None)

    if keys["user"] not in state:
        state[keys["location"]] = next(iter(locations))
        state[keys["system_preset"]] = next(iter(system_prompts))
        load_preset()
    # Prompts handed over (load_prompts) keep their text: only the pickers get defaults.
    if state.get(keys["location"]) not in locations:
        state[keys["location"]] = next(iter(locations))
    if state.get(keys["system_preset"]) not in system_prompts:
        state[keys["system_preset"]] = next(iter(system_prompts))
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
    selection = current_selection()
    size = prompt_size(state[keys["system"]], state[keys["user"]], redact(selection.host),
                       selection.model)
    # Once a window check has counted this prompt exactly, the count; else the estimate,
    # said as one (the check's warning uses the same words).
    counted = counted_tokens(process().counts, selection, state[keys["system"]],
                             state[keys["user"]])
    tokens = prompt_tokens_text(size.tokens if counted is None else counted, counted is not None)
    st.caption(f"Prompt size: {size.characters:,} characters · {tokens}")
    user = state[keys["user"]]
    picked = locations[state[keys["location"]]]
    preset = preset_of(user, picked, state.get(_origin_key(prefix)))
    origin = state.get(_origin_location_key(prefix))
    location = origin if isinstance(origin, Location) else picked
    if location != picked:  # a reopened run's own row, not the preset the picker shows
        st.caption(f"Figures are checked against the reopened run's location row, "
                   f"{literal(location.name)}, not the preset picked above (pick a preset to "
                   "start from it).")
    return Prompts(state[keys["system"]], user, preset, location)


def fill_from_presets(state: MutableMapping[Any, Any], keys: Mapping[str, str],
                      locations: Mapping[str, Location], system_prompts: Mapping[str, str],
                      layout: str) -> None:
    """Fill the editors from the pickers' presets. A picker without a value (Streamlit's
    ``clear_cache`` message empties a session's state before the next widget event) takes
    its first preset: a callback must not fail on a state a client can wipe."""
    location = locations.get(state.get(keys["location"], ""), next(iter(locations.values())))
    state[keys["system"]] = system_prompts.get(state.get(keys["system_preset"], ""),
                                               next(iter(system_prompts.values())))
    state[keys["user"]] = build_user_prompt(location, layout=layout)


def _origin_key(prefix: str) -> str:
    return f"{prefix}_origin"


def _origin_location_key(prefix: str) -> str:
    return f"{prefix}_origin_location"


def load_prompts(prefix: str, system: str, user: str, preset: str,
                 location: Location | None = None) -> None:
    """Fill an editor with a run's prompts (History -> Playground). The run keeps its preset
    name while its prompt is unchanged, even one no preset lists (a CSV row), and its
    location row, which its figures are graded against."""
    locations, _ = _presets()
    state = st.session_state
    state[f"{prefix}_system"], state[f"{prefix}_user"] = system, user
    if preset in locations:
        state[f"{prefix}_location"] = preset
    state[_origin_key(prefix)] = (preset, user)
    if location is not None:
        state[_origin_location_key(prefix)] = location
    else:
        state.pop(_origin_location_key(prefix), None)
