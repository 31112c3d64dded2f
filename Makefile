# Two entry points a new user needs: `make demo` and `make test` (see README).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU machines get the pinned CPU build of torch; a machine with an NVIDIA GPU keeps its own.
TORCH_PIN ?= torch==2.13.0

.PHONY: setup demo test test-fast test-torch bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1 && $(PY) -c "import torch" 2>/dev/null; then \
		echo "GPU machine: keeping the installed torch"; \
	else \
		$(PY) -m pip install -q "$(TORCH_PIN)"; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	AETHERIS_HOME=$${AETHERIS_HOME:-$(CURDIR)/.aetheris} $(VENV)/bin/aetheris ingest --synthetic
	AETHERIS_HOME=$${AETHERIS_HOME:-$(CURDIR)/.aetheris} $(VENV)/bin/aetheris forecast --asset SYN-BTC --horizon 7 --seed 7 --threshold 450000

test: setup
	RAY_AUTH_MODE=token RAY_USAGE_STATS_ENABLED=0 $(PY) -m pytest

# The edit loop: no test marked slow (each over about a second) and no real Ray; `make test` runs them all.
# the numpy core's fast tests on 2 processes (about 45 s on 2 cores); torch and ray tests have their own groups
test-fast: setup
	$(PY) -m pytest -n 2 -m "not slow and not integration and not torch and not ray" --ignore=aetheris_ray/distributed

# The tests that need torch (rough_vol, torch utilities, the lazy-registration probe), slow ones included.
test-torch: setup
	$(PY) -m pytest -m torch

clean:
	rm -rf $(VENV) .aetheris
