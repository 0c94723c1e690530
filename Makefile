# The two commands of the README: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.diffnorm-installed
OUT    ?= out/demo

.PHONY: venv test lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q

# The whole pipeline on a small grid (exact data, training, evaluation against randomization
# and analytic, a model file); tables and plots in $(OUT). QUICK=1 for the smoke version (about 20 s here).
demo: $(STAMP)
	$(BIN)/diffnorm demo --out $(OUT) $(if $(QUICK),--quick,)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
