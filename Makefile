# Miras / test-time-regression reproduction. `make` lists the targets.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH ?= torch==2.13.0
SCALE ?= tiny
EXP ?= experiments/miras/table2.py
RUN ?= transformer-340m
PYTEST_ARGS ?=
BENCH_ARGS ?=
LOGDIR ?= runs/gpu_check
CLUSTER ?= local
# a cluster runs the paper's scale unless SCALE=... is given, as `make submit` does
ifeq ($(CLUSTER)$(origin SCALE),slurmfile)
SCALE := paper
endif

.DEFAULT_GOAL := help
.PHONY: help install corpus test test-faults test-gpu test-all lint train dry-run reproduce-table2 reproduce-table3 reproduce-table4 reproduce-iclr-ablation reproduce-fig3 reproduce-fig4 reproduce-mqar reproduce-all eval reproduce-ttr-fig2 reproduce-ttr-fig3 submit test-slurm harvest report tensorboard bench gpu-wheels gpu-check recall clean

help: ## show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-18s %s\n", $$1, $$2}'

$(PY):
	python3 -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(PY)
	$(PIP) install --quiet "$(TORCH)"
	$(PIP) install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed corpus ## venv, torch (TORCH=torch==2.13.0), the package, offline corpus + tokenizer

corpus: | $(VENV)/.installed ## prepare the offline corpus and BPE tokenizer under data/cache/ (idempotent)
	$(PY) -m data.corpus

test: ## fast CPU test suite (no slow, gpu or slurm tests)
	$(PY) -m pytest -q -m "not slow and not gpu and not slurm" $(PYTEST_ARGS)

test-faults: ## the slow fault tests: `miras train` processes killed (-9, SIGTERM), launched twice, short of disk (~3 min)
	$(PY) -m pytest -q -m slow tests/miras/test_faults.py $(PYTEST_ARGS)

test-gpu: ## gpu-marked tests (needs CUDA)
	$(PY) -m pytest -q -m gpu $(PYTEST_ARGS)

test-all: ## every CPU test, slow ones included
	$(PY) -m pytest -q -m "not gpu" $(PYTEST_ARGS)

lint: ## ruff, and a check that re-rendering reports/ from the tracked summaries changes nothing
	$(PY) -m ruff check .
	$(PY) -m reports render >/dev/null
	git diff --exit-code --stat -- 'reports/*.md' 'reports/*.csv'

dry-run: ## parameter counts of every run of EXP (scale paper unless SCALE=... is given)
	$(PY) -m miras dry-run $(EXP) --scale $(if $(filter command line,$(origin SCALE)),$(SCALE),paper)

train: ## train RUN of EXP at SCALE (e.g. make train RUN=transformer-340m SCALE=tiny)
	$(PY) -m miras train $(EXP) --run $(RUN) --scale $(SCALE)

EVAL_DATA ?= auto

# $(call reproduce,EXP,eval): every unfinished run of EXP at SCALE, then (with "eval") lm-eval, harvest and render;
# with CLUSTER=slurm one sbatch job per unfinished run instead, after which the reports wait for the jobs
ifeq ($(CLUSTER),slurm)
define reproduce
$(PY) -m miras submit $(1) --scale $(SCALE)
@echo "submitted $(1) at SCALE=$(SCALE); when the jobs finish, run$(if $(2), make eval EXP=$(1) SCALE=$(SCALE) and) make report"
endef
else ifeq ($(CLUSTER),local)
define reproduce
$(PY) -m miras train $(1) --all --scale $(SCALE) --skip-done
$(if $(2),$(PY) -m miras eval $(1) --scale $(SCALE) --data $(EVAL_DATA) --skip-done)
$(PY) -m reports harvest
$(PY) -m reports render $(1) --scale $(SCALE)
endef
else
$(error CLUSTER=$(CLUSTER) is invalid; allowed values: local, slurm)
endif

reproduce-table2: ## train + lm-eval every row of Miras Table 2 at SCALE (default tiny), harvest, render (EVAL_DATA=auto|fixtures|hub; CLUSTER=slurm submits)
	$(call reproduce,experiments/miras/table2.py,eval)

reproduce-table3: ## S-NIAH (RULER single needle) of Table 2's trained 760M rows at SCALE, harvest, render Table 3
	$(PY) -m miras eval experiments/miras/table3_niah.py --scale $(SCALE) --skip-done
	$(PY) -m reports harvest
	$(PY) -m reports render experiments/miras/table3_niah.py --scale $(SCALE)

reproduce-table4: ## Miras Table 4 (Yaad ablations): train + lm-eval at SCALE, harvest, render (CLUSTER=slurm submits)
	$(call reproduce,experiments/miras/table4_yaad_ablation.py,eval)

reproduce-iclr-ablation: ## the ICLR version's Moneta/Memora ablation: train + lm-eval at SCALE, harvest, render
	$(call reproduce,experiments/miras/iclr_ablation.py,eval)

reproduce-fig3: ## Miras Figure 3 (scaling over size and context 2K-32K) at SCALE: train, harvest, render with plots
	$(call reproduce,experiments/miras/fig3_scaling.py)

reproduce-mqar: ## MQAR with the LM mixers (zoology's setup) at SCALE (tiny: two cells, ~2 h on a CPU core): train, harvest, render
	$(call reproduce,experiments/miras/mqar.py)

reproduce-fig4: ## Miras Figure 4 (p and q of Moneta over context) at SCALE: train, harvest, render with plots
	$(call reproduce,experiments/miras/fig4_pq.py)

# Table 3 evaluates Table 2's models, so under SLURM it waits until Table 2's jobs have finished
REPRODUCE_ALL := reproduce-table2 $(if $(filter slurm,$(CLUSTER)),,reproduce-table3) reproduce-table4 \
	reproduce-iclr-ablation reproduce-fig3 reproduce-fig4 reproduce-mqar reproduce-ttr-fig2 reproduce-ttr-fig3

reproduce-all: ## every table and figure of both papers at SCALE (skips finished runs), then `make report`
	$(MAKE) --no-print-directory $(REPRODUCE_ALL)
ifeq ($(CLUSTER),slurm)
	@echo "when the jobs finish, run make reproduce-table3 SCALE=$(SCALE), then make report"
else
	$(PY) -m reports report
endif

eval: ## lm-eval (and S-NIAH) of the trained runs of EXP at SCALE, merged into their summary.json
	$(PY) -m miras eval $(EXP) --scale $(SCALE) --data $(EVAL_DATA) --skip-done

reproduce-ttr-fig2: ## test-time regression Figure 2 (online regression, no training; CPU, seconds) into reports/ttr/
	$(PY) -m experiments.ttr.fig2_online_regression

reproduce-ttr-fig3: ## test-time regression Figure 3 (MQAR, one layer) at SCALE (tiny: CPU, T=128; paper: the paper's grid, GPUs): train, harvest, render
	$(call reproduce,experiments/ttr/fig3_mqar.py)

submit: ## sbatch one job per run of EXP at SCALE (default paper) from slurm/ (DRY=1 prints the scripts only)
	$(PY) -m miras submit $(EXP) --scale $(if $(filter command line,$(origin SCALE)),$(SCALE),paper) $(if $(DRY),--dry-run)

test-slurm: ## the local-SLURM tests alone (2 emulated nodes on localhost; installs SLURM with apt when missing)
	$(PY) -m pytest -q -m slurm $(PYTEST_ARGS)

harvest: ## copy finished run summaries from runs/ into reports/
	$(PY) -m reports harvest

report: ## harvest finished summaries from runs/ and render every report and reports/README.md
	$(PY) -m reports report

tensorboard: ## serve runs/ on localhost:6006
	$(VENV)/bin/tensorboard --logdir runs --host 127.0.0.1 --port 6006

bench: ## Miras kernel benchmark (python -m benchmarks.speed; on a GPU)
	$(PY) -m benchmarks.speed $(BENCH_ARGS)

gpu-wheels: ## download the pure-Python wheels the GPU check's peers need (fla, titans-pytorch) into .whl/
	bash benchmarks/gpu_check.sh wheels .whl

gpu-check: ## on a GPU without network: gpu tests + benchmark under time limits; logs and record in LOGDIR
	PYTHON=$(if $(wildcard $(PY)),$(PY),python3) bash benchmarks/gpu_check.sh run $(LOGDIR)

recall: ## how well each Miras memory stores associations (CPU, ~3 min) -> reports/miras/recall.{md,json}
	$(PY) -m benchmarks.recall

clean: ## remove caches and lightning_logs (keeps .venv, runs/ and data/cache/)
	rm -rf .pytest_cache .ruff_cache lightning_logs
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +
