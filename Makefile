# The README's two commands: `make run` and `make test`. Both set everything up from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk here; never let pip fetch a CUDA build.
WHEELS := $(wildcard /opt/wheels)
FIND_LINKS := $(if $(WHEELS),--find-links $(WHEELS),)
TEST_POSTGRES_URL ?= postgres://postgres@127.0.0.1:5432/test
PORT ?= 8000

.PHONY: install run test test-sqlite test-postgres bench bench-core load faults clean

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

# Every benchmark, one JSON object per line; the big ones build their database once and reuse it.
bench: bench-core
	$(BIN)/python bench/multilabel.py
	$(BIN)/python bench/agreement.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/modeling.py
	$(BIN)/python bench/embeddings.py
	$(BIN)/python bench/postgres_settings.py
	$(BIN)/python bench/quality.py

bench-core: install
	$(BIN)/python bench/run.py

# Minutes each, so not in `make test` (which runs short versions: tests/test_load_short.py and
# tests/test_faults_stopped.py). Both need PostgreSQL; faults also redis-server and initdb.
load: install
	BENCH_POSTGRES_URL=$(TEST_POSTGRES_URL) $(BIN)/python bench/load.py --annotators 50 --reviewers 5 --seconds 300 --items 100000

faults: install
	FAULTS_FULL=1 DATABASE_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -s tests/test_faults.py tests/test_faults_stopped.py

clean:
	rm -rf $(VENV) var
