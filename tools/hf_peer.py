#!/usr/bin/env python3
"""Peer benchmark: HF transformers on the same workload as experiments/bench.toml.

The workload matches nano-vllm's bench.py: Qwen3-0.6B shapes with seeded random weights, and for each
request the prompt and output lengths from a requests.csv that our engine wrote. Prompt ids are random
ints in [0, 10000) (numpy seed 0). EOS is ignored, so every request makes exactly its output length.
Throughput = useful output tokens / wall time. A warm-up runs first and is not timed.

Modes:
  generate_batch (default)  transformers' continuous batching (ContinuousBatchingManager). All requests
      are submitted at t=0 through add_request, each with its own max_new_tokens. Needs transformers 5.x.
      The attention is a paged one: "paged|sdpa" by default (works on CPU and GPU). With the flash-attn
      package installed, "paged|flash_attention_2" is faster and turns on CUDA graphs and the decode fast path.
  generate  static batching: model.generate on batches of --batch-size requests in CSV order,
      left-padded, each batch run to the largest output length in it. Only each request's own output
      length counts as useful tokens: the extra tokens of the shorter requests are padding work, the
      cost of static batching.

Sampling is temperature 0.6 with no top-k/top-p (as bench.py); --greedy switches to greedy.

GPU (bf16, the real model):
  python tools/hf_peer.py --requests results/bench/<variant>/requests.csv --out results/bench/hf_peer.csv
  python tools/hf_peer.py --requests ... --mode generate --batch-size 64 --out ...
CPU smoke test (tiny config):
  python tools/hf_peer.py --tiny --device cpu --dtype f32 --requests /tmp/req.csv --mode generate
  python tools/hf_peer.py --tiny --device cpu --dtype f32 --requests /tmp/req.csv --num-blocks 16 --max-batch-tokens 256
  (On the CPU, continuous batching needs psutil, and --num-blocks/--max-batch-tokens: otherwise it sizes the
  cache from total RAM, or fails with "No positive solution" without psutil.)
"""
import argparse
import csv
import datetime
import os
import sys
import time

import numpy as np
import torch
import transformers
from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

DTYPES = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", required=True, help="requests.csv written by our engine")
    p.add_argument("--num-requests", type=int, default=None, help="only the first N rows")
    p.add_argument("--out", default=None, help="CSV to write (appended to if it exists)")
    p.add_argument("--mode", choices=["generate_batch", "generate"], default="generate_batch")
    p.add_argument("--batch-size", type=int, default=64, help="--mode generate only")
    p.add_argument("--dtype", choices=list(DTYPES), default="bf16")
    p.add_argument("--device", default="cuda")
    p.add_argument("--attn-implementation", default=None,
                   help='default "sdpa" for generate, "paged|sdpa" for generate_batch')
    p.add_argument("--greedy", action="store_true", help="greedy instead of temperature 0.6")
    p.add_argument("--tiny", action="store_true", help="tiny config for CPU smoke tests")
    # The paged cache sizes itself from free device memory (on the CPU: from total RAM, far too much).
    p.add_argument("--num-blocks", type=int, default=None, help="paged KV cache blocks of 256 tokens (generate_batch)")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="tokens per step (generate_batch)")
    p.add_argument("--max-memory-percent", type=float, default=None,
                   help="fraction of free GPU memory for the paged KV cache (transformers' default if unset)")
    return p.parse_args()


def read_workload(path, limit):
    """(prompt_len, output_len) per request, in file order."""
    with open(path, newline="") as f:
        rows = [(int(r["prompt_tokens"]), int(r["output_tokens"])) for r in csv.DictReader(f)]
    rows = rows[:limit] if limit else rows
    if not rows:
        sys.exit(f"no requests in {path}")
    return rows


def make_prompts(workload, vocab):
    # As bench.py: randint(0, 10000) (capped by --tiny's vocabulary); seeded so every run sends the same ids.
    rng = np.random.default_rng(0)
    return [rng.integers(0, min(10000, vocab), size=p).tolist() for p, _ in workload]


def build_model(args, attn):
    if args.tiny:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, vocab_size=1000)
    else:  # Qwen3-0.6B
        shape = dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=128, vocab_size=151936)
    config = Qwen3Config(**shape, rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=40960,
                         tie_word_embeddings=True, attn_implementation=attn,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)  # weight values do not change speed, but keep runs identical
    model = Qwen3ForCausalLM(config).to(dtype=DTYPES[args.dtype], device=args.device).eval()
    assert model.generation_config.eos_token_id is None, "an EOS id would let generate stop rows early"
    return model


def generation_config(args, max_new_tokens):
    # eos_token_id=None: nothing can stop a request early (ignore_eos). pad_token_id only pads the prompt.
    sampling = dict(do_sample=False) if args.greedy else dict(do_sample=True, temperature=0.6, top_k=0, top_p=1.0)
    return GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=0, **sampling)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_static(model, args, prompts, workload):
    """model.generate in fixed batches; returns (useful tokens, tokens actually generated, wall s)."""
    def one_batch(batch_prompts, max_new):
        width = max(len(p) for p in batch_prompts)
        ids = torch.zeros(len(batch_prompts), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(batch_prompts):  # left padding, so that every row's last token is real
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        out = model.generate(input_ids=ids.to(args.device), attention_mask=mask.to(args.device),
                             generation_config=generation_config(args, max_new))
        return out.shape[1] - width  # new tokens per row

    one_batch([prompts[0][:16]] * 2, 4)  # warm-up (kernels, allocator), not timed
    sync(args.device)
    useful = generated = 0
    t0 = time.perf_counter()
    for s in range(0, len(prompts), args.batch_size):
        lens = [o for _, o in workload[s:s + args.batch_size]]
        new = one_batch(prompts[s:s + args.batch_size], max(lens))
        assert new == max(lens), f"batch at {s}: generated {new} tokens, expected {max(lens)}"
        useful += sum(lens)  # each request's own length; the rest of its row is wasted work
        generated += new * len(lens)
    sync(args.device)
    return useful, generated, time.perf_counter() - t0


def run_continuous(model, args, prompts, workload):
    """Continuous batching, all requests at t=0, each with its own max_new_tokens."""
    try:
        from transformers import ContinuousBatchingConfig
        from transformers.generation.continuous_batching.utils import WorkloadHints
    except ImportError as e:
        sys.exit(f"transformers {transformers.__version__} lacks the continuous batching API ({e}); "
                 "use transformers >= 5 or --mode generate")
    if not hasattr(model, "continuous_batching_context_manager"):
        sys.exit(f"transformers {transformers.__version__}: no continuous_batching_context_manager; "
                 "use --mode generate")
    cb_config = ContinuousBatchingConfig(num_blocks=args.num_blocks, max_batch_tokens=args.max_batch_tokens,
                                         max_memory_percent=args.max_memory_percent, seed=0)
    hints = WorkloadHints(max_prompt_length=max(p for p, _ in workload),
                          max_generated_length=max(o for _, o in workload), num_requests=len(workload))
    # generate_batch takes one max_new_tokens for all; the manager's add_request takes one per request.
    gen_config = generation_config(args, max(o for _, o in workload))
    gen_config.eos_token_id = -1  # the manager's spelling of "no EOS"
    with model.continuous_batching_context_manager(generation_config=gen_config, continuous_batching_config=cb_config,
                                                   workload_hints=hints, warmup=True) as manager:
        def submit_and_wait(reqs):  # reqs: {request_id: (prompt ids, max_new_tokens)}
            for rid, (ids, n) in reqs.items():
                manager.add_request(ids, request_id=rid, max_new_tokens=n, eos_token_id=-1)  # -1: no EOS
            done = {}
            while len(done) < len(reqs):
                out = manager.get_result(timeout=1)
                if out is None:
                    if not manager.is_running():
                        sys.exit(f"continuous batching thread died after {len(done)}/{len(reqs)} requests")
                    continue
                if out.is_finished():
                    if out.error is not None:
                        sys.exit(f"request {out.request_id} failed: {out.error}")
                    done[out.request_id] = len(out.generated_tokens)
            return done

        submit_and_wait({"warmup": (prompts[0][:16], 4)})  # one short request, like bench.py; not timed
        reqs = {f"r{i}": (ids, o) for i, (ids, (_, o)) in enumerate(zip(prompts, workload))}
        sync(args.device)
        t0 = time.perf_counter()
        done = submit_and_wait(reqs)
        sync(args.device)
        wall = time.perf_counter() - t0
    short = {rid: (done[rid], reqs[rid][1]) for rid in reqs if done[rid] != reqs[rid][1]}
    assert not short, f"requests with the wrong number of tokens (got, wanted): {short}"
    return sum(o for _, o in workload), sum(done.values()), wall


def main():
    args = parse_args()
    attn = args.attn_implementation or ("sdpa" if args.mode == "generate" else "paged|sdpa")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("--device cuda but torch sees no CUDA device")
    workload = read_workload(args.requests, args.num_requests)
    model = build_model(args, attn)
    prompts = make_prompts(workload, model.config.vocab_size)
    if args.mode == "generate_batch":
        # Not inference_mode: the manager's thread updates in place, under no_grad, tensors made on this thread.
        with torch.no_grad():
            useful, generated, wall = run_continuous(model, args, prompts, workload)
    else:
        with torch.inference_mode():
            useful, generated, wall = run_static(model, args, prompts, workload)

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    row = dict(engine="hf-transformers", mode=args.mode, requests=len(workload), output_tokens=useful,
               wall_s=f"{wall:.3f}", tokens_per_s=f"{useful / wall:.1f}", gpu=gpu, torch=torch.__version__,
               transformers=transformers.__version__, dtype=args.dtype,
               date=datetime.datetime.now().isoformat(timespec="seconds"))
    sampling = "greedy" if args.greedy else "temperature 0.6"
    print(f"hf-transformers {args.mode} ({attn}, {sampling}): {len(workload)} requests, {useful} output tokens "
          f"({generated} generated) in {wall:.2f} s = {useful / wall:.1f} tok/s on {gpu}")
    if args.out:
        new_file = not os.path.exists(args.out)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row))
            if new_file:
                w.writeheader()
            w.writerow(row)


if __name__ == "__main__":
    main()
