# The two commands of the README. Both set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mnas-installed
PYTEST_ARGS ?=

.PHONY: search test bench system-deps clean

search: $(STAMP) system-deps
	$(BIN)/python launch.py search --config configs/default.yaml $(SEARCH_ARGS)

test: $(STAMP) system-deps
	@scripts/system-deps.sh --browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
