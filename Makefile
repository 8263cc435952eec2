# lltrade: `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
EXT    := build/.ext-release
CORE   := $(wildcard src/lltrade/*.pyx src/lltrade/*.pxd src/lltrade/include/*.h) setup.py
PYTEST := $(PY) -m pytest
ASAN_LIB = $(shell cc -print-file-name=libasan.so)

.PHONY: all venv build builddeps sysdeps run demo test lint typecheck unit test-debug test-asan \
        bench bench-replay annotate clean

all: build

# -- set-up ------------------------------------------------------------------
$(STAMP): pyproject.toml setup.py | builddeps
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=77" "Cython>=3.0.11,<4" "numpy>=2.0" wheel
	$(PY) -m pip install -q --no-build-isolation -e ".[test,bench]"
	@touch $@

venv: $(STAMP)

# System tools the tests use (from Debian): promtool checks /metrics, chromium renders the
# telemetry dashboard, shellcheck and systemd-analyze check the deploy kit, whose monitor.sh
# uses jq and curl. Installs only what is missing; silent when all is there.
SYSDEPS := promtool:prometheus chromium:chromium shellcheck:shellcheck systemd-analyze:systemd \
           jq:jq curl:curl
sysdeps:
	@missing=""; \
	for dep in $(SYSDEPS); do \
	  command -v "$${dep%%:*}" >/dev/null 2>&1 || missing="$$missing $${dep#*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "sysdeps: apt-get install$$missing"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	    $$missing >/dev/null; \
	fi

# C headers the extensions need beyond Python's own: libdeflate (the journal's CRC-32, the
# same as zlib's but folded with carry-less multiplies where the CPU has them, _records.pyx).
builddeps:
	@if [ ! -f /usr/include/libdeflate.h ]; then \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	  echo "builddeps: apt-get install libdeflate-dev"; \
	  $$sudo apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends \
	    libdeflate-dev >/dev/null; \
	fi

$(EXT): $(STAMP) $(CORE) | builddeps
	$(PY) setup.py -q build_ext --inplace
	@mkdir -p build && touch $@

build: $(EXT)

# -- the main job -------------------------------------------------------------
# The daemon in the foreground (Ctrl-C stops it) and its telemetry sidecar on :8000 beside it.
run: build
	@$(VENV)/bin/lltrade-telemetry & tel=$$!; \
	trap 'kill $$tel 2>/dev/null' EXIT INT TERM; \
	$(VENV)/bin/lltrade run

# -- checks -------------------------------------------------------------------
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmark setup.py telemetry deploy
	$(VENV)/bin/ruff format --check src tests benchmark setup.py telemetry deploy

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: build sysdeps
	$(PYTEST) -q tests

# Bounds checks, line tracing and C asserts on; built beside the release build.
test-debug: $(STAMP) | builddeps
	rm -rf build/debug
	LLTRADE_DEBUG=1 $(PY) setup.py -q build_ext --build-lib build/debug --build-temp build/tmp-debug
	cp src/lltrade/*.py src/lltrade/*.pyi build/debug/lltrade/
	PYTHONPATH=build/debug $(PYTEST) -q -p no:cacheprovider tests/unit

# AddressSanitizer + UndefinedBehaviorSanitizer over the unit tests.
test-asan: $(STAMP) | builddeps
	rm -rf build/asan
	LLTRADE_SANITIZE=1 $(PY) setup.py -q build_ext --build-lib build/asan --build-temp build/tmp-asan
	cp src/lltrade/*.py src/lltrade/*.pyi build/asan/lltrade/
	PYTHONPATH=build/asan LD_PRELOAD=$(ASAN_LIB) \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	  $(PYTEST) -q -p no:cacheprovider tests/unit

test: sysdeps lint typecheck unit test-debug test-asan

# -- speed --------------------------------------------------------------------
# The pytest-benchmark suites, saved under results/benchmarks/ and compared with the last saved
# run if there is one (a run saved on another machine or Python only warns: filterwarnings = error
# would stop pytest at start-up); then the replay benchmark against its peers.
bench: build
	$(PY) -m pip install -q --no-build-isolation -e ".[peers]"
	$(PYTEST) benchmark/test_*.py --benchmark-only --benchmark-autosave \
	  --benchmark-storage=results/benchmarks \
	  -W default::pytest_benchmark.logger.PytestBenchmarkWarning \
	  $$(ls results/benchmarks/*/*.json >/dev/null 2>&1 && echo --benchmark-compare)
	$(PY) benchmark/replay.py --json results/replay.json

bench-replay: build
	$(PY) -m pip install -q -e ".[peers]"
	$(PY) benchmark/replay.py --json results/replay.json

# A short demo end to end (daemon, telemetry, load generator, plots.py); prints where the report is.
.PHONY: report
report: build
	$(PY) benchmark/demo_report.py

annotate: $(STAMP)
	LLTRADE_ANNOTATE=1 $(PY) setup.py -q build_ext --inplace --force
	@echo "annotated sources: build/cython/src/lltrade/_book.html, _gate.html"

clean:
	rm -rf build src/lltrade/*.so src/lltrade/*.c .pytest_cache .mypy_cache .ruff_cache
