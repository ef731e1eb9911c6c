# facestream: `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
CODE := ingest stream recognizer api notify schemas common cli benchmarks tests scripts

.DEFAULT_GOAL := help
.PHONY: help install up down test lint typecheck unit integration e2e browser faults containers k8s-check demo screenshots bench bench-full bench-matching kafka postgres schemas clean

help: ## show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: ## create .venv with the pinned dependencies (idempotent)
	@bash scripts/install.sh

up: ## install what is missing, start Kafka, PostgreSQL and every service; return once all answer
	@bash scripts/up.sh

down: ## stop every service, Kafka and PostgreSQL
	@bash scripts/down.sh

test: install lint typecheck ## the whole gate: ruff, mypy, then every test (starts its own broker and database)
	@bash scripts/pytest.sh tests/unit tests/deploy tests/integration tests/e2e tests/browser tests/faults
	@bash scripts/pytest.sh tests/containers

unit: install ## unit tests only (no network)
	@bash scripts/pytest.sh tests/unit

integration: install ## integration tests (real broker and database)
	@bash scripts/pytest.sh tests/integration

e2e: install ## end-to-end tests on the lfw-dev photos (runs the whole platform)
	@bash scripts/pytest.sh tests/e2e

lint: install ## ruff lint and format check
	@.venv/bin/ruff check $(CODE)
	@.venv/bin/ruff format --check $(CODE)

typecheck: install ## mypy (strict)
	@.venv/bin/mypy $(CODE)

schemas: install ## regenerate schemas/json from the event models
	@$(PY) -m schemas.generate

k8s-check: install ## validate deploy/ offline: Kubernetes overlays, compose, Prometheus rules, dashboards
	@bash scripts/pytest.sh tests/deploy

browser: install ## real-browser tests: Debian's headless chromium through Playwright, nothing leaves loopback
	@bash scripts/pytest.sh tests/browser

containers: install ## the image and the compose stack under podman, and testcontainers on podman's socket (a session of its own)
	@bash scripts/pytest.sh tests/containers

faults: install ## fault injection: kill, stop and restart the broker, database and services while images flow
	@bash scripts/pytest.sh -s tests/faults

demo: install ## enroll people from a folder and submit images from another (needs `make up`)
	@./facestream demo

screenshots: install ## regenerate the README's screenshots from a running platform (make up)
	@$(PY) scripts/screenshots.py

bench: install ## benchmark suite, quick mode (a few minutes): table, bench-results/results.json and plots
	@$(PY) -m benchmarks

bench-full: install ## benchmark suite, full mode (more images and repeats, the 1M-face gallery)
	@$(PY) -m benchmarks --full

bench-matching: install ## accuracy of the matching rule on lfw-dev, at gallery sizes 20 to 2,800, by enrollment face quality, and with confirmed sightings (docs/MATCHING.md)
	@$(PY) -m benchmarks.matching
	@$(PY) -m benchmarks.matching_scale
	@$(PY) -m benchmarks.enroll_quality
	@$(PY) -m benchmarks.confirmed_sightings

kafka: install ## start only the Kafka broker
	@bash scripts/kafka.sh start

postgres: ## start only PostgreSQL
	@bash scripts/postgres.sh start

clean: down ## stop everything and delete local state (.run, and the database's data directory under /tmp)
	@bash scripts/postgres.sh destroy
	rm -rf .run
