"""How a run samples, as one object from the sidebar to the wire: ``Sampling``.

Each default is defined here, once: the sidebar, Compare panes, Batch, the history, the
config file's defaults and every backend's signatures derive from it. Each backend maps it to
its own wire in one place (Ollama's ``options``/``think``, vLLM's body, llama.cpp's call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

# The ranges a value may take where it is typed in (config.yaml, the sidebar's widgets).
MAX_TOKENS_RANGE = (1, 1_000_000)
TEMPERATURE_RANGE = (0.0, 2.0)
REPEAT_PENALTY_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class Sampling:
    """Max tokens, temperature, repeat penalty and Think: what a run asks of the model."""

    max_tokens: int = 2048
    temperature: float = 0.2
    repeat_penalty: float | None = None  # None: the server's own default
    think: str = ""  # a Think setting (backends.base.THINK_SETTINGS); "": the server decides

    def to_dict(self) -> dict[str, Any]:
        """The settings by name, as the JSON downloads' "parameters" show them."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sampling:
        """The settings named in ``data`` (other keys ignored); a missing or null one takes
        its default (records written before it existed)."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None})


DEFAULT_SAMPLING = Sampling()
