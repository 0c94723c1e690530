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

# A built-in 1° grid with real coastlines, exact γ by certified probing, and every method
# compared against it (table + PNG maps in $(OUT)).
demo: $(STAMP)
	$(BIN)/diffnorm grid toy -o $(OUT)/fields.nc --steps 10 --d-min 1.5 --d-max 4 --seed 0
	$(BIN)/diffnorm estimate $(OUT)/fields.nc -o $(OUT)/gamma.nc --method probing --tolerance 1e-6
	$(BIN)/diffnorm compare $(OUT)/fields.nc --out $(OUT) \
		--methods analytic,randomization:100,randomization:1000,randomization:10000

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_methods.py

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
