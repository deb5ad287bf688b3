"""The baseline of the streaming benchmark: the same Ollama stream rendered by
``st.write_stream``, the way most Streamlit LLM apps do it.

Run by ``bench/bench_streaming.py`` as ``streamlit run bench/write_stream_app.py`` with
``PV_BENCH_OLLAMA_URL`` (and optionally ``PV_BENCH_MODEL``, ``PV_BENCH_MAX_TOKENS``) set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo, for backends/

from backends.ollama_backend import OllamaBackend
from backends.sampling import Sampling

URL = os.environ.get("PV_BENCH_OLLAMA_URL", "http://127.0.0.1:11434")
MODEL = os.environ.get("PV_BENCH_MODEL", "llama3.1:8b")
MAX_TOKENS = int(os.environ.get("PV_BENCH_MAX_TOKENS", "8192"))

st.title("st.write_stream baseline")
if st.button("Generate", type="primary"):
    with st.container(key="answer", border=True):
        st.write_stream(OllamaBackend(URL, MODEL).stream(
            "Size a PV system for this household.", "", Sampling(max_tokens=MAX_TOKENS)))
