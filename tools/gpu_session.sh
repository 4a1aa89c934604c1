#!/usr/bin/env bash
# One batched run on the GPU machine (see docs/gpu.md). Build here first:
#   tools/device-build.sh --bin nanovllm --example golden_check
# then run this script there with .devbin carried (xz-compressed binaries are unpacked).
# STEPS picks what runs (info host_cost decode_cublas gemv_ab bin_ab async_ab kernels_ab ncu_prefill ncu_decode kernels_check golden golden_cuda perplexity kernels_bench prefill_ab matmul profile
# decode_latency bench trace bench_part bench_fusion hf_peer chunk512 chunk_sweep chunk_gpu chunk_gpu_sweep
# step_bench profile_mixed unroll_sweep bench_unroll perplexity_moe moe_bench decode_latency_moe bench_moe bench_qwen3_moe
# moe_check sanitize attention_check cascade_bench cascade_tune cascade cascade_llama chat_golden offload
# offload_check info_unfused tp_check nccl_duplicate); logs and a results tarball go under $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=${B:-./.devbin}
# The binaries the checks (info, kernels_check, golden, perplexity) run: another build's with
# NV=nanovllm-base GC=golden_check-base.
NV=${NV:-nanovllm}; GC=${GC:-golden_check}
# libnccl for tensor parallelism: PyTorch's wheel holds it where the loader does not look.
for d in $(python3 -c "import site; print(' '.join(site.getsitepackages()))" 2>/dev/null); do
  [ -d "$d/nvidia/nccl/lib" ] && export LD_LIBRARY_PATH="$d/nvidia/nccl/lib:${LD_LIBRARY_PATH:-}"
done
export NCCL_NVLS_ENABLE=0
(cd $B && for f in *.xz; do [ -e "$f" ] && xz -d -T4 "$f"; done; chmod +x ./*)
log() { echo "=== $(date +%T) $*" | tee -a "$OUT/session.log"; }
run() { log "$*"; "$@" 2>&1 | grep -v "^ *[0-9]*: <unknown>$\|^ *[0-9]*: __libc\|^stack backtrace\|^note: Some\|^No backtrace" | tee -a "$OUT/session.log"; }
# An experiment, stopped after $2 s; FIRST_VARIANT_ONLY=1 runs its first variant alone.
exp() {
  f=experiments/$1.toml
  if [ "${FIRST_VARIANT_ONLY:-0}" = 1 ]; then
    python3 -c "import sys; s = open(sys.argv[1]).read(); i = s.index('[[variants]]'); \
      j = s.find('[[variants]]', i + 1); open(sys.argv[2], 'w').write(s if j < 0 else s[:j])" "$f" "/tmp/$1.toml"
    f=/tmp/$1.toml
  fi
  # ONLY_VARIANTS="a b": those variants alone (a long experiment over several device calls).
  if [ -n "${ONLY_VARIANTS:-}" ]; then
    python3 -c "import sys; s = open(sys.argv[1]).read(); keep = sys.argv[3].split(); v = '[[variants]]'; \
      parts = s.split(v); body = [p for p in parts[1:] if p.split('label = \"')[1].split('\"')[0] in keep]; \
      open(sys.argv[2], 'w').write(parts[0] + ''.join(v + p for p in body))" "$f" "/tmp/$1.only.toml" "$ONLY_VARIANTS"
    f=/tmp/$1.only.toml
  fi
  run timeout -s INT -k 60 "$2" $B/nanovllm "$f" --results-dir "$OUT/results"
}
# cuBLAS and CUPTI (see kernels/src/matmul/cublas.rs) are loaded at run time: put them on the path.
for lib in libcublas.so libcupti.so; do
  found=$(find /usr/local/cuda*/ /usr/lib /opt $(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null) \
            -name "$lib*" 2>/dev/null | head -1)
  [ -n "$found" ] && export LD_LIBRARY_PATH="$(dirname "$found")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done
echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" | tee -a "$OUT/session.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/session.log"
# Batch-1 decode and the bench with each argument in turn, AB_ROUNDS rounds (the first is the
# baseline). An argument is a binary in .devbin, optionally with settings:
# nanovllm:NANOVLLM_CUBLAS_MIN_ROWS=9 (several joined by commas).
# Nsight Compute on launch $2 (0-based) of kernels matching $1 in the kernel bench, where ncu
# exists and may read the counters.
ncu_one() {
  ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  if [ -z "$ncu" ]; then log "no ncu on this machine"; return; fi
  run timeout -s INT ${NCU_TIMEOUT:-300} "$ncu" --kernel-name "regex:$1" --launch-skip "$2" --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
    $B/nanovllm kernels bench --backend cuda --out /tmp/ncu-kernels
}
# Batch-1 TPOT (mean and median over the run's requests) from a decode_latency summary.csv.
tpot() {
  python3 -c "import csv, sys; r = next(x for x in csv.DictReader(open(sys.argv[1])) if x['class'] == 'all'); \
    print('batch-1 TPOT mean %.3f ms, median %.3f ms' % (1e3 * float(r['tpot_mean_s']), 1e3 * float(r['tpot_p50_s'])))" \
    "$1" 2>&1 | tee -a "$OUT/session.log"
}
bin_ab() {
  for round in $(seq ${AB_ROUNDS:-2}); do
    for spec in "$@"; do
      bin=${spec%%:*}; settings=$([ "$spec" = "$bin" ] || echo "${spec#*:}" | tr ',' ' ')
      dir="$OUT/results/$(echo "$spec" | tr ':=,' '-__')-$round"
      run env $settings timeout -s INT -k 20 100 $B/$bin /tmp/dl_kernel.toml --results-dir "$dir"
      tpot "$dir/decode_latency/summary.csv"
      [ "${AB_BENCH:-1}" = 1 ] && run env $settings timeout -s INT -k 20 240 $B/$bin experiments/bench.toml \
        --results-dir "$dir"
    done
  done
}
# decode_latency.toml's first variant alone (the kernels, burn-cuda unfused), for the A/B steps.
python3 -c "s = open('experiments/decode_latency.toml').read(); \
  open('/tmp/dl_kernel.toml', 'w').write(s[:s.index('[[variants]]', s.index('[[variants]]') + 1)])"
for step in ${STEPS:-info kernels_check golden perplexity kernels_bench decode_latency bench hf_peer chunk512}; do
  case $step in
    info) run $B/$NV info --backend cuda ;;
    kernels_check) run timeout -s INT 120 $B/$NV kernels check --backend cuda ;;
    host_cost) run timeout -s INT 120 $B/nanovllm kernels host-cost --backend cuda-unfused ;;
    kernels_bench) run timeout -s INT 240 $B/nanovllm kernels bench --backend cuda --out "$OUT/results/kernels" ;;
    # Prefill kernel variants, parity and the kernel bench at each: PREFILL_SETTINGS lists them
    # (settings joined by commas); by default the fragment-API tensor-core kernel and the flash one.
    prefill_ab) for spec in ${PREFILL_SETTINGS:-NANOVLLM_PREFILL_MMA=1 NANOVLLM_PREFILL_MMA=2}; do
                  settings=$(echo "$spec" | tr ',' ' ')
                  run env $settings timeout -s INT 120 $B/nanovllm kernels check --backend cuda
                  run env $settings timeout -s INT 240 $B/nanovllm kernels bench --backend cuda \
                    --out "$OUT/results/kernels-$(echo "$spec" | tr '=,' '__')"
                done ;;
    matmul) run timeout -s INT ${MATMUL_TIMEOUT:-500} $B/nanovllm kernels matmul --backend cuda-unfused ${MATMUL_ARGS:-} --out "$OUT/results/kernels"
            run timeout -s INT 120 python tools/matmul_torch.py --out "$OUT/results/kernels/matmul_torch.csv" ;;
    hf_peer) run timeout -s INT ${PEER_TIMEOUT:-400} python tools/hf_peer.py --requests "$(ls -d $OUT/results/bench/*/requests.csv | head -1)" \
               ${PEER_ARGS:-} --out "$OUT/results/bench/hf_peer.csv" ;;
    golden) run timeout -s INT 150 $B/$GC --backend cuda
            run timeout -s INT 150 $B/$GC --f32 ;;
    golden_cuda) run timeout -s INT 150 $B/$GC --backend ${GOLDEN_BACKEND:-cuda} ${GOLDEN_MODELS:+--models $GOLDEN_MODELS} ;;
    # The MoE parity on both CUDA backends, each expert path forced in turn (0: the host paths).
    moe_check) for rows in ${MOE_ROWS:-0 8 100000}; do for be in ${MOE_BACKENDS:-cuda-unfused cuda}; do
                 run env NANOVLLM_MOE_KERNEL_ROWS=$rows timeout -s INT 120 $B/$NV kernels check --backend $be --only moe --seed ${SEED:-1}
               done; done ;;
    # compute-sanitizer (SANITIZE_TOOL: memcheck, or initcheck for reads of memory never written)
    # on the parity of SANITIZE_ONLY (default moe) on SANITIZE_BACKENDS, and on golden_check of
    # GOLDEN_MODELS (default the MoE fixtures; GOLDEN_MODELS=none skips it).
    sanitize) cs=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
              tool="--tool ${SANITIZE_TOOL:-memcheck} --print-limit 8"
              for be in ${SANITIZE_BACKENDS:-cuda-unfused cuda}; do
                run timeout -s INT ${SANITIZE_TIMEOUT:-150} "$cs" $tool $B/$NV kernels check --backend $be --only ${SANITIZE_ONLY:-moe} --seed ${SEED:-1}
              done
              [ "${GOLDEN_MODELS:-}" = none ] || run timeout -s INT ${SANITIZE_TIMEOUT:-150} "$cs" $tool $B/$GC --backend cuda-unfused --models ${GOLDEN_MODELS:-mixtral,qwen3_moe,qwen2_moe} ;;
    perplexity) run timeout -s INT 90 $B/$NV perplexity --backend cuda --model models/tiny-qwen3-pystdlib ;;
    decode_latency) exp decode_latency 100 ;;
    # Batch-1 decode with every product on cuBLAS instead of the fused gemv.
    decode_cublas) run env NANOVLLM_CUBLAS_MIN_ROWS=1 timeout -s INT -k 20 100 $B/nanovllm /tmp/dl_kernel.toml \
                     --results-dir "$OUT/results/cublas1" ;;
    # Per-kernel device times (cubecl's profile log) of a batch-1 and a batch-256 decode, to
    # split a step into kernel time and host time.
    profile) for batch in 1 256; do
               log "profile batch $batch"
               CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG="$OUT/profile-b$batch.log" timeout -s INT 120 \
                 $B/nanovllm generate --backend cuda-unfused --model qwen3-0.6b --weights random \
                 --random-prompt-len 1000 --num-prompts $batch --max-tokens 16 --ignore-eos 2>&1 | tail -5 | tee -a "$OUT/session.log"
               xz -T4 "$OUT/profile-b$batch.log"
             done ;;
    # The same profile over chunk512's chunked variant alone: what a mixed step spends.
    profile_mixed) python3 -c "import sys; s = open('experiments/chunk512.toml').read(); \
                     open('/tmp/mixed.toml', 'w').write(s.replace('[[variants]]\nlabel = \"none\"\nscheduler = { policy = \"none\" }\n', ''))"
               CUBECL_DEBUG_OPTION=profile CUBECL_DEBUG_LOG="$OUT/profile-mixed.log" timeout -s INT 200 \
                 $B/nanovllm /tmp/mixed.toml --results-dir "$OUT/results/mixed" 2>&1 | tail -3 | tee -a "$OUT/session.log"
               xz -T4 "$OUT/profile-mixed.log" ;;
    bench) exp bench ${BENCH_TIMEOUT:-240} ;;
    # Chunked prefill at GPU scale (Llama-3.1-8B shapes): the orders at 512 tokens, the sweep,
    # and a mixed step against its decode and chunk parts on the whole forward pass.
    chunk_gpu) exp chunk_gpu ${CHUNK_TIMEOUT:-400}
               run python3 tools/longest_stall.py "$OUT/results/chunk_gpu" ;;
    chunk_gpu_sweep) exp chunk_gpu_sweep ${CHUNK_TIMEOUT:-550}
                     run python3 tools/longest_stall.py "$OUT/results/chunk_gpu_sweep" ;;
    step_bench) run timeout -s INT 300 $B/nanovllm step-bench --backend cuda-unfused --model llama-3.1-8b \
                  --weights random --decodes 1,16,64 --decode-ctx 2048 --chunks 256,512,2048 --chunk-end 8192 \
                  --out "$OUT/results/step_bench" ;;
    # The GPU timeline (CUPTI, kernels/src/dev/gpu_trace.rs) of batch-1 decode and of the bench,
    # split into steps by tools/gpu_timeline.py.
    trace) for name in decode_latency bench; do
             toml=experiments/$name.toml; [ $name = decode_latency ] && toml=/tmp/dl_kernel.toml
             run env NANOVLLM_GPU_TRACE="$OUT/trace-$name.csv" timeout -s INT -k 20 240 $B/nanovllm $toml \
               --results-dir "$OUT/results/trace"
             run python3 tools/gpu_timeline.py "$OUT/trace-$name.csv" $(ls $OUT/results/trace/$name/*/steps.csv | head -1)
             xz -T4 "$OUT/trace-$name.csv"
           done ;;
    # The decode kernel's loads in flight per plane (NANOVLLM_DECODE_UNROLL), then the bench at each.
    unroll_sweep) for u in ${UNROLLS:-2 8 16}; do
                    log "decode unroll $u"
                    NANOVLLM_DECODE_UNROLL=$u timeout -s INT 240 $B/nanovllm kernels bench --backend cuda \
                      --out "$OUT/results/kernels-unroll$u" 2>&1 | grep "batch" | tee -a "$OUT/session.log"
                  done ;;
    bench_unroll) for u in ${UNROLLS:-8 16}; do
                    run env NANOVLLM_DECODE_UNROLL=$u timeout -s INT -k 20 240 $B/nanovllm experiments/bench.toml \
                      --results-dir "$OUT/results/unroll$u"
                  done ;;
    # The fused gemv off (NANOVLLM_FUSED_GEMV_ROWS=0) and on, alternating, on one machine.
    gemv_ab) bin_ab nanovllm:NANOVLLM_FUSED_GEMV_ROWS=0 nanovllm:NANOVLLM_FUSED_GEMV_ROWS=8 ;;
    # Async scheduling off and on, alternating, AB_ROUNDS rounds: batch-1 decode (decode_latency.toml's
    # first two variants) and the bench workload (async_scheduling.toml).
    async_ab) python3 -c "s = open('experiments/decode_latency.toml').read(); v = '[[variants]]'; \
                open('/tmp/dl_async.toml', 'w').write(s[:s.index(v, s.index(v, s.index(v) + 1) + 1)])"
              for round in $(seq ${AB_ROUNDS:-2}); do
                run timeout -s INT -k 20 120 $B/nanovllm /tmp/dl_async.toml --results-dir "$OUT/results/async-$round"
                run timeout -s INT -k 20 300 $B/nanovllm experiments/async_scheduling.toml --results-dir "$OUT/results/async-$round"
              done ;;
    # Nsight Compute on one launch of the kernel bench (each case is 3 + 20 launches): the
    # tensor-core prefill at 4,096 tokens, or the decode kernel at batch 256 x 1,024.
    ncu_prefill) ncu_one paged_prefill_mma 115 ;;
    ncu_decode) ncu_one paged_decode_kernel 26 ;;
    # The kernel benches of two builds (AB_BINS), alternating, AB_ROUNDS rounds.
    kernels_ab) for round in $(seq ${AB_ROUNDS:-2}); do
                  for bin in ${AB_BINS:-nanovllm-base nanovllm}; do
                    run timeout -s INT 240 $B/$bin kernels bench --backend cuda --out "$OUT/results/kernels-$bin-$round"
                  done
                done ;;
    # Two builds, or one build with settings, alternating on one machine (see bin_ab above).
    bin_ab) bin_ab ${AB_BINS:-nanovllm-base nanovllm} ;;
    bench_part) exp bench_part ${BENCH_TIMEOUT:-240} ;;
    bench_fusion) exp bench_fusion ${BENCH_TIMEOUT:-400} ;;
    chunk512) exp chunk512 150 ;;
    # MoE (issue 21): the trained tiny Mixtral's perplexity, one layer's decode time by part,
    # batch-1 TPOT, and the bench workload on Mixtral-8x7B and Qwen3-30B-A3B beside their
    # dense twins of equal active parameters, each with its roofline.
    perplexity_moe) run timeout -s INT 90 $B/$NV perplexity --backend cuda --model models/tiny-moe-pystdlib ;;
    moe_bench) run timeout -s INT 300 $B/nanovllm kernels moe-bench --backend cuda-unfused --out "$OUT/results/kernels" ;;
    decode_latency_moe) exp decode_latency_moe ${MOE_TIMEOUT:-300}
                        python3 -c "import csv, sys; [print('%s: batch-1 TPOT mean %.3f ms, median %.3f ms' % (r['variant'], \
                          1e3 * float(r['tpot_mean_s']), 1e3 * float(r['tpot_p50_s']))) for r in csv.DictReader(open(sys.argv[1])) \
                          if r['class'] == 'all']" "$OUT/results/decode_latency_moe/summary.csv" 2>&1 | tee -a "$OUT/session.log" ;;
    bench_moe) exp bench_moe ${MOE_TIMEOUT:-550}
               run python3 tools/moe_roofline.py "$OUT/results/bench_moe" ;;
    # Decode with factored (compressed) experts against full ones, Mixtral-8x7B shapes.
    compress_speed) exp compress_speed_mixtral ${COMPRESS_TIMEOUT:-500} ;;
    bench_qwen3_moe) exp bench_qwen3_moe ${MOE_TIMEOUT:-550}
                     run python3 tools/moe_roofline.py "$OUT/results/bench_qwen3_moe" ;;
    chunk_sweep) exp chunk_sweep 400 ;;
    # Cascade attention (issue 23): the attention parity alone (bf16, cascade cases included), one
    # decode step's attention paged against cascade over the crossover grid, and the engine runs.
    attention_check) run timeout -s INT 150 $B/$NV kernels check --backend cuda --only attention ;;
    cascade_bench) run timeout -s INT ${CASCADE_TIMEOUT:-300} $B/nanovllm kernels cascade-bench --backend cuda \
                     --out "$OUT/results/kernels" ;;
    # The prefix tiles' knobs (rows, piece keys, cubes per unit): the cascade bench at each of
    # PREFIX_SETTINGS (settings joined by commas), one folder per setting, over TUNE_GRID.
    cascade_tune) for spec in ${PREFIX_SETTINGS:-NANOVLLM_PREFIX_ROWS=64 NANOVLLM_PREFIX_ROWS=128}; do
                    run env $(echo "$spec" | tr ',' ' ') timeout -s INT 120 $B/nanovllm kernels cascade-bench \
                      --backend cuda --out "$OUT/results/tune-$(echo "$spec" | tr ':=,' '-__')" \
                      ${TUNE_GRID:---requests 64,256 --prefixes 512,4096,8192}
                  done ;;
    cascade) exp cascade ${CASCADE_TIMEOUT:-500} ;;
    # Expert offloading (issue 25): Mixtral-8x7B shapes at expert budgets all / 6 / 4 / 2
    # (ONLY_VARIANTS to split it over device calls); the trained tiny Mixtral's perplexity at
    # budgets all / 4 / 2 (offloaded loads must leave it unchanged); the expert-load bandwidth.
    offload) exp offload ${OFFLOAD_TIMEOUT:-500} ;;
    offload_check) for budget in all 4 2; do
                     run timeout -s INT 90 $B/$NV perplexity --backend cuda-unfused --model models/tiny-moe-pystdlib \
                       --expert-budget $budget
                   done ;;
    info_unfused) run $B/$NV info --backend cuda-unfused ;;
    # Tensor parallelism (issue 26) with simulated ranks (threads) on one GPU: the tiny Qwen3's
    # perplexity at 1, 2 and 4 ranks must agree.
    tp_check) for tp in ${TP_SIZES:-1 2 4}; do
                run timeout -s INT 120 $B/$NV perplexity --backend ${TP_BACKEND:-cuda-unfused} --model models/tiny-qwen3-pystdlib \
                  --tensor-parallel-size $tp
              done ;;
    # Whether NCCL takes two ranks on one GPU (the engine assumes not, and sums such ranks on
    # the host).
    nccl_duplicate) run python3 -c "import torch, torch.cuda.nccl as n; t = [torch.ones(4, device='cuda:0') for _ in range(2)]; \
                      n.all_reduce(t); torch.cuda.synchronize(); print('two ranks on one GPU summed:', t[0].tolist())" ;;
    cascade_llama) exp cascade_llama ${CASCADE_TIMEOUT:-500} ;;
    # The chat templates' golden renderings from this machine's transformers (tests/tokenizers
    # carried: tools/fetch_tokenizers.sh).
    chat_golden) run python3 tools/chat_golden.py --out "$OUT/chat_golden.json" ;;
  esac
done
# The device tool returns at most 8 files, 2 folders deep: pack the results folder.
[ -d "$OUT/results" ] && tar czf "$OUT/results.tgz" -C "$OUT" results && rm -rf "$OUT/results"
grep -h -A4 "Inference Engine" "$OUT"/session.log 2>/dev/null | head -0
exit 0
