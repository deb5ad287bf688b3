"""The prompt editor's preset callback, on a session state a client message has emptied."""

from __future__ import annotations

from studio.pv.library import load_locations, load_system_prompts
from studio.pv.prompt import build_user_prompt
from ui.prompt_editor import fill_from_presets

KEYS = {name: f"playground_{name}" for name in ("location", "system_preset", "system", "user")}


def test_a_preset_pick_after_the_state_was_wiped_fills_the_editors() -> None:
    """Streamlit's clear_cache message empties the session state; the next widget event (a
    location picked) runs the callback with only that picker's value: no KeyError."""
    locations = {loc.name: loc for loc in load_locations()}
    systems = load_system_prompts()
    picked = list(locations)[1]
    state: dict[str, object] = {KEYS["location"]: picked}  # the system picker's value is gone
    fill_from_presets(state, KEYS, locations, systems, "static-first")
    assert state[KEYS["system"]] == next(iter(systems.values()))
    assert state[KEYS["user"]] == build_user_prompt(locations[picked], layout="static-first")
    wiped: dict[str, object] = {}
    fill_from_presets(wiped, KEYS, locations, systems, "static-first")
    assert wiped[KEYS["user"]] == build_user_prompt(next(iter(locations.values())),
                                                    layout="static-first")
