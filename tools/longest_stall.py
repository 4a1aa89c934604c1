#!/usr/bin/env python3
"""The longest stall of a running decode in each variant of a results folder, and the steps
that ran during it: which request waited, from when to when, and what each step in that window
held (prefill and decode tokens) and took. Explains a max-ITL number from steps.csv.

    python3 tools/longest_stall.py results/chunk_gpu
"""
import csv
import pathlib
import sys


def rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def stall(variant_dir):
    tokens = [r for r in rows(variant_dir / "tokens.csv") if r["itl_s"]]
    if not tokens:
        return
    worst = max(tokens, key=lambda r: float(r["itl_s"]))
    end = float(worst["time_s"])
    start = end - float(worst["itl_s"])
    classes = {r["id"]: r["class"] for r in rows(variant_dir / "requests.csv")}
    print(f"\n{variant_dir.name}: longest stall {1e3 * (end - start):.1f} ms, request {worst['id']} "
          f"({classes.get(worst['id'], '?')}), token {worst['index']}, {start:.3f} s to {end:.3f} s")
    window = [s for s in rows(variant_dir / "steps.csv")
              if float(s["end_s"]) > start and float(s["start_s"]) < end]
    prefill = sum(int(s["prefill_tokens"]) for s in window)
    decode = sum(int(s["decode_tokens"]) for s in window)
    print(f"  {len(window)} steps overlap it: {prefill} prefill tokens, {decode} decode tokens")
    for s in window:
        print(f"  step {s['step']:>5} {s['kind']:<7} {float(s['step_s']) * 1e3:7.1f} ms  "
              f"prefill {s['prefill_tokens']:>5}  decode {s['decode_tokens']:>3}  seqs {s['num_seqs']:>3}")
    steps = rows(variant_dir / "steps.csv")
    longest = max(steps, key=lambda s: float(s["step_s"]))
    print(f"  longest step of the run: {float(longest['step_s']) * 1e3:.1f} ms ({longest['kind']}, "
          f"prefill {longest['prefill_tokens']}, decode {longest['decode_tokens']})")


def main(folder):
    root = pathlib.Path(folder)
    for variant_dir in sorted(p for p in root.iterdir() if (p / "steps.csv").is_file()):
        stall(variant_dir)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
