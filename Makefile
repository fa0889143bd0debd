# The two commands of the README: `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ROWS   ?= 200000

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# torch first: `pip install torch==2.13.0` takes the CPU wheel; a bare `torch` would pull a CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/rayapp demo --rows $(ROWS)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/rayapp run benchmark --rows 1000000

clean:
	rm -rf $(VENV) data
