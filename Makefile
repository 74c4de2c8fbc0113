# Two commands set up everything on a fresh Debian machine (as root): `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
PY      := $(VENV)/bin/python
UV      := $(VENV)/bin/uv
GPURIG  := $(VENV)/bin/gpurig
# The host lock this controller can run itself (bloomkit's tests run on it); Python 3.11, CPU.
DEV_LOCK := lock/cpu-cp311.txt
# Pytest selection: `make test PYTEST_ARGS='-m "not integration"'` for the quick subset.
PYTEST_ARGS ?=

.PHONY: help venv engine demo test lint check clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

# Bytecode compiled once here, for the whole site-packages: where PYTHONDONTWRITEBYTECODE is
# set (CI), every pyinfra, ansible-playbook and bloomkit process the tests start would otherwise
# compile its imports again (about 0.6 s of CPU for a pyinfra run). uv's --compile-bytecode
# below left the first install's packages uncompiled (a clean clone's venv had no bytecode for
# pyinfra, paramiko, gevent, rich or pydantic), so compileall goes over all of site-packages;
# its errors are ignored there, as pip's and uv's are (torch ships Python 3.12-only test files).
$(VENV)/.ready: pyproject.toml bloomkit/pyproject.toml $(DEV_LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check 'uv>=0.9'
	$(UV) pip install -q --python $(PY) -e . --group dev
	# bloomkit's packages exactly as a CPU host gets them (hashes required), then bloomkit itself.
	$(UV) pip install -q --compile-bytecode --python $(PY) --require-hashes -r $(DEV_LOCK) \
		$$($(GPURIG) resolve --uv-args $(basename $(notdir $(DEV_LOCK))))
	$(UV) pip install -q --python $(PY) --no-deps -e ./bloomkit
	$(PY) -c 'import compileall as c, sysconfig as s; c.compile_dir(s.get_path("purelib"), quiet=2, workers=0)'
	$(PY) -m compileall -q -j 0 src bloomkit/src plugins
	touch $@

venv: $(VENV)/.ready  ## Create the development environment in .venv

engine: venv  ## Start a loopback-only Docker engine unless one already answers
	$(GPURIG) sandbox engine

demo: venv engine  ## Sandbox host, pyinfra deploy, fleet smoke report
	$(GPURIG) demo

test: venv engine  ## Lint, then every test, integration tests on real sandbox hosts included
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest $(PYTEST_ARGS)

lint:  ## ruff, mypy on gpurig, ansible-lint, hadolint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(GPURIG) lint-assets

check: venv  ## Validate stack.yml
	$(GPURIG) check

clean:  ## Stop sandbox hosts and remove the development environment
	-$(GPURIG) sandbox down
	rm -rf $(VENV) reports dist
