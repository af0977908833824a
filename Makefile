# Two entry points (see README): `make demo` and `make test`.
# Both create .venv on first use (Python 3.11+ and pip are all they need) and
# are quick when it exists.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.qualmon-installed

.PHONY: demo test bench notebooks install clean

demo: $(STAMP)
	$(BIN)/qualmon demo --out out

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Benchmarks against peers (samplics, svy, mirt, girth): run on demand.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

# Re-execute the walk-through notebooks (outputs are committed).
notebooks: $(STAMP)
	$(BIN)/python -m pip install --quiet nbformat nbclient ipykernel
	$(BIN)/python notebooks/build.py

clean:
	rm -rf out build dist *.egg-info .pytest_cache .hypothesis
