# Two commands a new user needs (README "Quick start"):
#   make demo   set up .venv and run the walkthrough on the embedded backbone
#   make test   set up .venv with the test tools and run the suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/yoc-text plugins/yoc-image

.PHONY: setup demo test lint wheels

$(BIN)/yoc: pyproject.toml $(foreach p,$(PLUGINS),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]' $(foreach p,$(PLUGINS),-e $(p))
	touch $(BIN)/yoc

setup: $(BIN)/yoc

demo: setup
	HF_HUB_OFFLINE=1 $(BIN)/yoc demo

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

wheels: setup
	$(BIN)/python packaging/build_wheels.py
