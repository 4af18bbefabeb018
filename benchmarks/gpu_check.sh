#!/usr/bin/env bash
# The first thing to run on a lent GPU machine (see benchmarks/gpu_check.py): sets up the environment if
# needed, then measures inference speed and memory per 256^3 volume, the out-of-memory fallback and
# training speed, into benchmarks/results/gpu_check.json. Under 10 minutes on a recent GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ ! -x "$PY" ]; then
  python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements-dev.txt && .venv/bin/pip install --quiet --no-deps -e .
fi
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.cuda.get_device_name(0))"
cd benchmarks && exec "../$PY" gpu_check.py "$@"
