# make setup | make test | make run | make bench | make report
# Variables: DATA_DIR (folder containing cifar-10-batches-py/), EPOCHS, SMOKE=1, DEVICE.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test run bench report clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf results runs .pytest_cache
