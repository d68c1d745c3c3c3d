# Two entry points (see README):  `make book`  and  `make test`  (`make check`: figures still follow).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= paper

.PHONY: book test figures check html lint format clean bench

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

# The book: `make book` runs every chapter notebook (papermill, profile $(PROFILE)), then builds
# the HTML from the executed notebooks. `PROFILE=smoke make book` takes seconds per chapter and
# writes its figures under _build/ so the committed paper figures in figures/ stay untouched.
FIGURES ?= $(if $(filter paper,$(PROFILE)),figures,_build/figures/$(PROFILE))

figures: $(BIN)/.fedpa-installed
	$(BIN)/fedpa reproduce --profile $(PROFILE) --output-dir $(FIGURES)

# Regenerate $(PROFILE) into a temporary folder and compare every committed data file in figures/
# with it, within the tolerances of book/<stem>.yml (non-zero exit on a mismatch).
check: $(BIN)/.fedpa-installed
	$(BIN)/fedpa reproduce --check --profile $(PROFILE) --jobs 2

html: $(BIN)/.fedpa-installed
	$(BIN)/fedpa book

book: $(BIN)/.fedpa-installed
	$(BIN)/fedpa reproduce --profile $(PROFILE) --output-dir $(FIGURES)
	$(BIN)/fedpa book

clean:
	rm -rf _build
