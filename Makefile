# ghvault: `make run` starts a development server, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
ENV_FILE := .env.local
LOAD_ENV := set -a && . ./$(ENV_FILE) && set +a

.PHONY: venv run test test-sqlite test-postgres bench fuzz lint format dev-token schema clean

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

venv: $(INSTALLED)

## Development server on http://127.0.0.1:8080/graphql (SQLite in ./data, GraphiQL on;
## HOST and PORT from the environment or .env.local, e.g. PORT=18080 make run).
run: $(INSTALLED)
	@$(BIN)/ghvault dev-setup
	@$(LOAD_ENV) && $(BIN)/ghvault migrate --create
	@echo
	@$(LOAD_ENV) && echo "GraphiQL: http://$${HOST:-127.0.0.1}:$${PORT:-8080}/graphql"
	@echo "A development token (paste as header  Authorization: Bearer <token>):"
	@echo "  make dev-token SUB=alice ROLE=user     (ROLE: user | admin | service)"
	@echo
	@$(LOAD_ENV) && exec $(BIN)/ghvault serve

SUB ?= alice
ROLE ?= user
dev-token: $(INSTALLED)
	@$(BIN)/ghvault dev-setup >/dev/null
	@$(LOAD_ENV) && $(BIN)/ghvault dev-token --sub $(SUB) --role $(ROLE)

## The whole suite: SQLite always, PostgreSQL when TEST_DATABASE_URL is set.
test: $(INSTALLED)
	$(BIN)/pytest

test-sqlite: $(INSTALLED)
	TEST_DATABASE_URL= $(BIN)/pytest -k "not postgres"

test-postgres: $(INSTALLED)
	GHVAULT_REQUIRE_POSTGRES=1 \
	TEST_DATABASE_URL=$${TEST_DATABASE_URL:-postgres://root@127.0.0.1:5432/test} \
	$(BIN)/pytest -k "postgres"

## Throughput and latency of the hot paths (PostgreSQL too when TEST_DATABASE_URL is set).
bench: $(INSTALLED)
	$(BIN)/python -m bench.bench

## Longer schema-driven fuzzing of the GraphQL API (GHVAULT_FUZZ_EXAMPLES per engine, default
## 2000; PostgreSQL too when TEST_DATABASE_URL is set).
fuzz: $(INSTALLED)
	GHVAULT_FUZZ_EXAMPLES=$${GHVAULT_FUZZ_EXAMPLES:-2000} $(BIN)/pytest tests/graphql/test_fuzz.py --timeout=0

## ruff, then mypy (strict for server/, bench/ and the migrations; see pyproject.toml).
lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Re-export the GraphQL SDL after an API change.
schema: $(INSTALLED)
	$(BIN)/ghvault export-schema > schema.graphql

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
