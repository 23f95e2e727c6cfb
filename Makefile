# Two commands a new user needs (README "Quick start"):
#   make demo   set up .venv and run the walkthrough on the embedded backbone
#   make test   set up .venv with the test tools and run the suite (without the quality gate)
#   make test-quality   the quality gate alone (tests marked slow; minutes on a CPU)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := plugins/yoc-text plugins/yoc-image

.PHONY: setup demo test test-quality lint wheels

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

test-quality: setup
	$(BIN)/python -m pytest -q -m slow

wheels: setup
	$(BIN)/python packaging/build_wheels.py
