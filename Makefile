# The two commands of the README: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test soak lint format benchmark venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is needed, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	@echo "== ensemble run examples/ensembles/retry-oom.yaml (a standalone ensemble)"
	$(BIN)/ensemble run examples/ensembles/retry-oom.yaml --log-dir .ensemble-demo-logs
	@echo "== snakemake --executor ensemble --ensemble-rules retry-oom (examples/snakemake)"
	$(MAKE) -C examples/snakemake demo

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -p no:randomly -p no:random_order tests

# Fault injection over many seeds (tests/test_faults.py runs one): every job resolves, counts add up.
soak: venv
	$(BIN)/python -m benchmarks.soak --seeds 20 --jobs 5000
	$(BIN)/python -m benchmarks.soak --seeds 5 --jobs 5000 --workers 2

benchmark: venv
	$(BIN)/python -m benchmarks

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
