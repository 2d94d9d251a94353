# The two commands: `make run` starts the platform, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-broker test-fast lint format bench soak clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=..."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): $(BIN)/python requirements.txt requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bin/run.py

# Most of the suite runs in TEST_WORKERS processes (pytest-xdist: tests/environment.py gives each
# its own Redis database, VAR_DIR and test database); the tests that assert a bound in time
# (marked serial) run alone after them. Browser tests run in a pytest process of their own: their
# live server is session-wide. Their browser is installed (or the command to install it printed)
# before any test runs.
TEST_WORKERS ?= 2
PARALLEL = -n $(TEST_WORKERS) --dist loadgroup
test: $(STAMP)
	bin/ensure_browser.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not browser and not serial" $(PARALLEL) $(PYTEST_ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "serial and not browser" $(PYTEST_ARGS)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

test-broker: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m broker $(PYTEST_ARGS)

test-fast: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PARALLEL) $(PYTEST_ARGS)

# ruff for style, import-linter for the architecture (the layers of DESIGN.md section 3).
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/beat_scale.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/run.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.streams
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.tracing_overhead
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.django_tasks
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.flow_control
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m benchmarks.jobs_view

# The long fault runs against PostgreSQL (issue 15): tests/e2e/test_beat_faults.py with its
# two-Beat chaos test run for SOAK_SECONDS (default 10 minutes) instead of 2; then a summary.
# The whole output is in $(VAR_DIR)/soak.log (VAR_DIR defaults to var).
SOAK_SECONDS ?= 600
SOAK_LOG = $${VAR_DIR:-var}/soak.log
soak: $(STAMP)
	@case "$$DATABASE_URL" in postgres*) ;; *) echo "make soak runs against PostgreSQL: set DATABASE_URL=postgres://..."; exit 1;; esac
	@mkdir -p $${VAR_DIR:-var}; echo "soak: $(SOAK_SECONDS) s of Beat chaos and the other Beat fault tests; log in $(SOAK_LOG)"
	@start=$$(date +%s); BEAT_CHAOS_SECONDS=$(SOAK_SECONDS) PATH="$(CURDIR)/$(BIN):$$PATH" \
	  $(BIN)/python -m pytest tests/e2e/test_beat_faults.py -rA --durations=0 $(PYTEST_ARGS) > $(SOAK_LOG) 2>&1; \
	  status=$$?; echo "--- soak summary: exit $$status after $$(( $$(date +%s) - start )) s"; \
	  grep -E "^beat chaos:|^(PASSED|FAILED|ERROR|SKIPPED) |s call |^=+ .*(passed|failed|error)" $(SOAK_LOG); \
	  exit $$status

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
