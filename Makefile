# The two setup commands (README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the package on first use; later runs reuse it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check

.PHONY: demo test install install-test clean

demo: $(VENV)/.stamp-install
	$(BIN)/vjepa objective

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest -q

install: $(VENV)/.stamp-install
install-test: $(VENV)/.stamp-test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-install: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml $(VENV)/.stamp-install
	$(PIP) install -q -e '.[test]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
