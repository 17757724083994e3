#!/usr/bin/env bash
# make s3prl-check: s3prl as docs/downstream.md says, end to end, in its own environment.
#
#  1. a separate venv (S3PRL_VENV, default .venv-s3prl) with the pins s3prl 0.4.18
#     imports under: torch/torchaudio 2.8 (torchaudio 2.9+ dropped set_audio_backend
#     and sox_effects), huggingface_hub<1.0 (HfFolder), transformers<5; the extra
#     packages its runner needs (tensorboardX, pandas, editdistance, soundfile) and
#     latent-rq's own (speechbrain 1.1.2, ...);
#  2. the s3prl 0.4.18 sdist from PyPI, unpacked in S3PRL_SRC (default .s3prl/) and
#     installed editable (a plain checkout would ignore the edited hub.py), with our
#     upstream linked in as s3prl/upstream/latent_rq and registered in hub.py, and
#     latent-rq itself installed editable (pip install --no-deps -e .);
#  3. tests/test_s3prl.py in that venv (upstream through S3PRLUpstream + Featurizer;
#     S3PRL_REQUIRED=1 turns a skip into a failure);
#  4. run_downstream.py -m train on a small IC task in the Fluent Speech Commands
#     layout built from ../shared/data/fsdd (frozen, then -f), -m evaluate on test.
#
# S3PRL_CKPT: one CKPT+ folder to use (default: a tiny random checkpoint made here).
# Everything it writes goes under S3PRL_OUT (default results/s3prl_check).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${S3PRL_VENV:-$ROOT/.venv-s3prl}
SRC=${S3PRL_SRC:-$ROOT/.s3prl}
DATA=${SHARED_DATA:-$ROOT/../shared/data}
OUT=${S3PRL_OUT:-$ROOT/results/s3prl_check}
PY=${PYTHON:-python3}
S3PRL=$SRC/s3prl-0.4.18
export PYTHONPATH=$ROOT OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# s3prl's own checkpoints (states-*.ckpt, written by run_downstream.py) hold
# pickled objects, which torch >= 2.6 refuses by default: only run_downstream.py
# gets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, nothing else (latent-rq's loaders are
# weights-only whatever the environment says).
s3prl_run() { TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$VENV/bin/python" run_downstream.py "$@"; }

step() { echo; echo "== $*"; }

if [ ! -f "$VENV/.installed" ]; then
    step "1/4 venv $VENV (torch 2.8, huggingface_hub<1.0, transformers<5)"
    $PY -m venv "$VENV"
    "$VENV/bin/pip" install -q "torch==2.8.*" "torchaudio==2.8.*" "huggingface_hub<1.0" \
        "transformers<5" tensorboardX pandas editdistance soundfile speechbrain==1.1.2 \
        ruamel.yaml==0.18.17 pytest
    touch "$VENV/.installed"
fi
if [ ! -f "$S3PRL/.installed" ]; then
    step "2/4 s3prl 0.4.18 sdist -> $S3PRL, editable install, latent_rq upstream registered"
    mkdir -p "$SRC"
    "$VENV/bin/pip" download -q s3prl==0.4.18 --no-deps --no-binary :all: -d "$SRC"
    tar -xzf "$SRC/s3prl-0.4.18.tar.gz" -C "$SRC"
    "$VENV/bin/pip" install -q -e "$S3PRL"
    touch "$S3PRL/.installed"
fi
if [ ! -f "$VENV/.latent_rq_installed" ]; then  # latent_rq_brain importable from s3prl's folder
    "$VENV/bin/pip" install -q --no-deps -e "$ROOT"
    touch "$VENV/.latent_rq_installed"
fi
ln -sfn "$ROOT/latent_rq_brain/sharing/s3prl_upstream" "$S3PRL/s3prl/upstream/latent_rq"
grep -q "upstream.latent_rq.hubconf" "$S3PRL/s3prl/hub.py" ||
    echo "from s3prl.upstream.latent_rq.hubconf import *" >> "$S3PRL/s3prl/hub.py"
"$VENV/bin/python" -c "import torch, torchaudio, s3prl.hub as h; print('torch', torch.__version__, 'torchaudio', torchaudio.__version__, 's3prl', __import__('s3prl').__version__, 'hub entry', h.latent_rq_local.__module__)"

mkdir -p "$OUT"
CKPT=${S3PRL_CKPT:-}
if [ -z "$CKPT" ]; then
    CKPT=$("$VENV/bin/python" - "$OUT/random_run" <<'PY'
import sys
from speechbrain.utils.checkpoints import Checkpointer
from latent_rq_brain.sharing.pretrained import EncoderSpec, PretrainedEncoder, find_checkpoint
run = sys.argv[1]
try:
    print(find_checkpoint(run).path)
except ValueError:
    config = dict(PretrainedEncoder.tiny_config())
    enc = PretrainedEncoder.from_config(config, seed=0)
    Checkpointer(run + "/save", {"encoder": enc.encoder, "encoder_spec": EncoderSpec(config)}).save_checkpoint()
    print(find_checkpoint(run).path)
PY
)
fi
echo "checkpoint: $CKPT"

step "3/4 upstream load + Featurizer through s3prl's interfaces (tests/test_s3prl.py)"
(cd "$ROOT" && S3PRL_REQUIRED=1 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_s3prl.py)

step "4/4 run_downstream.py on a small IC task from $DATA/fsdd"
"$VENV/bin/python" -m recipes.s3prl.prepare_fsc_layout "$DATA/fsdd" "$OUT/task" --per-split 40
cd "$S3PRL/s3prl"
for mode in frozen finetune; do
    flag=""; [ $mode = finetune ] && flag="-f"
    rm -rf "$OUT/ic_$mode"
    s3prl_run -m train $flag -u latent_rq_local -k "$CKPT" \
        -d fluent_commands -c "$ROOT/recipes/s3prl/fluent_commands.yaml" \
        -o "config.downstream_expert.datarc.file_path=$OUT/task" -p "$OUT/ic_$mode" --device cpu
    s3prl_run -m evaluate -t test -e "$OUT/ic_$mode/dev-best.ckpt" --device cpu
    echo "-- $mode: $(grep -h "^dev at" "$OUT/ic_$mode/log.log" | tail -1), $(grep -h "^test at" "$OUT/ic_$mode/log.log" | tail -1)"
done
# -f must have trained the upstream, and the frozen run must not have saved one
"$VENV/bin/python" - "$CKPT" "$OUT" <<'PY'
import sys, torch
from latent_rq_brain.sharing.pretrained import find_checkpoint
start = torch.load(find_checkpoint(sys.argv[1]).paramfiles["encoder"], weights_only=True)
for mode in ("frozen", "finetune"):
    # s3prl's own checkpoint, just written by run_downstream.py above (trusted)
    up = torch.load(f"{sys.argv[2]}/ic_{mode}/states-20.ckpt", weights_only=False).get("Upstream")
    if mode == "frozen":
        assert up is None, "the frozen run saved upstream weights"
        print("-- frozen: upstream not trained (no Upstream state saved)")
        continue
    change = max((up["model.pretrained.encoder." + k] - v).abs().max().item() for k, v in start.items())
    assert change > 0, "-f left the upstream unchanged"
    print(f"-- finetune (-f): upstream weights moved, max |change| {change:.4f}")
PY
echo "s3prl-check passed"
