#!/usr/bin/env bash
# GPU acceptance run of sharded training and prediction (see benchmarks/gpu_check.py):
#   bash benchmarks/gpu_check.sh [--output gpu_check.json] [--official-src DIR --official-python PY]
#   bash benchmarks/gpu_check.sh --dry-run     # CPU, tiny configuration, seconds
# Writes the JSON (default gpu_check.json) and prints a Markdown row. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" \
    "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
