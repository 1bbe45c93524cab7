#!/usr/bin/env bash
# The one-shot GPU check: install the GPU extras, then run `python -m hotspot_jax.gpu_check` (its --help lists
# the stages and options). Everything lands in OUT_DIR; summary.md is the page to read first.
#   scripts/gpu_check.sh OUT_DIR --data PATH/InfraredSolarModules.zip        # a fresh GPU machine
#   scripts/gpu_check.sh --no-install OUT_DIR --data ... [--tiny]            # packages already installed
# Relative paths are read from the folder it is called from.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=${PYTHON:-python3}
install=1
if [ "${1:-}" = "--no-install" ]; then
  install=0
  shift
fi
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: scripts/gpu_check.sh [--no-install] OUT_DIR [--data ZIP] [--tiny] [--budget-s N] [--stages LIST]" >&2
  exit 2
fi
out=$1
shift
if [ "$install" = 1 ]; then
  "$PYTHON" -m pip install -q -e "$root[cuda12,torch,dev]"
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m hotspot_jax.gpu_check --out "$out" "$@"
