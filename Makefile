# The two commands of the README. Both set everything up themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mnas-installed
# Two test processes (pytest-xdist): the suite waits on subprocesses and Ray much of the time. PYTEST_ARGS= runs
# it in one process.
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: search test bench system-deps clean

search: $(STAMP) system-deps
	MNAS_VIA_MAKE=1 $(BIN)/python launch.py search --config configs/default.yaml $(SEARCH_ARGS)

test: $(STAMP) system-deps
	@scripts/system-deps.sh --browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# setuptools notes that an editable install maps folders (mnas.search -> search/); that is the layout
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The quick subset of benchmarks/ (about 15 minutes on 2 cores): each prints its table; none writes BENCHMARKS.md
# (the full runs do, with --write: see each script's --help for its duration).
bench: $(STAMP) system-deps
	$(BIN)/python benchmarks/latency_pixel1.py
	$(BIN)/python benchmarks/latency_fbnet.py --seeds 5
	$(BIN)/python benchmarks/latency_host.py --from-results
	$(BIN)/python benchmarks/latency_drift.py
	$(BIN)/python benchmarks/sample_efficiency.py --seeds 1 --cap 1000
	$(BIN)/python benchmarks/reward_shape.py --quick
	$(BIN)/python benchmarks/search_scaling.py --quick --runs 1,loop,2

system-deps:
	@scripts/system-deps.sh

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
