# The two commands a newcomer types: `make demo` and `make test`.
# Both create .venv and install the pinned versions (requirements.lock) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test test-slow test-durations browser asyncapi-cli lint format lock asyncapi bench-rules clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"Python 3.11+ needed, found {sys.version.split()[0]}; run: make PYTHON=python3.11 ..."'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## run the whole system on the sample year, print the outcome, stop
	$(BIN)/investflow demo

# The suite mostly waits on running services, so test files run side by side: each worker
# starts its own nats-servers and databases. TEST_WORKERS=1 runs them one after another.
# Files go out longest first (tests/durations.json; xdist would reorder them by test count).
TEST_WORKERS ?= 4
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: $(STAMP) browser asyncapi-cli  ## the test suite (real nats-server, SQLite, PostgreSQL when it answers)
	$(BIN)/pytest -q $(XDIST)

test-slow: $(STAMP) browser asyncapi-cli  ## the same suite at the issues' full sizes (2,000-event fault runs, ...)
	INVESTFLOW_SLOW=1 $(BIN)/pytest -q $(XDIST)

test-durations: $(STAMP) browser asyncapi-cli  ## run `make test` and rewrite tests/durations.json (the files' order)
	INVESTFLOW_RECORD_DURATIONS=1 $(BIN)/pytest -q $(XDIST)

# The board's browser tests drive Debian's chromium (never a downloaded browser); the CJK
# font lets the pages and the weekly chart show Chinese.
browser:
	@test -x /usr/bin/chromium && fc-list 2>/dev/null | grep -qi "noto.*cjk" || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-noto-cjk; }

# `asyncapi validate` for the contract test (tests/test_contract.py), from the npm registry
# into a cache dir, never globally; once there, nothing is fetched. Without npm the test skips.
ASYNCAPI_CLI_DIR ?= $(HOME)/.cache/investflow/asyncapi-cli
ASYNCAPI_CLI_VERSION := 4.1.1
asyncapi-cli:
	@test -x $(ASYNCAPI_CLI_DIR)/node_modules/.bin/asyncapi || { \
		command -v npm >/dev/null && \
		npm install --prefix $(ASYNCAPI_CLI_DIR) --no-audit --no-fund --loglevel=error \
			@asyncapi/cli@$(ASYNCAPI_CLI_VERSION) || \
		echo "asyncapi-cli: no npm or the install failed; the AsyncAPI CLI test will skip"; }

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

asyncapi: $(STAMP)  ## regenerate docs/asyncapi.yaml from the services
	$(BIN)/investflow asyncapi

lock:  ## re-pin after changing dependencies in pyproject.toml
	$(BIN)/pip install -q -e '.[dev]' && $(BIN)/pip freeze --exclude-editable > requirements.lock

# The province-year soak (issue 17 item 4, docs/performance.md): a generated year of
# SOAK_LEADS leads through every service on SOAK_NODES nats-servers, exact counts checked.
# 100,000 leads is ~1.7 million messages: hours on 2 cores. `make test-slow` runs 300 leads.
SOAK_LEADS ?= 100000
SOAK_NODES ?= 3
.PHONY: soak
soak: $(STAMP)  ## the province-year soak: 100,000 leads through the live system on a 3-node cluster
	$(BIN)/python bench/soak.py --leads $(SOAK_LEADS) --nodes $(SOAK_NODES)

# ---- operations (docs/operations.md): not part of `make test` ---------------------------------
.PHONY: compose-check bundle wheelhouse

compose-check: $(STAMP)  ## build and run deploy/docker-compose.yml on a Docker engine, smoke it, tear it down
	$(BIN)/python -m tests.deploy.compose_check

bundle: $(STAMP)  ## build/investflow-bundle-*.tar.gz: wheelhouse + source (+ images) for an air-gapped install
	$(BIN)/python deploy/bundle.py --out build

wheelhouse: $(STAMP)  ## build/wheelhouse: every pinned package as a wheel (images install from it)
	$(BIN)/python deploy/bundle.py --wheelhouse-only

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
