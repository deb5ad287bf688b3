"""The PV preset library shipped in presets/: locations, system prompts, knowledge base and
question."""

from pathlib import Path

import yaml

from studio.pv.location import Location
from studio.pv.locations_csv import parse_locations_csv

PRESET_DIR: Path = Path(__file__).resolve().parents[2] / "presets"
LOCATIONS_FILE = "locations.csv"
SYSTEM_PROMPTS_FILE = "system_prompts.yaml"
KNOWLEDGE_BASE_FILE = "knowledge_base.md"
QUESTION_FILE = "question.md"

class PresetError(Exception):
    """A shipped preset file is missing or invalid."""


def _preset_path(path: Path | None, filename: str) -> Path:
    return Path(path) if path is not None else PRESET_DIR / filename


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PresetError(f"cannot read preset file {path}: {exc}") from exc


def load_locations(path: Path | None = None) -> list[Location]:
    """Load the locations CSV (default: the shipped one); raise PresetError if any row is bad."""
    path = _preset_path(path, LOCATIONS_FILE)
    parsed = parse_locations_csv(_read_text(path))
    problems = [parsed.file_problem] if parsed.file_problem else []
    problems += [str(problem) for problem in parsed.row_problems] + parsed.notes
    if problems:
        raise PresetError(f"invalid locations file {path}: {'; '.join(problems)}")
    return parsed.locations


def load_system_prompts(path: Path | None = None) -> dict[str, str]:
    """Load named system prompts (name -> text) in file order; the first is the default."""
    path = _preset_path(path, SYSTEM_PROMPTS_FILE)
    try:
        data = yaml.safe_load(_read_text(path))
    except yaml.YAMLError as exc:
        raise PresetError(f"invalid YAML in {path}: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise PresetError(f"{path} must be a non-empty mapping of name -> prompt text")
    prompts: dict[str, str] = {}
    for name, text in data.items():
        if not isinstance(name, str) or not isinstance(text, str) or not text.strip():
            raise PresetError(f"{path}: entry {name!r} must map a name to non-empty text")
        prompts[name] = text.strip()
    return prompts


def load_knowledge_base(path: Path | None = None) -> str:
    """Load the PV knowledge base markdown."""
    return _read_text(_preset_path(path, KNOWLEDGE_BASE_FILE)).strip()


def load_question_template(path: Path | None = None) -> str:
    """Load the QUESTION section template; '{location}' marks the location name."""
    return _read_text(_preset_path(path, QUESTION_FILE)).strip()
