#!/usr/bin/env bash
# The first thing to run on a lent GPU machine (see benchmarks/gpu_check.py): measures inference speed
# and memory per 256^3 volume, the out-of-memory fallback and training speed into
# benchmarks/results/gpu_check.json. Under 10 minutes on a recent GPU.
#
# PY names a Python that already has the package's requirements (a machine with no network: unpack
# them beside it and set PYTHONPATH); without PY the repo's .venv is used, made first if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv && .venv/bin/pip install --quiet -r requirements-dev.txt
  fi
  PY=.venv/bin/python
fi
case "$PY" in
  */*) PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")" ;;  # absolute, venv links kept
  *) PY=$(command -v "$PY") ;;
esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)"
cd benchmarks && exec "$PY" gpu_check.py "$@"
