#!/usr/bin/env bash
# Every GPU check of the project in one run (<= 8 min on one H100: each check has a time limit), figures in one JSON file.
#
#   benchmarks/gpu_check.sh [--smoke] [OUT_DIR]      (OUT_DIR default: $OUT if set, else out/gpu_check)
#
# Offline GPU machine (DESIGN.md §10): its own torch is used; the pinned wheels mcl needs beyond it
# (transformers, peft, tokenizers, huggingface_hub, ... cp312 builds) are carried in .whl/*.whl and
# installed once with --target into .whl/site, which goes first on PYTHONPATH, then the checkout itself.
# Suite data: a built mcl cache carried as .mcl-cache/ (MCL_CACHE) when present, else ~/.cache/mcl.
# The model is the prepared `smollm2` when the cache holds it, else a SmolLM2-135M-shaped random model.
# --smoke: the same code on CPU with toy shapes and a few steps (< 2 min; a test runs it in `make test`).
set -euo pipefail
cd "$(dirname "$0")/.."
SMOKE=()
DEST="${OUT:-out/gpu_check}"
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=(--smoke) ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) DEST="$arg" ;;
  esac
done
PY="${PYTHON:-python3}"
if compgen -G ".whl/*.whl" > /dev/null && [ ! -f .whl/site/.installed ]; then
  "$PY" -m pip install -q --no-index --no-deps --target .whl/site .whl/*.whl
  touch .whl/site/.installed
fi
if [ -d .whl/site ]; then
  export PYTHONPATH="$PWD/.whl/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -d .mcl-cache ] && [ -z "${MCL_CACHE:-}" ]; then
  export MCL_CACHE="$PWD/.mcl-cache"
fi
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" benchmarks/gpu_check.py --out "$DEST" "${SMOKE[@]}"
