#!/usr/bin/env bash
# GPU benchmark of issue 13 (`make gpu-bench`): about 8 minutes on one H200.
#
# 1. installs the carried wheels (.whl/, gitignored; `tools/fetch_gpu_wheels.sh`
#    downloads them here) if speechbrain is missing: the device machine has
#    torch but no speechbrain, hyperpyyaml, ruamel.yaml, soundfile or cffi;
# 2. tools.bench on the paper model (hparams/best_rq.yaml, bf16, 600 s batch of
#    15 s utterances): every fast path on and off, the target cache, the FLOP
#    floor, torch.compile (static shapes) of encoder and target encoder, MFU,
#    audio s/s, peak memory, the quantizer against SpeechBrain's;
# 3. the same bench with attention_type: RoPEMHA (no compile, no quantizer);
# 4. tools.profile_step: top kernels of a BEST-RQ step, a Latent-RQ online
#    step and the no-grad target forward;
# 5. writes results/performance_gpu.md (and copies everything to $OUT if set).
#
# Every setting can be overridden by the environment; the CPU dry run is
#   DEVICE=cpu CONFIG=hparams/small/latent_rq.yaml BATCH_S=4 UTT_S=2 WARMUP=1 \
#   ITERS=1 QFRAMES=1000 PROFILE_STEPS=1 EXTRA="--d_model=32 --nhead=2 ..." \
#   tools/gpu_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
DEVICE=${DEVICE:-cuda:0}
CONFIG=${CONFIG:-hparams/best_rq.yaml}
BATCH_S=${BATCH_S:-600}
UTT_S=${UTT_S:-15}
WARMUP=${WARMUP:-3}
ITERS=${ITERS:-8}
QFRAMES=${QFRAMES-16000 64000}  # QFRAMES= (empty) skips the quantizer comparison
PROFILE_STEPS=${PROFILE_STEPS:-3}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}  # H100/H200 SXM bf16 dense
EXTRA=${EXTRA:-}
COMPILE=${COMPILE---compile}  # COMPILE= (empty) skips the compiled rows
RESULT=${RESULT:-results/performance_gpu.md}
WORK=${WORK:-$(mktemp -d /tmp/gpu_bench.XXXX)}
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import speechbrain, hyperpyyaml, soundfile" 2>/dev/null; then
    echo "== installing carried wheels from $WHEELS"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import torch, speechbrain; print('torch', torch.__version__, 'speechbrain', \
speechbrain.__version__, 'cuda', torch.cuda.is_available() and torch.cuda.get_device_name())"

save() {  # copies what exists so far to $OUT (the device tool fetches it)
    if [ -n "${OUT:-}" ]; then cp -f "$WORK"/*.md "$WORK"/*.log "$OUT"/ 2>/dev/null || true; fi
}
COMMON=(--device "$DEVICE" --batch-seconds "$BATCH_S" --utt-seconds "$UTT_S")
# shellcheck disable=SC2086  # EXTRA and QFRAMES are word lists
{
    echo "== 1/3 bench: fast paths, cache, floor, compile, quantizer ($(date +%T))"
    "$PY" -m tools.bench --config "$CONFIG" "${COMMON[@]}" --warmup "$WARMUP" \
        --iters "$ITERS" $COMPILE --peak-tflops "$PEAK_TFLOPS" \
        --quantizer-frames $QFRAMES --out "$WORK/bench.md" --data_folder=/tmp/x $EXTRA
} 2>&1 | tee "$WORK/bench.log"
save
{
    echo "== 2/3 bench: attention_type RoPEMHA ($(date +%T))"
    "$PY" -m tools.bench --config "$CONFIG" "${COMMON[@]}" --warmup "$WARMUP" \
        --iters "$ITERS" --peak-tflops "$PEAK_TFLOPS" --quantizer-frames \
        --out "$WORK/bench_rope.md" --data_folder=/tmp/x --attention_type=RoPEMHA $EXTRA
} 2>&1 | tee "$WORK/bench_rope.log"
save
{
    echo "== 3/3 profile ($(date +%T))"
    "$PY" -m tools.profile_step --config "$CONFIG" "${COMMON[@]}" \
        --steps "$PROFILE_STEPS" --out "$WORK/profile.md" --data_folder=/tmp/x $EXTRA
} 2>&1 | tee "$WORK/profile.log"

mkdir -p "$(dirname "$RESULT")"
{
    echo "# Performance on a GPU (issue 13)"
    echo
    echo "Produced by \`make gpu-bench\` (tools/gpu_bench.sh) on $(date -u +%F):"
    echo "config \`$CONFIG\` $EXTRA, device $DEVICE, ${BATCH_S} s batches of ${UTT_S} s utterances."
    echo
    sed '1,/^Produced by/d' "$WORK/bench.md"
    echo
    echo "## attention_type: RoPEMHA (same bench, no compile)"
    echo
    sed '1,/^Produced by/d' "$WORK/bench_rope.md"
    echo
    cat "$WORK/profile.md"
} > "$RESULT"
cp -f "$RESULT" "$WORK/"
save
echo "== wrote $RESULT ($(date +%T))"
