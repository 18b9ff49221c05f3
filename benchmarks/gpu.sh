#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu.py): Glow, BPLF and TarFlow against the nflows Glow on one NVIDIA GPU,
# training and sampling images/s and peak memory, torch.compile on and off; under 8 minutes.
#
#   benchmarks/gpu.sh [--out results.json] [benchmarks/gpu.py options]
#
# Where torch sees no CUDA GPU it prints "no CUDA GPU visible to torch; ..." and exits 0, so
# CI (which never has a GPU) can run it. Python: $PYTHON, else the repository's .venv, else python.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA GPU visible to torch; the GPU benchmark measured nothing"
    exit 0
fi
# 8 minutes in all: gpu.py skips what would start after --budget-s (420 s by default).
exec timeout 480 "$PY" -m benchmarks.gpu "$@"
