# Shoumi: the two commands a new user needs.
#   make demo   a collector, an agent and an insider scenario on this machine
#   make test   the whole test suite
# Each creates its own virtual environment in .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test venv proto clean

$(BIN)/shoumi-collector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/shoumi-collector

demo: venv
	$(BIN)/python scripts/demo.py

test: venv
	$(BIN)/python -m pytest

proto: venv
	$(BIN)/python scripts/gen_proto.py

clean:
	rm -rf $(VENV) demo-data .pytest_cache .hypothesis
