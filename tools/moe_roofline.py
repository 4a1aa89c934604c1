#!/usr/bin/env python3
"""Each variant of a bench experiment beside its roofline, from its steps.csv.

A step cannot take less than the larger of
  bytes / copy bandwidth   bytes = the dense weights (attention, router, shared expert, LM head)
                           + the expert slabs its tokens chose (steps.csv `experts_read`: experts
                           with a token, summed over the sparse layers) + the KV cache it reads
                           (`context_tokens` x bytes per token)
  FLOPs / matrix rate      2 x the active parameters x tokens, plus attention (4 x heads x
                           head_dim x layers x query-key pairs)
on the H200: 4.3 TB/s copy bandwidth and 790 TFLOP/s bf16 (measured on these machines, see
docs/gpu.md). The roofline of the run is the sum over its steps; the report compares the sum of
measured step times with it, and tokens/s with the tokens/s the roofline allows.

usage: tools/moe_roofline.py results/bench_moe [--csv out.csv]
"""
import csv
import os
import sys
import tomllib

COPY = 4.3e12
MATRIX = 790e12
BF16 = 2

# name: (vocab, hidden, layers, heads, kv_heads, head_dim, experts, top_k, expert_inter, dense_inter)
SHAPES = {
    "mixtral-8x7b": (32000, 4096, 32, 32, 8, 128, 8, 2, 14336, 0),
    "mixtral-8x7b-dense-active": (32000, 4096, 32, 32, 8, 128, 0, 0, 0, 2 * 14336),
    "qwen3-30b-a3b": (151936, 2048, 48, 32, 4, 128, 128, 8, 768, 0),
    "qwen3-30b-a3b-dense-active": (151936, 2048, 48, 32, 4, 128, 0, 0, 0, 8 * 768),
    "llama-3.1-8b": (128256, 4096, 32, 32, 8, 128, 0, 0, 0, 14336),
    "qwen3-0.6b": (151936, 1024, 28, 16, 8, 128, 0, 0, 0, 3072),
}


def models_of(root):
    """Variant label -> model source, from the experiment's config.resolved.toml."""
    with open(os.path.join(root, "config.resolved.toml"), "rb") as f:
        variants = tomllib.load(f)["variants"]
    return {v["label"]: v["config"]["model"]["source"] for v in variants}


def step_bound(s, shape):
    vocab, h, layers, heads, kv, hd, experts, top_k, inter, dense = shape
    tokens = int(s["prefill_tokens"]) + int(s["decode_tokens"])
    attn_w = layers * h * (heads + 2 * kv) * hd + layers * heads * hd * h
    dense_w = attn_w + layers * (3 * h * dense + h * experts) + vocab * h
    expert = 3 * h * inter
    read = int(s["experts_read"] or 0) if experts else 0
    ctx = int(s["context_tokens"])
    kv_bytes = ctx * 2 * layers * kv * hd * BF16
    bytes_ = (dense_w + read * expert) * BF16 + kv_bytes
    seqs = max(1, int(s["num_seqs"]))
    # Query-key pairs: a decode row reads its whole context; a prefill chunk about half of it.
    pairs = int(s["decode_tokens"]) * ctx / seqs + int(s["prefill_tokens"]) * ctx / seqs / 2
    flops = 2 * tokens * (dense_w + layers * top_k * expert) + 4 * heads * hd * layers * pairs
    return bytes_ / COPY, flops / MATRIX


def main():
    args = sys.argv[1:]
    out_csv = None
    if "--csv" in args:
        i = args.index("--csv")
        out_csv = args[i + 1]
        del args[i:i + 2]
    root = args[0]
    rows = []
    models = models_of(root)
    for v in sorted(os.listdir(root)):
        d = os.path.join(root, v)
        steps_path = os.path.join(d, "steps.csv")
        if not os.path.exists(steps_path):
            continue
        model = models.get(v)
        shape = SHAPES.get(model)
        if shape is None:
            print(f"{v}: no shape for model {model}; add it to SHAPES")
            continue
        steps = list(csv.DictReader(open(steps_path)))
        if any("experts_read" not in s or "context_tokens" not in s for s in steps[:1]):
            sys.exit(f"{steps_path}: needs the experts_read and context_tokens columns")
        measured = sum(float(s["step_s"]) for s in steps)
        bound = [step_bound(s, shape) for s in steps]
        roof = sum(max(b, f) for b, f in bound)
        mem_steps = sum(b >= f for b, f in bound)
        dec = [(s, b) for s, b in zip(steps, bound) if s["kind"] == "decode"]
        dec_measured = sum(float(s["step_s"]) for s, _ in dec)
        dec_roof = sum(max(b) for _, b in dec)
        new_tokens = sum(int(s["new_tokens"]) for s in steps)
        row = dict(variant=v, model=model, steps=len(steps), memory_bound_steps=mem_steps,
                   step_time_s=round(measured, 3), roofline_s=round(roof, 3),
                   of_roofline=round(roof / measured, 3) if measured else float("nan"),
                   decode_step_time_s=round(dec_measured, 3), decode_roofline_s=round(dec_roof, 3),
                   decode_of_roofline=round(dec_roof / dec_measured, 3) if dec_measured else float("nan"),
                   new_tokens=new_tokens,
                   tokens_per_s=round(new_tokens / measured, 1) if measured else float("nan"),
                   roofline_tokens_per_s=round(new_tokens / roof, 1) if roof else float("nan"))
        rows.append(row)
        print(f"{v:<30} {new_tokens} tokens in {measured:.2f} s of steps = {row['tokens_per_s']} tok/s; "
              f"roofline {roof:.2f} s ({row['roofline_tokens_per_s']} tok/s): {100 * row['of_roofline']:.0f}% "
              f"of it; decode steps {100 * row['decode_of_roofline']:.0f}% "
              f"({mem_steps}/{len(steps)} steps memory-bound)")
    if out_csv and rows:
        with open(out_csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
