# nas-kd: every target depends on one idempotent set-up step (.venv + pinned torch + the package).
# A second `make ...` reinstalls nothing: the stamp file is newer than pyproject.toml.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
EXTRAS ?= dev,export,dashboard,postgres
BIN := $(VENV)/bin
STAMP := $(VENV)/.nas-kd-installed

# Knobs passed through to the commands (empty = the command's own default).
DATASET ?= fashion-mnist
ARCH ?= resnet20
PRESET ?=
BUDGET ?= 2M
PRECISION ?=
SPACE ?= search_spaces/mbv2.yaml
TRIALS ?=
STUDY ?=
STORAGE ?=
JOBS ?=
PORT ?= 8080
# bench-gpu runs where no set-up can (the offline GPU machine: python3 + wheels on PYTHONPATH).
BENCH_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
SMOKE ?=
FORCE ?=
SECTION ?=
DATA_DIR ?=
PACK ?=
WORK ?=
opt = $(if $(2),$(1) $(2),)

.PHONY: setup test teacher search export dashboard worker finalize bench bench-latency bench-gpu gpu-prep gpu-env-check lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# torch first and pinned: a loose requirement would pull several GB of CUDA wheels.
	@$(BIN)/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH)'.split('==')[-1])" 2>/dev/null \
	  || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@bash scripts/install_datasets.sh || true
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

teacher: setup
	$(BIN)/nas-kd teacher --dataset $(DATASET) --arch $(ARCH) $(call opt,--preset,$(PRESET))

search: setup
	$(BIN)/nas-kd search --budget $(BUDGET) $(call opt,--precision,$(PRECISION)) --space $(SPACE) --dataset $(DATASET) $(call opt,--preset,$(PRESET)) \
	  $(call opt,--trials,$(TRIALS)) $(call opt,--study,$(STUDY)) $(call opt,--storage,$(STORAGE)) $(call opt,--jobs,$(JOBS)) \
	  $(call opt,--brief,$(BRIEF)) $(call opt,--full,$(FULL))

# One worker of a shared study: the same command on every machine/GPU (docs/DISTRIBUTED.md).
worker: setup
	@test -n "$(STORAGE)" || { echo "make worker needs STORAGE=postgresql://user@host:port/db (see docs/DISTRIBUTED.md)" >&2; exit 2; }
	@test -n "$(STUDY)" || { echo "make worker needs STUDY=NAME, the same on every worker" >&2; exit 2; }
	$(BIN)/nas-kd search --budget $(BUDGET) --space $(SPACE) --dataset $(DATASET) $(call opt,--preset,$(PRESET)) \
	  $(call opt,--trials,$(TRIALS)) --study $(STUDY) --storage $(STORAGE) $(call opt,--jobs,$(JOBS)) \
	  $(call opt,--brief,$(BRIEF)) $(call opt,--full,$(FULL))

finalize: setup
	@test -n "$(STUDY)" || { echo "make finalize needs STUDY=NAME (see runs/)" >&2; exit 2; }
	$(BIN)/nas-kd finalize --study $(STUDY) $(call opt,--storage,$(STORAGE))

export: setup
	@test -n "$(STUDY)" || { echo "make export needs STUDY=NAME (see runs/)" >&2; exit 2; }
	$(BIN)/nas-kd export --study $(STUDY) $(call opt,--storage,$(STORAGE))

dashboard: setup
	@test -n "$(STUDY)" || { echo "make dashboard needs STUDY=NAME (see runs/)" >&2; exit 2; }
	$(BIN)/nas-kd dashboard --study $(STUDY) $(call opt,--storage,$(STORAGE)) --port $(PORT)

bench: setup
	$(BIN)/python -m bench.cost_speed
	$(BIN)/python -m bench.loader_speed

# Latency predictor error and measurement jitter on this machine (docs/COST.md); run it on an idle CPU.
bench-latency: setup
	$(BIN)/python -m bench.latency --space $(SPACE)

# Every GPU figure of docs/BENCHMARKS.md, resumable, in calls of at most 10 minutes (docs/BENCHMARKS.md,
# "GPU runs"). SMOKE=1: the same code paths in miniature on a CPU (into .bench-gpu-smoke/), FORCE=1:
# redo finished sections, SECTION=name[,name]: only those. No set-up step: the GPU machine is offline.
bench-gpu:
	$(BENCH_PYTHON) -m bench.gpu $(if $(SMOKE),--smoke) $(if $(FORCE),--force) $(call opt,--section,$(SECTION)) \
	  $(call opt,--data-dir,$(DATA_DIR)) $(call opt,--pack,$(PACK)) $(call opt,--work,$(WORK))

# What the offline GPU machine lacks (wheels, Fashion-MNIST), and the device calls that run bench-gpu.
gpu-prep:
	bash ../shared/device/wheels.sh
	@$(BENCH_PYTHON) -m bench.gpu --calls

# The smoke bench in a venv holding only the GPU machine's packages: a missing dependency fails here,
# not in a GPU session's one call.
gpu-env-check:
	bash scripts/gpu_env_check.sh

lint: setup
	$(BIN)/ruff check nas_kd tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
