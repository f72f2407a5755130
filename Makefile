# Every target that needs the environment depends on .venv/.installed, so `make demo` and
# `make test` work as the first command on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN ?= runs/default

.PHONY: install demo test test-fast lint clean browser proto

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins torch to the 2.13.0 CPU wheel; anything else pulls GBs of CUDA packages.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[train,http,grpc,dev,heif]'
	touch $(STAMP)

# The gRPC messages and service of serve/proto/inference.proto, generated beside it (committed; a test
# checks they match the .proto).
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. serve/proto/inference.proto

# The main job on the embedded data: train, export (BN folded, parity verified), predict.
demo: $(STAMP)
	$(BIN)/pipeline train --out $(RUN) --overwrite
	$(BIN)/pipeline export --run $(RUN)
	$(BIN)/serve predict --model $(RUN)/model.onnx examples/
	@echo
	@echo "Next: $(BIN)/serve predict --model $(RUN)/model.onnx YOUR-PHOTO.jpg"
	@echo "      $(BIN)/serve http --model $(RUN)/model.onnx   (then open http://127.0.0.1:8000/ to write a number)"
	@echo "      make evaluate   (how well it reads photos, numbers and non-digits)"

# The Debian packages the slow tiers drive: headless Chromium and its driver (the page's browser test), wrk
# and h2load (nghttp2-client; the bench-peers harness test, HTTP and gRPC), installed with apt when a command
# is missing.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v wrk >/dev/null \
		&& command -v h2load >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium \
			chromium-driver wrk nghttp2-client >/dev/null; }

# Every tier (what CI runs), 742 tests on 2 cores: 742 took 10 min 38 s of pytest on an Intel Xeon with AVX-512 but no
# bf16 units (11 min 56 s with the install, fresh clone; 737 took 9 min 52 s / 11 min 12 s a stop before, 730 took 10 min 54 s / 12 min 27 s two stops before, 729 took 10 min 44 s / 12 min 12 s three stops before, 723 took 10 min 25 s / 11 min 45 s four stops before, 714 took
# 11 min 24 s / 13 min 34 s before that); 708 took 12 min 6 s on an AMD EPYC with AVX2 only (training runs
# in fp32 on both; 13 min 47 s with the install, fresh clone; 701 took 10 min 55 s / 12 min 25 s and 11 min 45 s /
# 13 min 21 s in two runs, 691 took 10 min 58 s / 12 min 30 s, 675 took 11 min 13 s / 12 min 48 s, 646 took 13 min 32 s / 15 min 3 s before exports in tests of other things calibrated on fewer images),
# and 613 tests 7 min 7 s on one with AVX512-BF16 (8 min 6 s with the install, an earlier stop).
test: $(STAMP) browser lint
	$(BIN)/python -m pytest -m ""

# Style and the mistakes a linter catches (unused names, shadowed loop variables), then the types (mypy),
# both as configured in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

# The fast tier while working (no servers, browsers, torchrun or fresh installs): 2-4 minutes.
test-fast: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache

.PHONY: evaluate
# How well the served model reads photos, scans, canvases, fonts, numbers and non-digits (a few minutes).
evaluate: $(STAMP)
	$(BIN)/pipeline evaluate --model $(RUN)/model.onnx

.PHONY: bench bench-smoke
# Measures training and inference side by side and writes BENCHMARKS.md (about 10 minutes).
bench: $(STAMP)
	$(BIN)/python -m benchmarks.bench --out BENCHMARKS.md

# A few iterations of every benchmark, to check the script runs (also part of `make test`).
bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.bench --smoke --no-accuracy --out runs/bench-smoke/BENCHMARKS.md --work runs/bench-smoke

.PHONY: bench-peers
# foldserve's `serve http` against KServe, MLServer, LitServe and Ray Serve serving the `make demo` model, one
# server at a time on 127.0.0.1, driven by wrk (and foldserve's gRPC by h2load; Debian packages wrk and
# nghttp2-client); writes its own section of BENCHMARKS.md
# (about 15 minutes, plus the first installs). Each peer is pip-installed into its own virtual environment
# under runs/peers/, never into .venv.
bench-peers: $(STAMP)
	$(BIN)/python -m benchmarks.peers --model $(RUN)/model.onnx --out BENCHMARKS.md --work runs/peers --python $(PYTHON)
