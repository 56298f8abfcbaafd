# Clarion — `make run` serves the embedded default; `make test` installs and runs everything.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format check-migrations check-schema bench worker beat clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# The embedded default: SQLite, in-memory channel layer, worker and beat in-process.
# Anything already in the environment (DATABASE_URL, REDIS_URL, ...) is respected.
run: install
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(PY) manage.py ensure_admin
	@echo "Clarion on http://$(HOST):$(PORT)/  (API docs: /api/docs/, admin: /admin/)"
	DEBUG=$${DEBUG:-1} $(VENV)/bin/daphne -b $(HOST) -p $(PORT) notifyproject.asgi:application

# With REDIS_URL set: the Procfile's other two processes, for local multi-process runs.
worker: install
	$(VENV)/bin/celery -A notifyproject worker --loglevel=INFO
beat: install
	$(VENV)/bin/celery -A notifyproject beat --loglevel=INFO

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check-migrations: install
	SECRET_KEY=$${SECRET_KEY:-makemigrations-check} $(PY) manage.py makemigrations --check --dry-run

# The OpenAPI schema must validate with no generator warnings (undocumented views, types).
check-schema: install
	SECRET_KEY=$${SECRET_KEY:-schema-check} $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

# Tests run on PostgreSQL and Redis on this machine unless DATABASE_URL / REDIS_URL say otherwise
# (defaults in pytest.ini).
test: install lint check-migrations check-schema
	$(PY) -m pytest $(PYTEST_ARGS)

# Bench-only peers (django-push-notifications, django-webpush, py-spy) are not Clarion's dependencies.
bench: install
	$(PY) -m pip install --quiet -r bench/requirements.txt
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* var .pytest_cache .ruff_cache
