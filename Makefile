# `make setup`: create .venv, install pseudolabel with its test tools, link the eyes data.
PY ?= python3.11
VENV := .venv
SHARED := ../shared/data/eyes

.PHONY: setup test test-all data

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

data:
	@if [ -d $(SHARED) ] && [ ! -e data/eyes ]; then \
		mkdir -p data && ln -s "$$(cd $(SHARED) && pwd)" data/eyes && echo "linked data/eyes -> $(SHARED)"; \
	elif [ -e data/eyes ]; then echo "data/eyes is there"; \
	else echo "note: $(SHARED) not found; point pipelines/eyes.yaml at your images"; fi

test:
	$(VENV)/bin/python -m pytest -q

test-all:
	$(VENV)/bin/python -m pytest -q -m "slow or not slow"
