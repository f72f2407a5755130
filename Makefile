# Every target that needs the environment depends on .venv/.installed, so `make demo` and
# `make test` work as the first command on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/default

.PHONY: install demo test clean browser

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch to the 2.13.0 CPU wheel; anything else pulls GBs of CUDA packages.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,http,dev]'
	touch $(STAMP)

# The main job on the embedded data: train, export (BN folded, parity verified), predict.
demo: $(STAMP)
	$(BIN)/pipeline train --out $(RUN)
	$(BIN)/pipeline export --run $(RUN)
	$(BIN)/serve predict --model $(RUN)/model.onnx examples/

# Headless Chromium and its driver for the page's browser test (Debian packages).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: $(STAMP) browser
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache

.PHONY: bench bench-smoke
# Measures training and inference side by side and writes BENCHMARKS.md (about 10 minutes).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench --out BENCHMARKS.md

# A few iterations of every benchmark, to check the script runs (also part of `make test`).
bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.bench --smoke --no-accuracy --out runs/bench-smoke/BENCHMARKS.md --work runs/bench-smoke
