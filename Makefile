# Entry points of the Celery production stack bundle. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
WHEELS   := wheelhouse
# The Pythons of the supported hosts besides the controller's: binary wheels for them join the
# wheelhouse (Debian 12 runs 3.11, Debian 13 runs 3.13).
WHEEL_PYTHONS ?= 3.11 3.13
# Your projects (directories with a pyproject.toml or setup.py, space-separated): `make wheels
# PROJECT_WHEELS=../myproj` adds their wheels and dependencies to the wheelhouse. The wheelhouse
# remembers them (wheelhouse/.projects), so later targets (deploy, rehearse) keep them;
# `PROJECT_WHEELS=` drops them.
PROJECT_WHEELS ?= $(shell cat $(WHEELS)/.projects 2>/dev/null)
# The molecule scenario of the Celery roles deploys the example Django project: its wheelhouse
# is the wheelhouse plus the example's wheels.
EXAMPLE_PROJECT := examples/django_project
EXAMPLE_WHEELS  := build/wheelhouse-example
ROLES    := $(sort $(notdir $(wildcard roles/*)))
SCENARIO_ROLES := $(sort $(patsubst roles/%/molecule/default/molecule.yml,%,$(wildcard roles/*/molecule/default/molecule.yml)))
ROLE     ?=
PYTEST   := $(BIN)/pytest
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: help venv lock engine base-image host-images compose wheels lint \
        rules unit integration test-fast molecule molecule-all test chaos chaos-quick upstream upstream-celery upstream-celery-quick bench up down clean ps logs demo dlq alerts images e2e compat clean-wheels \
        deploy check rolling-deploy secrets rehearse rehearse-staging collection

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# --- toolchain --------------------------------------------------------------
venv: $(STAMP) ## Create .venv with the pinned dev tools and worker_app (editable)

$(STAMP): requirements/dev.txt requirements/runtime.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

lock: ## Re-resolve requirements/*.in into the pinned requirements/*.txt
	tools/lock.sh

# --- docker -----------------------------------------------------------------
engine: ## Make sure a Docker engine answers (installs/starts dockerd as root on Debian)
	docker/ensure-engine.sh

base-image: engine ## debian:bookworm-slim and debian:trixie-slim (pulled, or built with debootstrap)
	docker/base-image.sh bookworm trixie

host-images: engine ## celery-stack/host:{bookworm,trixie}: Ansible-manageable Debian hosts
	docker/host-images.sh bookworm trixie

compose: venv ## Print the Docker Compose v2 command in use
	@docker/compose.sh

# --- the artifact ------------------------------------------------------------
wheels: $(WHEELS)/.built ## Build the wheelhouse (worker_app + pinned runtime deps; PROJECT_WHEELS="dir ..." adds your projects)

# The files a project's wheel is built from: an edit rebuilds the wheelhouse.
project_sources = $(if $(strip $(1)),$(shell find $(1) \( -name '.*' -o -name __pycache__ -o -name build \
	-o -name dist -o -name '*.egg-info' -o -name node_modules \) -prune -o -type f ! -name '*.sqlite3' -print 2>/dev/null))

# $(call project_wheels,WHEELHOUSE,DIRS): each project's wheel and its dependencies into
# WHEELHOUSE, resolved with the bundle's pins (requirements/runtime.txt) and the project's own
# (its requirements.txt, when it has one) against the worker_app wheel of WHEELHOUSE; binary
# wheels for the hosts' Pythons too; every resolved version pinned in WHEELHOUSE/projects.txt,
# which the celery_app role installs as constraints.
define project_wheels
for project in $(2); do \
  test -f $$project/pyproject.toml -o -f $$project/setup.py || { \
    echo "PROJECT_WHEELS: $$project is not a Python project directory (no pyproject.toml or setup.py)" >&2; exit 2; }; \
  resolved=$(1)/.resolved && rm -rf $$resolved && mkdir $$resolved; \
  $(BIN)/pip wheel -q --wheel-dir $$resolved --find-links $(1) --constraint requirements/runtime.txt \
    $$(test -f $$project/requirements.txt && echo "--requirement $$project/requirements.txt") \
    $(1)/worker_app-*.whl $$project; \
  binaries=; \
  for wheel in $$resolved/*.whl; do \
    name=$$(basename $$wheel | cut -d- -f1); version=$$(basename $$wheel | cut -d- -f2); \
    grep -qix "$$name==$$version" $(1)/projects.txt 2>/dev/null || echo "$$name==$$version" >>$(1)/projects.txt; \
    case $$wheel in *-none-any.whl) ;; *) binaries="$$binaries $$name==$$version";; esac; \
  done; \
  for python in $(WHEEL_PYTHONS); do \
    test -z "$$binaries" || $(BIN)/pip download -q --only-binary=:all: --no-deps --implementation cp \
      --python-version $$python --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
      -d $(1) $$binaries; \
  done; \
  mv -f $$resolved/*.whl $(1)/ && rm -rf $$resolved; \
done
endef

$(WHEELS)/.built: $(STAMP) requirements/runtime.txt pyproject.toml $(shell find worker_app -name '*.py' -o -name py.typed -o -name '*.yml') \
                  $(call project_sources,$(PROJECT_WHEELS)) $(WHEELS)/.projects
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	printf '%s\n' "$(strip $(PROJECT_WHEELS))" >$(WHEELS)/.projects
	$(BIN)/pip wheel -q --wheel-dir $(WHEELS) -r requirements/runtime.txt
	$(BIN)/pip wheel -q --no-deps --wheel-dir $(WHEELS) .
	for version in $(WHEEL_PYTHONS); do \
	  $(BIN)/pip download -q --only-binary=:all: --no-deps --implementation cp \
	    --python-version $$version --platform manylinux2014_x86_64 \
	    -d $(WHEELS) -r requirements/runtime.txt; \
	done
	cp requirements/runtime.txt $(WHEELS)/requirements.txt
	$(call project_wheels,$(WHEELS),$(PROJECT_WHEELS))
	touch $@

# Rewritten only when PROJECT_WHEELS changed, which then rebuilds the wheelhouse.
$(WHEELS)/.projects: FORCE
	@test -f $@ && test "$$(cat $@)" = "$(strip $(PROJECT_WHEELS))" || { mkdir -p $(WHEELS) && printf '%s\n' "$(strip $(PROJECT_WHEELS))" >$@; }

$(EXAMPLE_WHEELS)/.built: $(WHEELS)/.built $(call project_sources,$(EXAMPLE_PROJECT))
	rm -rf $(EXAMPLE_WHEELS) && mkdir -p $(dir $(EXAMPLE_WHEELS)) && cp -a $(WHEELS) $(EXAMPLE_WHEELS)
	$(call project_wheels,$(EXAMPLE_WHEELS),$(EXAMPLE_PROJECT))
	touch $@

FORCE:

# --- the Ansible collection ----------------------------------------------------------
# celery_bundle.celery_stack: collection/ (galaxy.yml, meta/, playbooks/) staged with roles/,
# the version read from pyproject.toml.
COLLECTION_DIR ?= build/collection
collection: $(STAMP) ## Build the Ansible collection celery_bundle.celery_stack (tarball in build/collection/)
	PYTHON=$(BIN)/python tools/build-collection.sh $(COLLECTION_DIR)

# --- checks --------------------------------------------------------------------
lint: $(STAMP) ## ansible-lint (production), yamllint, ruff, mypy --strict
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint --profile production
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	tools/check-no-mirror-hosts.sh

unit: $(STAMP) ## Unit tests (pure logic)
	$(PYTEST) tests/unit

# Modules run INTEGRATION_JOBS at a time (each keeps its own redis-server and workers): most
# of the suite's time is spent waiting on workers, heartbeats and alert timers, not on the CPU.
INTEGRATION_JOBS ?= 4
integration: $(STAMP) ## Integration tests: real redis-server, real Celery workers (not the long forms: make chaos); INTEGRATION_JOBS=1 for one at a time
	$(PYTEST) -m "not long" $(if $(filter-out 1,$(INTEGRATION_JOBS)),-n $(INTEGRATION_JOBS) --dist loadfile) --durations=15 tests/integration tests/roles

# Holds rules/ and tests/ (the bad-input suite points it at a broken copy).
PROMETHEUS_DIR ?= prometheus
rules: ## promtool: check the rules and run their unit tests
	@command -v promtool >/dev/null || { echo "promtool missing: apt-get install prometheus" >&2; exit 1; }
	promtool check rules $(PROMETHEUS_DIR)/rules/*.yml
	promtool test rules $(PROMETHEUS_DIR)/tests/*.test.yml

test-fast: lint rules unit integration ## lint + rules + unit + integration

molecule: $(STAMP) host-images wheels $(if $(filter celery_app,$(ROLE)),$(EXAMPLE_WHEELS)/.built) ## One role's molecule scenario: make molecule ROLE=supervisor
	@test -n "$(ROLE)" || { echo "usage: make molecule ROLE=<$(ROLES)>" >&2; exit 2; }
	@test -d roles/$(ROLE)/molecule || { host="$$(ls roles/*/molecule/default/tests/test_$(ROLE).py 2>/dev/null | head -n 1 | cut -d/ -f2)"; \
	  echo "roles/$(ROLE) has no scenario of its own$${host:+: its verifiers run in the $$host scenario, make molecule ROLE=$$host}" >&2; exit 2; }
	cd roles/$(ROLE) && MOLECULE_ROLE=$(subst _,-,$(ROLE)) NO_COLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0 $(CURDIR)/$(BIN)/molecule test

molecule-all: $(STAMP) host-images wheels $(EXAMPLE_WHEELS)/.built ## Every molecule scenario (MOLECULE_JOBS=2 for two at a time on a bigger machine); logs in .molecule-logs/
	tools/molecule-all.sh $(SCENARIO_ROLES)

e2e: $(STAMP) ## End-to-end: make up in its own project, demo load, checks, clean
	$(PYTEST) tests/e2e

# The README's pictures of the console are the ones its browser tests take (headless Chromium:
# Debian's chromium and chromium-driver).
.PHONY: screenshots
screenshots: $(STAMP) ## The console's screenshots in docs/img (the README's), taken by its browser tests
	CONSOLE_SCREENSHOTS=docs/img $(PYTEST) tests/integration/test_console_browser.py

upstream: $(STAMP) ## kombu's own Redis integration tests, stock and with worker_app's transport, side by side
	$(BIN)/python -m tests.upstream.run kombu

# Celery's t/integration needs a few test-only packages: the runner installs them, pinned
# (tests/upstream/celery-requirements.txt), into build/upstream/venv-celery, not into .venv.
upstream-celery: $(STAMP) ## Celery's own integration suite (Redis broker + backend, its in-process worker), stock vs worker_app's transport (~25 min)
	$(BIN)/python -m tests.upstream.run celery

upstream-celery-quick: $(STAMP) ## The CI subset of upstream-celery: tasks, canvas basics, inspect (a few minutes)
	$(BIN)/python -m tests.upstream.run celery --subset

compat: $(STAMP) ## celery-exporter's mixin dashboards and alerts on the e2e stack (a kept one, else its own): make compat MIXIN_DIR=dir
	@test -n "$(MIXIN_DIR)" || { echo "usage: make compat MIXIN_DIR=<celery-mixin's rendered dashboards and alerts>" >&2; exit 2; }
	MIXIN_DIR="$(abspath $(MIXIN_DIR))" $(PYTEST) -rP tests/compat

# The end-to-end stack last: E2E_KEEP_STACK=1 leaves it up for `make compat` to reuse (.ci/run).
test: test-fast chaos-quick molecule-all rehearse-staging e2e ## Everything CI proves

chaos: $(STAMP) ## Full chaos run (10,000 tasks, SIGKILLs, Redis restart) + 30 s Redis outage + Sentinel failovers (kill, host) + Beat failover, then the long forms of the integration tests; JSON in chaos-results/ (CHAOS_ARGS=--tls: Redis on TLS only)
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)
	$(PYTEST) -rP -m long tests/integration

chaos-quick: $(STAMP) ## The short chaos run and the outage, as pytest (part of make test)
	$(PYTEST) tests/chaos

bench: $(STAMP) ## Benchmarks (not part of make test): table on stdout, JSON in bench-results/
	$(BIN)/python -m tests.bench.run $(BENCH_ARGS)

# --- environments (inventories/$(ENV)) -------------------------------------------
ENV ?= staging
VAULT_PASSWORD_FILE ?=
# The password of the repository's example vaults: published, for rehearsals only.
REHEARSAL_VAULT_PASSWORD ?= rehearsal-only-not-a-secret
PLAYBOOK = ANSIBLE_CONFIG=ansible/ansible.cfg $(BIN)/ansible-playbook -i inventories/$(ENV) \
	$(if $(VAULT_PASSWORD_FILE),--vault-password-file $(VAULT_PASSWORD_FILE),--ask-vault-pass)

deploy: $(STAMP) wheels ## Converge an environment: make deploy ENV=staging VAULT_PASSWORD_FILE=~/.vault-staging
	$(PLAYBOOK) ansible/site.yml $(ARGS)

check: $(STAMP) wheels ## Dry run with diffs: make check ENV=production VAULT_PASSWORD_FILE=...
	$(PLAYBOOK) ansible/site.yml --check --diff $(ARGS)

rolling-deploy: $(STAMP) wheels ## Drain, upgrade and restart worker hosts one by one (ARGS="-e rolling_batch=2")
	$(PLAYBOOK) ansible/deploy_workers.yml $(ARGS)

secrets: $(STAMP) ## New random secrets in inventories/$(ENV)/group_vars/all/vault.yml (VAULT_PASSWORD_FILE=; MISSING=1 adds only those it lacks; TLS=1 new host certificates)
	@test -n "$(VAULT_PASSWORD_FILE)" || { echo "usage: make secrets ENV=<env> VAULT_PASSWORD_FILE=<file>" >&2; exit 2; }
	tools/secrets.sh $(if $(MISSING),--missing) $(if $(TLS),--tls) $(ENV) $(VAULT_PASSWORD_FILE)

rehearse: $(STAMP) host-images wheels ## Rehearse ENV on containers: converge, idempotence, check mode, e2e, rolling deploy
	STACK_VAULT_PASSWORD='$(REHEARSAL_VAULT_PASSWORD)' tools/rehearse.sh $(ENV) $(or $(STEP),all)

rehearse-staging: ## The staging rehearsal (part of make test)
	$(MAKE) --no-print-directory rehearse ENV=staging

# --- the local stack (docker compose) -----------------------------------------
up: venv engine base-image wheels ## The whole stack in local docker (secrets in .env, ports on 127.0.0.1)
	docker/stack.sh up

down: ## Stop the stack (keeps its data)
	docker/stack.sh down

clean: ## Stop the stack and remove its volumes
	docker/stack.sh clean

ps: ## The stack's containers and their health
	docker/stack.sh ps

logs: ## Recent logs (SERVICE=worker-default for one)
	docker/stack.sh logs $(SERVICE)

demo: ## Publish a realistic mix of tasks to all four queues (some retry, some die)
	docker/stack.sh demo $(ARGS)

dlq: ## The DLQ CLI inside the stack: make dlq ARGS="list"
	docker/stack.sh dlq $(ARGS)

alerts: ## What fired in the stack: alerts in Alertmanager, and what reached the webhook receiver (ARGS=--json)
	docker/stack.sh alerts $(ARGS)

images: wheels base-image ## Build the stack's images (worker, redis, prometheus)
	docker/build-images.sh

clean-wheels: ## Remove the wheelhouse (and the example's, for molecule)
	rm -rf $(WHEELS) $(EXAMPLE_WHEELS)
