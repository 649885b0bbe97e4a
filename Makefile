# dropout-lab: `make demo` and `make test` set everything up on first use (idempotent, seconds the second time).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_DATA := /usr/share/datasets/fashion-mnist
DEMO_DIR := results/reports

# Study references; a comma separates a study from its field overrides (ex7_tune,technique=gamma is
# `dropout-lab study run ex7_tune technique=gamma`, stored as study ex7_tune_gamma).
EX7_TUNE := ex7_tune,technique=none ex7_tune,technique=dropout ex7_tune,technique=gaussian ex7_tune,technique=additive_gaussian \
  ex7_tune,technique=uniform ex7_tune,technique=gamma ex7_tune,technique=block ex7_tune,technique=dropconnect
STUDIES := baseline baseline_book ex2_epochs ex1_rates ex5_weight_decay ex6_dropconnect ex3_variance \
  ex4_test_time $(EX7_TUNE) ex7_noise

.PHONY: setup data postgres slurm demo lint test test-quick bench studies reports clean

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
	  echo "data: Fashion-MNIST found in $(SYSTEM_DATA) (read in place)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "data: installing Debian's dataset-fashion-mnist"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
	  echo "data: $(SYSTEM_DATA) is missing and apt-get is not usable as root. Either run"; \
	  echo "        sudo apt-get install dataset-fashion-mnist"; \
	  echo "      or put the four Fashion-MNIST .gz files in a folder and set DROPOUT_LAB_DATA (or data.root) to it,"; \
	  echo "      or let torchvision download them on first run into ~/.cache/dropout-lab (needs the internet)."; \
	fi

# PostgreSQL server binaries, for the multi-host tests (the tests start a throw-away server on loopback).
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "postgres: installing Debian's postgresql"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	else echo "postgres: not installed; the PostgreSQL test will be skipped (apt-get install postgresql)"; fi

# SLURM with accounting (slurmdbd on MariaDB), for the cluster test: it starts a throw-away single-node
# cluster as root (tests/slurm_cluster.py), with its own daemons: the packages' services are not used.
SLURM_PACKAGES := slurm-wlm munge slurmdbd mariadb-server-core mariadb-client-core
SLURM_BINS := /usr/sbin/slurmctld /usr/sbin/slurmd /usr/sbin/slurmdbd /usr/sbin/munged /usr/sbin/mariadbd \
  /usr/bin/mariadb-install-db
slurm:
	@if ls $(SLURM_BINS) >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "slurm: installing Debian's $(SLURM_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null; \
	else echo "slurm: not installed; the SLURM test will be skipped (as root: apt-get install $(SLURM_PACKAGES))"; fi

# The main job: the baseline study at a small budget (scratch vs. concise, 3 seeds, 10 epochs) on the
# embedded store, then its report. Resumable and idempotent: a rerun only regenerates the report.
demo: setup
	$(BIN)/dropout-lab study run demo --jobs 2
	$(BIN)/dropout-lab study report demo --reports-dir $(DEMO_DIR)
	@echo; sed -n '/^## Verdicts (declared plan)/,/^## Sensitivity/p' $(DEMO_DIR)/demo/README.md | grep '^- '
	@echo; echo "Report: $(DEMO_DIR)/demo/README.md (tables as CSV, figures as PNG); runs stored in results/studies.db"

# Full-budget studies for reports/: each study adds seeds until its declared plan is decided (or its max), so
# the cost depends on the data: about 7 h on 2 cores (the December 2026 rerun: 7.0 h elapsed, 12.8 CPU-hours in
# the run records; the measured totals are the Compute table of reports/README.md), of which the 8 ex7 tuning
# studies take half. Resumable: rerun to continue; a study already decided costs nothing.
# Long: run it in the background, e.g. `nohup make studies > results/studies.log 2>&1 &`.
# Studies train in fused bf16 populations (equivalent to per-run training within +-0.5 pp:
# benchmarks/README.md), except the two that compare nn.Dropout with dropout_layer (a population
# draws dropout_layer's masks for both); runs that need instruments fall back to per-run by themselves.
ENGINE := --population auto --population-precision bf16
PER_RUN_STUDIES := baseline baseline_book

studies: setup
	@for s in $(STUDIES); do case " $(PER_RUN_STUDIES) " in *" $$s "*) opts="";; *) opts="$(ENGINE)";; esac; \
	  $(BIN)/dropout-lab study run $${s//,/ } --jobs 2 $$opts || exit 1; done

# Regenerate every report from the stored runs.
reports: setup
	@for s in $(STUDIES); do $(BIN)/dropout-lab study report $${s//,/ } || exit 1; done

# Lint (ruff: style, bugs, import order) and types (mypy on src/), then every test.
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# Tests run in parallel, one pytest-xdist worker per core (-n auto).
test: setup postgres slurm lint
	$(BIN)/python -m pytest -q -n auto

# The quick tier: no dropout-lab subprocess, study, sweep, server, benchmark or packaging test (under 2 min).
test-quick: setup
	$(BIN)/python -m pytest -q -n auto -m "not slow"

# Speed at full budget (about 1 h on 2 cores; results in temporary folders): one run vs. a
# hand-written loop, the book's DataLoader and the book's own d2l code (installed here without its
# pinned dependencies), then sweeps, then populations vs. per-run on the ex1 grid (about 40 min), then
# DropConnect's cost per epoch against dropout's (about 10 min).
# Rewrites the tables in benchmarks/README.md.
bench: setup
	@$(BIN)/python -c "import d2l" 2>/dev/null || { $(BIN)/pip install -q --no-deps d2l==1.0.3 && \
	  $(BIN)/pip install -q -c requirements.lock ipython matplotlib-inline requests; }
	$(BIN)/python benchmarks/bench_train.py --readme benchmarks/README.md
	$(BIN)/python benchmarks/bench_overhead.py --readme benchmarks/README.md
	$(BIN)/python benchmarks/bench_sweep.py --readme benchmarks/README.md
	$(BIN)/python benchmarks/bench_startup.py --readme benchmarks/README.md
	$(BIN)/python benchmarks/bench_population.py --readme benchmarks/README.md
	$(BIN)/python benchmarks/bench_dropconnect.py --readme benchmarks/README.md

clean:
	rm -rf results outputs multirun .pytest_cache
