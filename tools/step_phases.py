#!/usr/bin/env python3
"""Where a step's time goes, from a variant's steps.csv: median engine time per step and the
part of it until every launch was queued (`queued_s`), by step kind and batch-size class.
When queued is near the whole step, issuing the launches is the bound; when it is well below,
the host waits for the device (cubecl's device thread, or the GPU).

    python3 tools/step_phases.py results/bench/<run>/<variant>/steps.csv
"""
import csv
import statistics
import sys

CLASSES = [(1, 1), (2, 8), (9, 16), (17, 32), (33, 64), (65, 128), (129, 192), (193, 256), (257, 1 << 30)]


def main(path):
    groups = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            seqs = int(row["num_seqs"])
            cls = next(f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in CLASSES if lo <= seqs <= hi)
            groups.setdefault((row["kind"], cls), []).append((float(row["engine_s"]), float(row["queued_s"])))
    print(f"{'kind':<8} {'seqs':>9} {'steps':>6} {'step ms':>8} {'queued ms':>10} {'waiting ms':>11}")
    for (kind, cls), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1].split('-')[0]))):
        step = statistics.median(r[0] for r in rows) * 1e3
        queued = statistics.median(r[1] for r in rows) * 1e3
        print(f"{kind:<8} {cls:>9} {len(rows):>6} {step:>8.2f} {queued:>10.2f} {step - queued:>11.2f}")


if __name__ == "__main__":
    main(sys.argv[1])
