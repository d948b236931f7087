# `make demo` and `make test` set up .venv from requirements.txt when it is missing or older, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_WORKDIR ?= workdirs/demo
DEMO_DATA ?= data/tfds
# pytest-xdist processes for `make test` (whole test files per process, so session fixtures are built per process).
TEST_WORKERS ?= 2
# XLA's CPU runtime maps its temporary buffer afresh on every step; transparent huge pages spare most of the page
# faults that costs (docs/MEASUREMENTS.md; posebh_jax.metrics.cpu_allocator_hint). A no-op where the kernel has no THP.
export GLIBC_TUNABLES ?= glibc.malloc.hugetlb=1

.PHONY: demo test check format venv clean-demo

# --no-compile: byte-compiling every installed module took about half of the install (docs/MEASUREMENTS.md); Python
# compiles the modules a run imports on first use instead.
$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --no-compile -r requirements.txt
	touch $@

# Test-only reference toolkits (see requirements-reference.txt); best effort, never fails the build.
$(VENV)/.reference: $(VENV)/.installed requirements-reference.txt
	$(VENV)/bin/pip install -q -r requirements-reference.txt && \
	  $(VENV)/bin/pip install -q --no-cache-dir --no-build-isolation --no-binary xtcocotools xtcocotools==1.14.3 || \
	  echo "note: a test reference (torch, transformers or xtcocotools) could not be installed; its comparisons skip (fail under CI=true)"
	touch $@

venv: $(VENV)/.installed

# One style: the formatter's check and the linter (pyproject.toml [tool.ruff]); `make format` applies the formatter.
# The package layers contract (pyproject.toml [tool.importlinter]) is checked by tests/test_layers.py.
check: $(VENV)/.installed
	$(VENV)/bin/ruff format --check --quiet .
	$(VENV)/bin/ruff check --quiet .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format .

test: $(VENV)/.reference check
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

demo: $(VENV)/.installed
	$(PY) -m data_pipeline.prepare synthetic --data_dir=$(DEMO_DATA) --config=configs/demo.py --overwrite
	$(PY) -m posebh_jax.main --config=configs/demo.py --workdir=$(DEMO_WORKDIR) --config.data.data_dir=$(DEMO_DATA)

clean-demo:
	rm -rf $(DEMO_WORKDIR)
