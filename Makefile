# Two commands on a fresh Linux machine with Python >= 3.10:
#   make demo   -- install into .venv, train on the built-in digits, print the tau sweep
#   make test   -- install into .venv (with test tools) and run the test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs clean

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ask-expert demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check ask_expert_ros test
	$(VENV)/bin/ruff format --check ask_expert_ros test
	$(VENV)/bin/mypy

# docs/parameters.md from the parameter specs in core/nodes/node_config.py (test_docs checks it)
docs: $(STAMP)
	$(PY) -m ask_expert_ros.docs_gen

clean:
	rm -rf $(VENV) demo_out build *.egg-info
