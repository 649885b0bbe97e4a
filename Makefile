# dropout-lab: `make demo` and `make test` set everything up on first use (idempotent, seconds the second time).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_DATA := /usr/share/datasets/fashion-mnist
DEMO_DIR := results/demo

.PHONY: setup data postgres demo test bench clean

setup: $(STAMP) data

# The venv is rebuilt only when the dependency pins change.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]' --config-settings editable_mode=compat
	touch $(STAMP)

# Fashion-MNIST: Debian's copy when apt is usable as root; otherwise say how to get it.
data:
	@if [ -f $(SYSTEM_DATA)/train-images-idx3-ubyte.gz ]; then \
	  echo "data: Fashion-MNIST found in $(SYSTEM_DATA)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "data: installing Debian's dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "data: $(SYSTEM_DATA) is missing and apt-get is not usable as root. Either run"; \
	  echo "        sudo apt-get install dataset-fashion-mnist"; \
	  echo "      or put the four Fashion-MNIST .gz files in ./data (or set DROPOUT_LAB_DATA),"; \
	  echo "      or let torchvision download them on first run (needs the internet)."; \
	fi

# PostgreSQL server binaries, for the multi-host tests (the tests start a throw-away server on loopback).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "postgres: installing Debian's postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "postgres: not installed; the PostgreSQL test will be skipped (apt-get install postgresql)"; fi

# The main job: scratch vs. concise at the chapter's setting, as a Hydra multirun.
demo: setup
	$(BIN)/dropout-lab train --multirun optuna.study=demo model=scratch,concise threads=1 \
	  hydra/launcher=joblib hydra.launcher.n_jobs=2 hydra.sweep.dir=$(DEMO_DIR)
	@echo; echo "Test accuracy of the chapter's two implementations (run records in $(DEMO_DIR)/*/run.json):"
	@$(BIN)/dropout-lab runs $(DEMO_DIR)

test: setup postgres
	$(BIN)/python -m pytest -q

clean:
	rm -rf results outputs multirun .pytest_cache
