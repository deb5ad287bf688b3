"""Keeping things: the run history (SQLite), batch files in and out, uploads, and what the
app writes (markdown, safe HTML, CSV)."""
