# Two entry points (see README):  `make book`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= paper

.PHONY: book test figures html lint format clean bench

$(BIN)/.fedpa-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

test: $(BIN)/.fedpa-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

lint: $(BIN)/.fedpa-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.fedpa-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf _build
