# supplyflow: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_PORT ?= 9092
export SUPPLYFLOW_BOOTSTRAP ?= 127.0.0.1:$(KAFKA_PORT)

.PHONY: venv demo test faults bench bench-quick test-unit test-integration lint typecheck kafka-up kafka-down clean system-deps compile uncompile test-compiled

# Debian packages the test suite drives: Chromium + ChromeDriver (status page in a real
# browser), Prometheus's promtool (metrics and config checks) and kcat (producing with
# librdkafka's default partitioner, as many users' clients do). Installed only if missing.
SYSTEM_BINARIES := /usr/bin/chromium /usr/bin/chromedriver /usr/bin/promtool /usr/bin/kcat

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v java >/dev/null || { echo "java not found: install OpenJDK 17 (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@command -v mvn >/dev/null || { echo "mvn not found: install Maven (apt-get install maven)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

kafka-up: venv
	$(BIN)/supplyflow kafka up --port $(KAFKA_PORT)

kafka-down: venv
	$(BIN)/supplyflow kafka down --port $(KAFKA_PORT)

demo: venv
	$(BIN)/supplyflow demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

system-deps:
	@missing=0; for b in $(SYSTEM_BINARIES); do [ -x $$b ] || missing=1; done; \
	if [ $$missing -eq 1 ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install chromium chromium-driver prometheus kcat"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver prometheus kcat >/dev/null; \
	fi

# The whole suite: lint, types, unit tests, then integration tests against a real local
# broker that this target starts (unless one already answers) and stops again.
test: venv system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	@started=0; \
	if ! $(BIN)/supplyflow kafka ping >/dev/null 2>&1; then \
	  $(BIN)/supplyflow kafka up --port $(KAFKA_PORT) || exit 1; started=1; \
	fi; \
	$(BIN)/pytest -m "not faults and not compiled"; rc=$$?; \
	if [ $$rc -ne 0 ]; then echo "--- broker log tail ---"; $(BIN)/supplyflow kafka logs --port $(KAFKA_PORT) | tail -40; fi; \
	if [ $$started -eq 1 ]; then $(BIN)/supplyflow kafka down --port $(KAFKA_PORT); fi; \
	exit $$rc

# Fault injection (docs/guarantees.md, "Fault injection"): cases on generated records (SIGKILLs,
# positions crossing zero, broker restart, join/leave, deleted data dir, input before/while
# workers start), checked exactly; the kill cases run with each of SUPPLYFLOW_FAULTS_ROUNDS
# random seeds. A summary table (with the output pauses) closes the output.
# SUPPLYFLOW_FAULTS_SEED=n[,m...] repeats a run.
SUPPLYFLOW_FAULTS_ROUNDS ?= 3
faults: venv system-deps
	@started=0; \
	if ! $(BIN)/supplyflow kafka ping >/dev/null 2>&1; then \
	  $(BIN)/supplyflow kafka up --port $(KAFKA_PORT) || exit 1; started=1; \
	fi; \
	SUPPLYFLOW_FAULTS_ROUNDS=$(SUPPLYFLOW_FAULTS_ROUNDS) $(BIN)/pytest -m "faults or faults_bounded"; rc=$$?; \
	if [ $$started -eq 1 ]; then $(BIN)/supplyflow kafka down --port $(KAFKA_PORT); fi; \
	exit $$rc

# Benchmarks against a real local broker, started (and stopped) here unless one answers.
# `bench` is the full run and rewrites the table in docs/benchmarks.md; `bench-quick` is scaled down.
BENCH_ARGS ?=
bench: venv
	@started=0; \
	if ! $(BIN)/supplyflow kafka ping >/dev/null 2>&1; then \
	  $(BIN)/supplyflow kafka up --port $(KAFKA_PORT) || exit 1; started=1; \
	fi; \
	$(BIN)/python -m bench all $(BENCH_ARGS) && $(BIN)/python -m bench readme; rc=$$?; \
	if [ $$started -eq 1 ]; then $(BIN)/supplyflow kafka down --port $(KAFKA_PORT); fi; \
	exit $$rc

bench-quick: BENCH_ARGS = --quick
bench-quick: venv
	@started=0; \
	if ! $(BIN)/supplyflow kafka ping >/dev/null 2>&1; then \
	  $(BIN)/supplyflow kafka up --port $(KAFKA_PORT) || exit 1; started=1; \
	fi; \
	$(BIN)/python -m bench all $(BENCH_ARGS); rc=$$?; \
	if [ $$started -eq 1 ]; then $(BIN)/supplyflow kafka down --port $(KAFKA_PORT); fi; \
	exit $$rc

test-unit: venv
	$(BIN)/pytest -m "not integration and not compiled"

# Optional: the pure domain (supplyflow.compiled.COMPILED) compiled with mypyc into C
# extensions beside its sources (needs a C compiler; docs/operations.md, "Compiling the
# domain"). Python then imports them instead of the .py files; `uncompile` removes them
# (pure Python, the default). A build older than its sources is refused on import. The
# outputs are touched: setuptools keeps an unchanged build's old times when it copies.
COMPILED_OUTPUTS = tables/*.so codecs/*.so src/supplyflow/_domain__mypyc*.so
compile: venv
	SUPPLYFLOW_COMPILE=1 $(BIN)/python setup.py --quiet build_ext --inplace
	touch $(COMPILED_OUTPUTS)
	$(BIN)/python -c "from supplyflow.compiled import compiled_in_use; assert compiled_in_use(), 'the compiled domain is not in use'; print('domain compiled (mypyc)')"

uncompile:
	rm -f $(COMPILED_OUTPUTS)
	rm -rf build

# The exactness tests (tables, agents, codecs) and the `compiled` tests on the compiled build.
test-compiled: compile
	$(BIN)/pytest -m "not integration" tests/tables tests/agents tests/codecs tests/test_compiled.py

clean: uncompile
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info src/*.egg-info
