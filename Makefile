# Two commands do everything on a fresh machine:
#   make demo   - venv + install, build the Asterisk demo corpus, pre-train
#                 stage 0 (BEST-RQ), transition to Latent-RQ, print a summary
#   make test   - venv + install (if needed), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_OUT ?= results/demo

.PHONY: demo test install clean-demo

install: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python train.py hparams/small/latent_rq.yaml --output_folder=$(DEMO_OUT)
	$(BIN)/python -m latent_rq_brain.report $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_OUT)
