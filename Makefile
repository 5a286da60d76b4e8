# Terapan: the two commands a newcomer needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | sha1sum | cut -c1-12)

.PHONY: setup demo test test-services worker serve migrate lint format browser bench clean

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

migrate: setup
	$(PY) manage.py migrate --noinput

# Builds a demo panorama through the real job chain on real RQ workers, then serves it.
demo: migrate
	$(PY) manage.py demo

# Headless Chromium for the viewer's end-to-end tests (Debian's package).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	  || echo "warning: could not install chromium; browser tests will skip"; }

test: setup browser
	$(PY) -m pytest

# The database and job tests (real workers included) against real PostgreSQL and Redis servers.
test-services: setup
	$(PY) -m pytest tests/webapp tests/e2e/test_job_chain.py tests/e2e/test_rerender_workers.py

# --with-scheduler: retries with backoff wait in RQ's scheduled registry until a scheduler queues them.
worker: migrate
	$(PY) manage.py rqworker gpu default --with-scheduler

serve: migrate
	$(PY) manage.py runserver 127.0.0.1:8000

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf var/ media/ staticfiles/ test-artifacts/ db.sqlite3
