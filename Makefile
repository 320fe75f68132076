# Badcase Studio — the README's commands.
#   make demo   create .venv, install, migrate, build the demo model, seed demo data, start web + worker
#   make test   install what the tests need and run them
#   make bench  run the benchmarks and print their figures

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 8000
HOST   ?= 127.0.0.1
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo demo-loop serve tour test test-fast browser-deps bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, from the CPU wheel on disk; GPU hosts install their own build before this
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The demo model's build (minutes on one core, cached under var/models) runs beside the migrations. The seed
# registers demo-base, imports its answers, adds three weeks of scripted history and queues the lineage
# (SFT -> DPO, evaluated) that the worker started by serve.sh trains in the background.
demo: install
	DEBUG=1 $(BIN)/python manage.py build_demo_model & build=$$!; \
	  DEBUG=1 $(BIN)/python manage.py migrate --noinput || { kill $$build; exit 1; }; \
	  wait $$build
	DEBUG=1 $(BIN)/python manage.py seed_demo
	DEBUG=1 PORT=$(PORT) HOST=$(HOST) BIN=$(BIN) ./scripts/serve.sh

serve: install
	DEBUG=1 PORT=$(PORT) HOST=$(HOST) BIN=$(BIN) ./scripts/serve.sh

# A newcomer's first hour against the running demo (another terminal, after make demo): each role's first
# job in Chromium with the defaults, every page type shot at 1400x900 and 1024x768 under var/screenshots/tour.
tour: install browser-deps
	$(BIN)/python scripts/newcomer_tour.py --url http://$(HOST):$(PORT)

# Debian's Chromium for the Playwright browser tests (never a downloaded browser).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "browser tests need Debian's chromium: sudo apt-get install -y chromium"; exit 1; fi; }

# two pytest-xdist workers (the machine has two cores), each with its own test database; work stealing
# keeps the slow tests near the end from running on one worker while the other idles
test: install browser-deps
	$(BIN)/python -m pytest -p no:cacheprovider -n 2 --dist worksteal --durations=15

test-fast: install
	$(BIN)/python -m pytest -p no:cacheprovider -m "not integration and not browser"

# Figures, not pass/fail: each prints one JSON line and keeps it in benchmarks/results/.
# The PostgreSQL ones use dedicated databases next to BENCH_DATABASE_URL (default badcase_bench
# on 127.0.0.1). Sizes here are the ones the issues ask for; pass ARGS to a script to change them.
bench: install
	$(BIN)/python benchmarks/eval_bench.py
	$(BIN)/python benchmarks/handcheck_agreement.py
	$(BIN)/python benchmarks/import_bench.py --lines 100000
	$(BIN)/python benchmarks/training_overhead.py
	$(BIN)/python benchmarks/export_bench.py
	$(BIN)/python benchmarks/queue_bench.py --items 10000 --seconds 30
	$(BIN)/python benchmarks/dashboard_bench.py --runs 10
	$(BIN)/python benchmarks/seed_scale.py --reuse
	$(BIN)/python benchmarks/load_run.py --conversations 1000000 --seconds 60
	$(BIN)/python benchmarks/page_load.py --conversations 1000000 --runs 60
	$(BIN)/python benchmarks/annotate_keys.py
	$(BIN)/python benchmarks/faults.py

# The whole loop on the demo model: label -> SFT -> DPO -> evaluate (several minutes on a CPU).
demo-loop: install
	DEBUG=1 $(BIN)/python manage.py migrate --noinput
	DEBUG=1 $(BIN)/python manage.py demo_loop

# ruff (lint + the formatter's check, line length included) and the layer contracts (pyproject.toml)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var
