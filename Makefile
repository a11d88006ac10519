# The two commands: `make demo` and `make test`. Everything else is set-up they call.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch/torchvision are installed first with explicit pins so pip takes the wheels that this
# project's machines keep on disk; override (e.g. `make TORCH_PINS= test`) to let pip resolve.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Two pytest workers (pytest-xdist), one file each at a time, one torch thread each
# (tests/conftest.py): the suite takes 8 minutes on 2 cores instead of 12.7.
# `make PYTEST_ARGS= test` runs it in one process.
PYTEST_ARGS ?= -n 2 --dist loadfile

export HF_HUB_OFFLINE = 1
export TRANSFORMERS_OFFLINE = 1

.PHONY: demo test lint typecheck pytest install install-dev bench report-screenshots clean

demo: $(VENV)/.installed
	$(VENV)/bin/synthguard demo

test: $(VENV)/.installed-dev lint typecheck pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks scripts examples
	$(VENV)/bin/ruff format --check src tests benchmarks scripts examples

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

pytest: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	$(VENV)/bin/synthguard bench

# PNGs of the demo page and a `check --html` page for docs/demo.md and docs/cli.md (offline,
# bundled digits, Debian's chromium).
report-screenshots: $(VENV)/.installed-dev
	$(PY) scripts/report_screenshots.py --out docs/img

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed: pyproject.toml | $(PY)
	$(if $(strip $(TORCH_PINS)),$(PIP) install $(TORCH_PINS))
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(PIP) install -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
