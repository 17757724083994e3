#!/usr/bin/env bash
# The analysis of results/analysis.md, on the checkpoints of `make demo` (run after it).
set -ex
P=.venv/bin/python
M=demo_data/asterisk/train.csv
for run in best_rq latent_rq; do
  $P -m recipes.analysis.target_quality results/demo/$run --manifest $M --filter spk_id=asterisk-en --labels phone --transcript-column wrd --ignore-labels SIL --sources all --max-utts 200 --out results/analysis/demo_$run/phone
  $P -m recipes.analysis.target_quality results/demo/$run --manifest $M --labels speaker --sources all --max-utts 300 --out results/analysis/demo_$run/speaker
done
# the LID + ASR probes whose layer weights are drawn (make demo runs quick probes instead)
[ -f results/demo/probes/best_rq/ASR/results.json ] || $P -m recipes.probes.run_demo_probes results/demo/best_rq results/demo/probes/best_rq --label BEST-RQ
[ -f results/demo/probes/latent_rq/ASR/results.json ] || $P -m recipes.probes.run_demo_probes results/demo/latent_rq results/demo/probes/latent_rq --label Latent-RQ
[ -f results/demo/probes/random/ASR/results.json ] || $P -m recipes.probes.run_demo_probes random:small results/demo/probes/random --label random-init
$P -m recipes.analysis.layer_weights results/demo/probes --out results/analysis/demo_layer_weights.png
$P -m recipes.analysis.tsne results/demo/best_rq --manifest $M --filter spk_id=asterisk-en --labels phone --transcript-column wrd --ignore-labels SIL --sources all --max-utts 100 --out results/analysis/demo_tsne
$P -m recipes.analysis.tsne results/demo/best_rq --manifest $M --labels speaker --sources all --max-utts 150 --out results/analysis/demo_tsne_speaker
