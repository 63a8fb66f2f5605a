# Each target sets up its own virtual environment in .venv on first use.
# Programs run from the repository root as modules (python -m scripts.<folder>.<name>), so that
# scripts/ and tests/ import as packages (docs/contributing.md).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export NO_MKDOCS_2_WARNING := 1

.PHONY: train test docs serve-docs check-site wheel bench mutants clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.train: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[train]"
	touch $@

$(VENV)/.test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[train,test,docs]"
	touch $@

# KaTeX (npm) renders the docs' maths at build time (docs/_ext/katex.py).
$(VENV)/.docs: pyproject.toml docs/_ext/package-lock.json | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[docs]"
	mkdir -p $(VENV)/katex
	cp docs/_ext/package.json docs/_ext/package-lock.json $(VENV)/katex/
	npm ci --prefix $(VENV)/katex --no-audit --no-fund --loglevel=error
	touch $@

train: $(VENV)/.train  ## train the seed's MLP (scripts/train.py)
	$(PY) scripts/train.py $(ARGS)

test: $(VENV)/.test  ## ruff, mypy and the test suite
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q --durations=25

docs: $(VENV)/.docs  ## build the docs site into site/
	$(VENV)/bin/mkdocs build --strict

serve-docs: $(VENV)/.docs  ## serve the docs on http://127.0.0.1:8000
	$(VENV)/bin/mkdocs serve

check-site: $(VENV)/.docs  ## build the site and open every page in headless Chromium
	$(PY) -m scripts.dev.check_site

wheel: $(VENV)/.test  ## build the wheel and the sdist into dist/
	$(PY) -m build --outdir dist .

bench: $(VENV)/.test  ## benchmarks (docs/performance.md): step, training, memory
	$(PY) -m scripts.benchmarks.bench_update
	$(PY) -m scripts.benchmarks.bench_train
	$(PY) -m scripts.benchmarks.bench_memory

mutants: $(VENV)/.test  ## mutation testing: every mutant of adam_jax/ must fail a test (not in CI)
	$(PY) -m scripts.dev.mutants

clean:
	rm -rf $(VENV) site runs dist build
