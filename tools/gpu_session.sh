#!/usr/bin/env bash
# One batched run on the GPU machine (see README "GPU machine"). Build here first:
#   ../shared/tools/device-build.sh --bin nanovllm --example golden_check
# then run this script there with .devbin carried. Logs and results go under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=./.devbin
log() { echo "=== $*" | tee -a "$OUT/session.log"; }
run() { log "$*"; "$@" 2>&1 | tee -a "$OUT/session.log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/session.log"
run $B/nanovllm info --backend cuda
run $B/golden_check --backend cuda
run $B/nanovllm perplexity --backend cuda --model models/tiny-qwen3-pystdlib
# Batch-1 decode latency: one 100-token prompt, 256 output tokens.
run $B/nanovllm generate --backend cuda --model qwen3-0.6b --weights random --random-prompt-len 100 --max-tokens 256 --ignore-eos
for exp in ${EXPERIMENTS:-bench chunk512}; do
  run timeout ${EXP_TIMEOUT:-240} $B/nanovllm experiments/$exp.toml --results-dir "$OUT/results"
done
# The device tool returns at most 8 files, 2 folders deep: pack the results folder.
tar czf "$OUT/results.tgz" -C "$OUT" results 2>/dev/null && rm -rf "$OUT/results"
