#!/usr/bin/env bash
# The analysis of results/analysis.md, on the checkpoints of `make demo` (run after it).
set -ex
P=.venv/bin/python
M=demo_data/asterisk/train.csv
for run in best_rq latent_rq; do
  $P -m recipes.analysis.target_quality results/demo/$run --manifest $M --filter spk_id=asterisk-en --labels phone --transcript-column wrd --ignore-labels SIL --sources all --max-utts 200 --out results/analysis/demo_$run/phone
  $P -m recipes.analysis.target_quality results/demo/$run --manifest $M --labels speaker --sources all --max-utts 300 --out results/analysis/demo_$run/speaker
done
$P -m recipes.analysis.layer_weights results/demo/probes --out results/analysis/demo_layer_weights.png
$P -m recipes.analysis.tsne results/demo/best_rq --manifest $M --filter spk_id=asterisk-en --labels phone --transcript-column wrd --ignore-labels SIL --sources all --max-utts 100 --out results/analysis/demo_tsne
$P -m recipes.analysis.tsne results/demo/best_rq --manifest $M --labels speaker --sources all --max-utts 150 --out results/analysis/demo_tsne_speaker
