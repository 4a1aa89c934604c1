#!/usr/bin/env python3
"""The expert-offloading table (README, docs/perf-log.md) from an `experiments/offload.toml`
results folder: per variant and class (and `all`), output tokens/s over the class's busy time
(the steps that ran while it had requests in flight; classes that overlap in time share steps), hit rate, bytes copied and wait, and beside them
the bound = the all-resident variant's busy time for the class + bytes copied / the measured
host-to-device bandwidth.

    python3 tools/offload_table.py RESULTS_DIR [RESULTS_DIR ...] --gb-s 52.1 [--resident all]

Several folders: one experiment's variants run over several device calls (`ONLY_VARIANTS`).
"""
import argparse
import csv
import os
import sys


def rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(x):
    return float(x) if x not in ("", None) else 0.0


def class_stats(vdir):
    requests = rows(os.path.join(vdir, "requests.csv"))
    steps = rows(os.path.join(vdir, "steps.csv"))
    out = {}
    for cls in ["all", *dict.fromkeys(r["class"] for r in requests)]:
        mine = [r for r in requests if cls in ("all", r["class"])]
        start = min(num(r["arrival_s"]) for r in mine)
        end = max(num(r["arrival_s"]) + num(r["e2e_s"]) for r in mine)
        inside = [s for s in steps if start <= num(s["start_s"]) <= end]
        out[cls] = {
            "busy_s": sum(num(s["step_s"]) for s in inside),
            "tokens": sum(int(r["output_tokens"]) for r in mine),
            "hits": sum(num(s["expert_hits"]) for s in inside),
            "misses": sum(num(s["expert_misses"]) for s in inside),
            "bytes": sum(num(s["expert_bytes_copied"]) for s in inside),
            "wait_s": sum(num(s["expert_wait_s"]) for s in inside),
            "failed": sum(r["finish_reason"] not in ("stop", "length") for r in mine),
        }
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="+")
    p.add_argument("--gb-s", type=float, required=True,
                   help="host-to-device GB/s of expert loads (`nanovllm info`)")
    p.add_argument("--resident", default="all", help="the all-resident variant's label")
    a = p.parse_args()
    stats = {}
    for d in a.dirs:
        for v in rows(os.path.join(d, "variants.csv")):
            vdir = os.path.join(d, v["variant"])
            if os.path.exists(os.path.join(vdir, "steps.csv")):
                stats[v["variant"]] = class_stats(vdir)
    if a.resident not in stats:
        sys.exit(f"{a.dirs}: no variant {a.resident!r} to take the resident busy time from")
    print("| variant | class | tokens/s | bound tokens/s | measured / bound time | hit rate "
          "| GB copied | wait s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for v, classes in stats.items():
        for cls, s in classes.items():
            base = stats[a.resident].get(cls)
            if base is None or s["busy_s"] <= 0:
                continue
            bound_s = base["busy_s"] + s["bytes"] / (a.gb_s * 1e9)
            lookups = s["hits"] + s["misses"]
            hit = f"{s['hits'] / lookups:.2f}" if lookups else "-"
            note = f" ({s['failed']} failed)" if s["failed"] else ""
            print(f"| {v}{note} | {cls} | {s['tokens'] / s['busy_s']:.1f} "
                  f"| {s['tokens'] / bound_s:.1f} | {s['busy_s'] / bound_s:.2f} | {hit} "
                  f"| {s['bytes'] / 1e9:.1f} | {s['wait_s']:.2f} |")


if __name__ == "__main__":
    main()
