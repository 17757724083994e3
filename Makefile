# Two commands do everything on a fresh machine:
#   make demo   - venv + install, build the Asterisk demo corpus, pre-train
#                 stage 0 (BEST-RQ), branch a Latent-RQ stage from it, continue
#                 BEST-RQ to the same step; the leading indicator (phone PNMI of
#                 Mel vs layer targets at the branch), quick probes with fold std
#                 of both checkpoints and a random-init encoder; the summary
#                 (recipes/demo/summary.py) -> $(DEMO_OUT)/summary.md
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

# the demo's quick probes: tasks from the Asterisk prompts (no ../shared), torch's
# default thread count (set OMP_NUM_THREADS to fix it)
DEMO_DATA ?= demo_data/asterisk
DEMO_QUICK = $(BIN)/python -m recipes.probes.quick --asterisk $(DEMO_DATA) \
    --cache $(DEMO_OUT)/quick_cache --threads 0
# runs a demo command after appending it to $(DEMO_OUT)/commands.txt (for recipes.demo.summary)
define demo_run
	@echo '$(strip $(1))' >> $(DEMO_OUT)/commands.txt
	$(1)
endef

demo: $(STAMP)
	@mkdir -p $(DEMO_OUT) && echo "# make demo DEMO_OUT=$(DEMO_OUT): $$(date -u +%FT%TZ), commit \
	$$(git rev-parse --short HEAD 2>/dev/null || echo unknown), $$(nproc --all) cores, \
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-unset}" >> $(DEMO_OUT)/commands.txt
	@echo "== 1/6 BEST-RQ (stage 0) to step $(DEMO_BRANCH_STEP)"
	$(call demo_run,$(BIN)/python train.py $(SMALL) --stage_transitions=[] \
	    --optimizer_step_limit=$(DEMO_BRANCH_STEP) --output_folder=$(DEMO_OUT)/best_rq)
	@echo "== 2/6 Latent-RQ stage 1 branched from it, to step $(DEMO_STEPS)"
	$(call demo_run,$(BIN)/python train.py $(SMALL) --stage_transitions=[] --initial_stage=1 \
	    --init_from=$(DEMO_OUT)/best_rq/save --optimizer_step_limit=$(DEMO_STEPS) \
	    --output_folder=$(DEMO_OUT)/latent_rq)
	@echo "== 3/6 BEST-RQ continued to step $(DEMO_STEPS) (the baseline)"
	$(call demo_run,$(BIN)/python train.py $(SMALL) --stage_transitions=[] \
	    --optimizer_step_limit=$(DEMO_STEPS) --output_folder=$(DEMO_OUT)/best_rq)
	@echo "== 4/6 Leading indicator: phone PNMI and code perplexity of the Mel targets and of"
	@echo "   each layer's, stage-0 encoder at the branch step ($(DEMO_OUT)/latent_rq@stage1)"
	$(call demo_run,$(DEMO_QUICK) $(DEMO_OUT)/latent_rq@stage1 --label "BEST-RQ at the branch" \
	    --out $(DEMO_OUT)/quick/branch.json)
	@echo "== 5/6 Quick probes (language ID, English frame phones; fold std) of the frozen encoders"
	$(call demo_run,$(DEMO_QUICK) random:small --label random-init --out $(DEMO_OUT)/quick/random.json)
	$(call demo_run,$(DEMO_QUICK) $(DEMO_OUT)/best_rq --label BEST-RQ --out $(DEMO_OUT)/quick/best_rq.json)
	$(call demo_run,$(DEMO_QUICK) $(DEMO_OUT)/latent_rq --label Latent-RQ --out $(DEMO_OUT)/quick/latent_rq.json)
	@echo "== 6/6 Summary"
	@$(BIN)/python -m tools.report $(DEMO_OUT)/best_rq > /dev/null
	@$(BIN)/python -m tools.report $(DEMO_OUT)/latent_rq > /dev/null
	$(BIN)/python -m recipes.demo.summary $(DEMO_OUT) --out $(DEMO_OUT)/summary.md
	@echo "loss curves: $(DEMO_OUT)/best_rq/loss.png, $(DEMO_OUT)/latent_rq/loss.png"

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
