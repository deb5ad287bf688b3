"""One way to start the real app under Streamlit's AppTest with a config of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ENTRY = str(Path(__file__).parent / "app" / "entry.py")
PAGES = Path(__file__).resolve().parents[1] / "pages"


def start_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, host: str,
              model: str, page: str = "") -> AppTest:
    """The app on ``backend`` at ``host`` with ``model`` (no embedded fallback, a history
    in ``tmp_path``), run once, on ``page`` (a file of pages/) when given."""
    config = tmp_path / "config.yaml"
    config.write_text(f"llm:\n  backend: {backend}\n  host: {host}\n  model: {model}\n"
                      f"app:\n  history_db: {tmp_path / 'history.sqlite3'}\n"
                      "  fallback_to_embedded: false\n")
    monkeypatch.setenv("PV_STUDIO_CONFIG", str(config))
    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.run()
    if page:
        at.switch_page(str(PAGES / page)).run()
    assert not at.exception, at.exception
    return at
