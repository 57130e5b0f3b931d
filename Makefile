# The two commands of the README: `make demo` (the default study on embedded defaults) and
# `make test` (the fast suite: minutes). `make test-all` runs the whole suite, as CI does
# (.ci/run). Each creates .venv on first use.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
PIP     := $(PY) -m pip
# On the project's CI machines pip is capped to the torch pair on local disk; elsewhere a
# normal resolution happens. Pinning the pair here keeps those machines off a 3 GB download.
TORCH_PIN := $(if $(wildcard /etc/xdg/pip/constraints.txt),torch==2.14.1 torchvision==0.29.1,)
PYTEST_ARGS ?=
# The fast suite leaves out what only the whole suite runs: tests marked slow (studies of their
# own, kills and resumes, the browser, the soak) and the multi-node cluster tests.
FAST    := -m "not slow and not cluster"

.PHONY: venv demo test test-all lint clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(if $(TORCH_PIN),$(PIP) install -q $(TORCH_PIN))
	$(PIP) install -q -e '.[test]'
	touch $@

demo: venv
	$(VENV)/bin/syncstudy launch studies/digits.yaml

test: venv
	$(VENV)/bin/ruff check syncmodel pipeline tests bench
	$(VENV)/bin/pytest -q $(FAST) $(PYTEST_ARGS)

test-all: venv
	$(VENV)/bin/ruff check syncmodel pipeline tests bench
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check syncmodel pipeline tests bench

clean:
	rm -rf $(VENV) .pytest_cache
