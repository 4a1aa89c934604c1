#!/usr/bin/env python3
"""Inter-token latency of A/B runs (the GPU session's `bin_ab` step): for each results folder
given, the median and mean ITL over every token of its `decode_latency` run, and the bench
throughput where the round ran `bench.toml`. Medians over all tokens are steadier than the
per-request TPOT the session log prints (three requests a run).

    python3 tools/ab_itl.py results/reference/tp-h200/session-2/s*/nanovllm*-*
"""
import csv
import statistics
import sys
from pathlib import Path


def itl_ms(run: Path):
    tokens = run / "decode_latency" / "kernel" / "tokens.csv"
    if not tokens.exists():
        return None
    with open(tokens) as f:
        itl = [float(r["itl_s"]) * 1e3 for r in csv.DictReader(f) if r["itl_s"]]
    if not itl or any(v != v for v in itl):
        raise SystemExit(f"{tokens}: no inter-token latencies, or NaN")
    return statistics.median(itl), statistics.mean(itl), len(itl)


def bench_tok_s(run: Path):
    summary = run / "bench" / "summary.csv"
    if not summary.exists():
        return None
    with open(summary) as f:
        rows = [r for r in csv.DictReader(f) if r["class"] == "all"]
    return float(rows[0]["output_throughput_tok_s"]) if rows else None


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    print("| run | ITL p50 (ms) | ITL mean (ms) | tokens | bench (tokens/s) |")
    print("|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        run = Path(arg)
        itl = itl_ms(run)
        if itl is None:
            continue
        bench = bench_tok_s(run)
        b = f"{bench:,.0f}" if bench is not None else ""
        print(f"| {run.parent.name}/{run.name} | {itl[0]:.3f} | {itl[1]:.3f} | {itl[2]} | {b} |")


if __name__ == "__main__":
    main()
