# rectiflow — the two commands that matter: `make run` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/mnist5k.yaml

.PHONY: help venv run test test-slow lint format bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

venv: $(STAMP)  ## create .venv with everything (idempotent)

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	@# torch 2.14.1 brings its CUDA libraries: the venv takes ~6.6 GB; say so before pip fails on it.
	@free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); [ "$$free" -ge 8 ] || \
	  echo "warning: $$free GiB free on this disk; .venv needs about 7 GiB (torch with CUDA libraries)" >&2
	$(BIN)/pip install -q --upgrade pip
	@# --no-compile: Python byte-compiles what it imports on first use instead of every file now
	$(BIN)/pip install -q --no-compile torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q --no-compile -e '.[dev]'
	@# torch-fidelity 0.4.0's wheel also installs a top-level `tests` package, which would shadow
	@# this repository's tests/ (a regular package wins over a folder without __init__.py).
	@$(BIN)/python -c "import importlib.metadata as m, shutil; d = m.distribution('torch-fidelity'); \
	  any(f.parts[0] == 'tests' for f in d.files) and shutil.rmtree(d.locate_file('tests'), True)"
	@touch $(STAMP)

run: venv  ## run the whole pipeline on the embedded default (MNIST-5k, CPU)
	$(BIN)/python -m flows.cli run $(CONFIG)

test: venv lint  ## lint, then every test not marked slow (CI runs test-slow after it)
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: venv  ## the tests marked slow (each over ~20 s: kill drills, DDP, servers, pipelines)
	$(BIN)/python -m pytest -q -m slow

lint: venv  ## ruff check + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv  ## apply ruff format and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: venv  ## CPU benchmarks; rewrites BENCHMARKS.md tables
	$(BIN)/python -m benchmarks.run_all

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs .pytest_cache
