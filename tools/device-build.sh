#!/usr/bin/env bash
# Builds the CUDA engine here (no GPU or CUDA toolkit needed: cudarc loads the CUDA libraries at
# run time) and stages stripped binaries in .devbin/, which the device tool's `run` carries to the
# GPU machine (carry [".devbin"]; a call carries at most 64 MiB with the work tree).
#
# Usage: tools/device-build.sh [cargo args]     e.g. --bin nanovllm --example golden_check
#        XZ=1 tools/device-build.sh ...         also xz-compress each binary (tools/gpu_session.sh unpacks *.xz)
#        KEEP=1 tools/device-build.sh ...       keep what .devbin/ already holds (e.g. a nanovllm-base for an A/B)
# Then on the GPU machine: bash tools/gpu_session.sh (see docs/gpu.md).
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
# .devbin/ is build output: keep it out of git without touching .gitignore.
mkdir -p .git/info; grep -qx '/.devbin/' .git/info/exclude 2>/dev/null || echo '/.devbin/' >> .git/info/exclude
# The GPU machine's driver is CUDA 13.0: bind to that API rather than cudarc's newest fallback.
CUDARC_CUDA_VERSION=13000 cargo build --release --features cuda "$@"
[ "${KEEP:-0}" = 1 ] || rm -rf .devbin
mkdir -p .devbin
dir=${CARGO_TARGET_DIR:-target}/release
for f in "$dir"/* "$dir"/examples/*; do
  [ -f "$f" ] && [ -x "$f" ] || continue
  # Skip libraries, dep-info and cargo's hashed copies (name-0123abcd...): only the named binaries travel.
  case "$(basename "$f")" in *.so|*.d|*-[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) continue;; esac
  cp "$f" .devbin/ && { strip ".devbin/$(basename "$f")" 2>/dev/null || true; }
  if [ "${XZ:-0}" = 1 ]; then xz -f -T0 ".devbin/$(basename "$f")"; fi
done
ls -la .devbin
echo "carry: .devbin ($(du -sh .devbin | cut -f1); a call carries at most 64 MiB with the work tree)"
