# The two commands of the quick start. Both create .venv on first use (the system Python may refuse global
# installs), install the CPU build of torch and this project with its extras, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
INSTALLED := $(VENV)/.installed

.PHONY: test demo

test: $(INSTALLED)
	$(PY) -m pytest -q tests

demo: $(INSTALLED)
	$(PY) -m framepack_shapes.demo --out demo_out

$(PY):
	@$(PYTHON) -m venv $(VENV) || { echo "could not create $(VENV) with $(PYTHON): install the venv module (Debian: apt-get install python3-venv) or set PYTHON=/path/to/python3.10+"; exit 1; }

# torch==2.13.0 is the CPU build on these machines; an unpinned torch would pull a multi-GB CUDA build.
$(INSTALLED): $(PY) pyproject.toml
	$(PIP) install "torch==2.13.0"
	$(PIP) install -e ".[test,demo]"
	@touch $@
