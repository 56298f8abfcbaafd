# Clarion — `make run` serves the embedded default; `make test` installs and runs everything.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet -c constraints.txt
# A stamp per content of what is installed: editing a requirements file reinstalls.
RUNTIME_STAMP := $(VENV)/.runtime-$(shell cat requirements.txt constraints.txt | cksum | cut -d' ' -f1)
TEST_STAMP := $(VENV)/.test-$(shell cat requirements.txt requirements-test.txt constraints.txt | cksum | cut -d' ' -f1)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install install-test run admin-password test lint format check-migrations check-schema bench \
	worker beat constraints clean

$(RUNTIME_STAMP): requirements.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PIP) -r requirements.txt
	rm -f $(VENV)/.runtime-*
	touch $@

$(TEST_STAMP): $(RUNTIME_STAMP) requirements-test.txt
	$(PIP) -r requirements-test.txt
	rm -f $(VENV)/.test-*
	touch $@

# What a server needs, nothing more (no test runner, no browser driver).
install: $(RUNTIME_STAMP)
# Plus the test runner, linters and browser driver (the browser itself is Debian's chromium).
install-test: $(TEST_STAMP)

# The embedded default: SQLite, in-memory channel layer, worker and beat in-process.
# Anything already in the environment (DATABASE_URL, REDIS_URL, ...) is respected.
run: install
	DEBUG=$${DEBUG:-1} $(PY) manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(PY) manage.py ensure_admin
	@echo "Clarion on http://$(HOST):$(PORT)/  (API docs: /api/docs/, admin: /admin/)"
	@test ! -f var/admin-password.txt || echo "Admin sign-in: var/admin-password.txt; a new password: make admin-password"
	DEBUG=$${DEBUG:-1} $(VENV)/bin/daphne -b $(HOST) -p $(PORT) notifyproject.asgi:application

# A new random password for the first admin (printed, and written to var/admin-password.txt).
admin-password: install
	DEBUG=$${DEBUG:-1} $(PY) manage.py ensure_admin --reset

# With REDIS_URL set: the Procfile's other two processes, for local multi-process runs.
worker: install
	$(VENV)/bin/celery -A notifyproject worker --loglevel=INFO
beat: install
	$(VENV)/bin/celery -A notifyproject beat --loglevel=INFO

lint: install-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install-test
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

check-migrations: install
	SECRET_KEY=$${SECRET_KEY:-makemigrations-check} $(PY) manage.py makemigrations --check --dry-run

# The OpenAPI schema must validate with no generator warnings (undocumented views, types).
check-schema: install
	SECRET_KEY=$${SECRET_KEY:-schema-check} $(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

# Tests run on PostgreSQL and Redis on this machine unless DATABASE_URL / REDIS_URL say otherwise
# (defaults in pytest.ini).
test: install-test lint check-migrations check-schema
	$(PY) -m pytest $(PYTEST_ARGS)

# Bench-only peers (django-push-notifications, django-webpush, py-spy) are not Clarion's
# dependencies; the benchmark clients (websockets, httpx) come with the test tooling.
bench: install-test
	$(PIP) -r bench/requirements.txt
	$(PY) -m bench $(BENCH_ARGS)

# Re-pin every transitive package: resolve all three requirement files in a clean venv and freeze.
constraints:
	rm -rf var/constraints-venv
	$(PYTHON) -m venv var/constraints-venv
	var/constraints-venv/bin/python -m pip install --quiet --upgrade pip
	var/constraints-venv/bin/python -m pip install --quiet -r requirements-test.txt -r bench/requirements.txt
	{ sed -n '1,/^# requirements.txt, requirements-test.txt/p' constraints.txt; \
	  var/constraints-venv/bin/python -m pip freeze; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf var/constraints-venv

clean:
	rm -rf $(VENV) db.sqlite3 db.sqlite3-* var .pytest_cache .ruff_cache
