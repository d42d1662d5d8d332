# The README's two commands: `make run` and `make test`. Both set everything up from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk here; never let pip fetch a CUDA build.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
PORT ?= 8000

.PHONY: install run test test-sqlite test-postgres bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(FIND_LINKS) "torch==2.13.0"
	$(BIN)/pip install -q $(FIND_LINKS) -e ".[embeddings,test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	PORT=$(PORT) $(BIN)/honcho start -f Procfile

# The whole suite twice: on SQLite, then on PostgreSQL (required under CI=true).
test: install test-sqlite test-postgres

test-sqlite: install
	$(BIN)/python -m pytest

test-postgres: install
	@if $(BIN)/python tests/services.py postgres; then \
		DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest; \
	elif [ "$$CI" = "true" ]; then \
		echo "PostgreSQL at $(TEST_POSTGRES_URL) is unreachable and CI=true: failing."; exit 1; \
	else \
		echo "PostgreSQL at $(TEST_POSTGRES_URL) is unreachable: skipped the PostgreSQL pass."; \
	fi

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) var
