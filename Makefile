# `make demo` and `make test` set up .venv from requirements.txt when it is missing or older, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_WORKDIR ?= workdirs/demo
DEMO_DATA ?= data/tfds

.PHONY: demo test venv clean-demo

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: $(VENV)/.installed
	$(PY) -m data_pipeline.prepare synthetic --data_dir=$(DEMO_DATA) --config=configs/demo.py --overwrite
	$(PY) -m posebh_jax.main --config=configs/demo.py --workdir=$(DEMO_WORKDIR) --config.data.data_dir=$(DEMO_DATA)

clean-demo:
	rm -rf $(DEMO_WORKDIR)
