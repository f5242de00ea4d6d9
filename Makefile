# One virtual environment for the project, created and filled on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test demo demo-train clean-venv

# torch's CUDA build and its libraries take about 6 GB; say so before pip fails half-way.
NEED_GB ?= 8

$(STAMP): pyproject.toml
	@python3 -c "import shutil,sys; free=shutil.disk_usage('.').free/2**30; \
	sys.stderr.write(f'warning: {free:.1f} GB free here; installing the venv needs about $(NEED_GB) GB\\n') if free < $(NEED_GB) else None"
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Two pytest workers, each given whole test files (module fixtures such as the sharded run are
# built once): most tests use one core, so this cuts the suite's wall time by about a quarter.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

# outpaints two clips with the tiny model kept in examples/tiny_model
demo: $(STAMP)
	$(PY) -m lightning_m3ddm.demo

# trains that tiny model from scratch first (minutes), then outpaints with it
demo-train: $(STAMP)
	$(PY) -m lightning_m3ddm.demo --train

clean-venv:
	rm -rf $(VENV)
