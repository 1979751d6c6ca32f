# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 5000
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi

.PHONY: install demo test

# Development installs both files (requirements-dev.txt includes requirements.txt);
# production (the Procfile) installs requirements.txt alone.
$(BIN)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(BIN)/.installed

demo: install
	$(FLASK) db upgrade
	PORT=$(PORT) $(FLASK) demo
	$(FLASK) run --port $(PORT)

# The console's browser test saves its screenshots here.
SCREENSHOT_DIR ?= build/screenshots

test: install
	SCREENSHOT_DIR=$(SCREENSHOT_DIR) $(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: bench bench-smoke
bench: install
	$(BIN)/python bench/run.py

bench-smoke: install
	$(BIN)/python bench/run.py --smoke
	$(BIN)/python bench/attacks.py --smoke
	$(BIN)/python bench/overload.py --smoke
	$(BIN)/python bench/capacity.py --smoke
	$(BIN)/python bench/relays.py --events 200 --threads 1,4
	$(BIN)/python bench/reconnects.py --smoke
