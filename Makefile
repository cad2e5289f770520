# matgen: `make demo` and `make test` work on a fresh machine; both create .venv first.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
# torch is pinned here, in the same pip command as everything else: 2.13.0 is the local CPU wheel.
TORCH  ?= torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: install demo test test-slow lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" -e ".[dev,lm]"
	touch $@

demo: install
	$(VENV)/bin/matgen demo

test: install
	$(PY) -m pytest -q -m "not slow" -n $(PYTEST_WORKERS)

# exit code 5 is pytest's "no tests collected": fine while no test is marked slow.
test-slow: install
	$(PY) -m pytest -q -m slow -n $(PYTEST_WORKERS) || [ $$? -eq 5 ]

lint: install
	$(VENV)/bin/ruff check matgen tests benchmarks cli.py
	$(VENV)/bin/ruff format --check matgen tests benchmarks cli.py

bench: install
	$(PY) benchmarks/bench_data.py

clean:
	rm -rf $(VENV) .pytest_cache
