#!/usr/bin/env bash
# Downloads (here, where pip reaches PyPI) the wheels that tools/gpu_bench.sh
# installs on the device machine (Python 3.12, x86-64; it has torch, numpy,
# scipy, tqdm, packaging, sentencepiece, joblib and huggingface-hub already).
# About 3 MiB in all; .whl/ is gitignored and is carried with `carry: [".whl"]`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform any)
# name==version: the pins of requirements.txt, and what they need beyond the image
WHEELS=(speechbrain==1.1.2 hyperpyyaml==1.2.3 ruamel.yaml==0.18.17 ruamel.yaml.clib==0.2.15
        soundfile==0.14.0 cffi==2.1.1 pycparser==3.12)
"$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d .whl "${WHEELS[@]}"
du -sh .whl
