# Two commands do everything on a fresh machine:
#   make demo   - venv + install, build the Asterisk demo corpus, pre-train
#                 stage 0 (BEST-RQ), branch a Latent-RQ stage from it, continue
#                 BEST-RQ to the same step, probe both checkpoints (language ID,
#                 English ASR) and print a side-by-side table
#   make test   - venv + install (if needed), run the whole test suite
#   make reliability - the slow reliability cases as real processes (kills,
#                 a planted pickle, a lock race, a stopped DDP rank...):
#                 tools/reliability.py, one OK/SILENT/CRASH/HANG line each
#   make gpu-bench - on a GPU machine (wheels in .whl/: tools/fetch_gpu_wheels.sh):
#                 the paper model's speed, fast paths, compile, RoPE, profile
#                 -> results/performance_gpu.md (about 8 minutes on one H200)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= results/demo
DEMO_BRANCH_STEP ?= 300
DEMO_STEPS ?= 550
SMALL := hparams/small/latent_rq.yaml
REPRO_OUT ?= results/reproduce
REPRO_SCALE ?= cpu
SEEDS ?= 1 2 3
SHARED ?= ../shared/data

.PHONY: demo test install clean-demo reproduce s3prl-check gpu-bench reliability

install: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	@echo "== 1/5 BEST-RQ (stage 0) to step $(DEMO_BRANCH_STEP)"
	$(BIN)/python train.py $(SMALL) --stage_transitions=[] \
	    --optimizer_step_limit=$(DEMO_BRANCH_STEP) --output_folder=$(DEMO_OUT)/best_rq
	@echo "== 2/5 Latent-RQ stage 1 branched from it, to step $(DEMO_STEPS)"
	$(BIN)/python train.py $(SMALL) --stage_transitions=[] --initial_stage=1 \
	    --init_from=$(DEMO_OUT)/best_rq/save --optimizer_step_limit=$(DEMO_STEPS) \
	    --output_folder=$(DEMO_OUT)/latent_rq
	@echo "== 3/5 BEST-RQ continued to step $(DEMO_STEPS) (the baseline)"
	$(BIN)/python train.py $(SMALL) --stage_transitions=[] \
	    --optimizer_step_limit=$(DEMO_STEPS) --output_folder=$(DEMO_OUT)/best_rq
	@echo "== 4/5 Probes: language ID and English ASR on frozen encoders"
	$(BIN)/python -m recipes.probes.run_demo_probes $(DEMO_OUT)/best_rq $(DEMO_OUT)/probes/best_rq --label BEST-RQ
	$(BIN)/python -m recipes.probes.run_demo_probes $(DEMO_OUT)/latent_rq $(DEMO_OUT)/probes/latent_rq --label Latent-RQ
	$(BIN)/python -m recipes.probes.run_demo_probes random:small $(DEMO_OUT)/probes/random --label random-init
	@echo "== Quick probes (recipes/probes/quick.py: keywords, digits, intents, speaker ID, phones)"
	@if [ -d $(SHARED) ]; then \
	  $(BIN)/python -m recipes.probes.quick $(DEMO_OUT)/best_rq --label BEST-RQ --corpus none --shared $(SHARED) --cache $(DEMO_OUT)/quick_cache --out $(DEMO_OUT)/quick/best_rq.json && \
	  $(BIN)/python -m recipes.probes.quick $(DEMO_OUT)/latent_rq --label Latent-RQ --corpus none --shared $(SHARED) --cache $(DEMO_OUT)/quick_cache --out $(DEMO_OUT)/quick/latent_rq.json && \
	  $(BIN)/python -m recipes.probes.quick random:small --label random-init --corpus none --shared $(SHARED) --cache $(DEMO_OUT)/quick_cache --out $(DEMO_OUT)/quick/random.json; \
	else echo "skipped: no $(SHARED) (the real-speech packs)"; fi
	@echo "== 5/5 Summary"
	@echo "-- BEST-RQ run"; $(BIN)/python -m tools.report $(DEMO_OUT)/best_rq
	@echo "-- Latent-RQ run (branched at step $(DEMO_BRANCH_STEP))"; $(BIN)/python -m tools.report $(DEMO_OUT)/latent_rq
	@echo "-- Probes (frozen encoders, same step count)"
	$(BIN)/python -m recipes.probes.table BEST-RQ=$(DEMO_OUT)/probes/best_rq \
	    Latent-RQ=$(DEMO_OUT)/probes/latent_rq random-init=$(DEMO_OUT)/probes/random

# s3prl 0.4.18 in its own venv (.venv-s3prl, torch 2.8; a large download), our
# upstream registered, upstream + Featurizer test, run_downstream.py train/evaluate
# on a small task from ../shared/data. Not part of make test.
s3prl-check:
	bash recipes/s3prl/s3prl_check.sh

test: $(STAMP)
	$(BIN)/python -m pytest -q

gpu-bench:
	tools/gpu_bench.sh

clean-demo:
	rm -rf $(DEMO_OUT)

# Mini-scale reproduction of Table 1 / Fig. 3 (hours on 2 CPU cores; rerun to resume):
# corpus (~7.5 h of real speech), then for each seed BEST-RQ, the scaled schedule and a
# branch, each checkpoint probed; then results/reproduction.md and its figures.
reproduce: $(STAMP)
	$(BIN)/python -m recipes.reproduce.prepare_corpus data/pretrain --shared $(SHARED)
	$(BIN)/python -m recipes.reproduce.reproduce --out $(REPRO_OUT) --scale $(REPRO_SCALE) \
	    --corpus data/pretrain --shared $(SHARED) --seeds $(SEEDS)
	$(BIN)/python -m recipes.reproduce.reproduce --out $(REPRO_OUT) --scale $(REPRO_SCALE) \
	    --report results/reproduction.md

# The slow reliability cases (tools/reliability.py); the fast ones are in make test.
reliability: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m tools.reliability --out results/reliability
