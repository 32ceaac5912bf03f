# The two quick-start commands of README.md:
#   make demo   train on the built-in demo dataset on this machine (CPU is fine),
#               with a domain FID (the shipped digits detector) at each snapshot
#   make test   run the test suite
# Both create the virtual environment in .venv on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# CUDA sources compile wherever nvcc is found; the build test uses this.
ifneq ($(wildcard /usr/local/cuda/bin/nvcc),)
export CUDA_HOME ?= /usr/local/cuda
endif

.PHONY: venv test test-fast demo clean-venv

venv: $(STAMP)

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# The package itself, as the README tells users (editable: tests use this checkout).
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# Skips the slow tests (CUDA build, long end-to-end runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) train.py --outdir runs --data demo --cfg cpu --metrics fid2k_full --detector digits

clean-venv:
	rm -rf $(VENV)
