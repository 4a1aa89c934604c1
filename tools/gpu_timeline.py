#!/usr/bin/env python3
"""Where the GPU's time goes per step, from a CUPTI trace (`NANOVLLM_GPU_TRACE`, see
kernels/src/dev/gpu_trace.rs) and the run's steps.csv. A step on the GPU ends with the copy of its
sampled tokens to the host; the trace's last steps are matched to steps.csv's rows from the end
(the warm-up's steps come first in the trace). For each step kind and batch class: the step as the
GPU saw it (from the previous step's copy to its own), the time before its first kernel (the host
preparing the step; its uploads are in it), the idle between kernels (launches arriving slower than the GPU runs
them), and the busy time by kernel family.

    python3 tools/gpu_timeline.py trace.csv results/.../<variant>/steps.csv
"""
import csv
import statistics
import sys

from step_phases import CLASSES

FAMILIES = [
    ("attention", ("paged_decode", "paged_attention", "paged_prefill", "merge_partials")),
    ("gemv", ("gemv_",)),
    ("cublas", ("gemm", "sm90", "sm80", "cutlass", "xmma", "cublas", "splitk", "nvjet")),
    ("norm/rope/silu", ("rms_norm", "qk_norm_rope", "silu_mul", "store_kv")),
    ("sample", ("sample_rows", "argmax")),
    ("copies", ("memcpy",)),
]
DEVICE_TO_HOST = "memcpy_kind2"


def family(name):
    low = name.lower()
    return next((fam for fam, keys in FAMILIES if any(k in low for k in keys)), "other")


def gpu_steps(path, host=None):
    """Spans grouped into steps, each ending with a device-to-host copy; host events
    (`host:<label>`, see `gpu_trace::mark`) go to `host` as (label, time)."""
    steps, current, last_was_copy = [], [], False
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["name"].startswith("host:"):
                if host is not None:
                    host.append((row["name"][5:], int(row["start_ns"])))
                continue
            span = (row["name"], int(row["start_ns"]), int(row["end_ns"]))
            is_copy = row["name"] == DEVICE_TO_HOST
            if not is_copy and last_was_copy and current:
                steps.append(current)
                current = []
            current.append(span)
            last_was_copy = is_copy
    if current and last_was_copy:
        steps.append(current)
    return steps


def main(trace_path, steps_path):
    with open(steps_path) as f:
        rows = list(csv.DictReader(f))
    host = []
    steps = gpu_steps(trace_path, host)
    host_at = 0
    if len(steps) < len(rows) + 1:
        sys.exit(f"{len(steps)} GPU steps for {len(rows)} rows of {steps_path}")
    offset = len(steps) - len(rows)
    groups = {}
    for i, row in enumerate(rows):
        spans, prev = steps[offset + i], steps[offset + i - 1]
        seqs = int(row["num_seqs"])
        cls = next(f"{lo}-{hi}" if lo != hi else f"{lo}" for lo, hi in CLASSES if lo <= seqs <= hi)
        begin = prev[-1][2]
        end = spans[-1][2]
        first_kernel = next((s[1] for s in spans if not s[0].startswith("memcpy")), spans[0][1])
        head_idle = max(0, first_kernel - begin)
        busy, busy_after, by_family, cursor = 0, 0, {}, spans[0][1]
        for name, start, stop in spans:
            # Overlapping spans (cuBLAS helpers) count once.
            start = max(start, cursor)
            if stop > start:
                busy += stop - start
                busy_after += max(0, stop - max(start, first_kernel))
                fam = family(name)
                by_family[fam] = by_family.get(fam, 0) + stop - start
                cursor = stop
        # Host events of this step, as time since the previous step's copy ended.
        marks = {}
        while host_at < len(host) and host[host_at][1] <= end:
            label, t = host[host_at]
            if t >= begin:
                marks.setdefault("@" + label, t - begin)
            host_at += 1
        g = groups.setdefault((row["kind"], cls), [])
        g.append(dict(span=end - begin, head=head_idle, inner=end - first_kernel - busy_after,
                      busy=busy, kernels=len(spans), **by_family, **marks))
    fams = [f for f, _ in FAMILIES] + ["other"]
    header = ["kind", "seqs", "steps", "total s", "step ms", "head idle", "inner idle", "busy"] + fams + ["spans"]
    print(" ".join(f"{h:>9}" for h in header))
    for (kind, cls), g in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1].split("-")[0]))):
        med = lambda key: statistics.median(s.get(key, 0) for s in g) / 1e6
        cells = [kind, cls, len(g), f"{sum(s['span'] for s in g) / 1e9:.3f}"]
        cells += [f"{med(k):.3f}" for k in ["span", "head", "inner", "busy"] + fams]
        cells.append(int(statistics.median(s["kernels"] for s in g)))
        print(" ".join(f"{c:>9}" for c in cells))
    total = {k: sum(s.get(k, 0) for g in groups.values() for s in g) / 1e9
             for k in ["span", "head", "inner", "busy"] + fams}
    print("totals (s): " + ", ".join(f"{k} {v:.3f}" for k, v in total.items()))
    labels = sorted({k for g in groups.values() for s in g for k in s if k.startswith("@")},
                    key=lambda k: statistics.median(s[k] for g in groups.values() for s in g if k in s))
    if labels:
        print("host events, ms after the previous step's copy (median):")
        print(" ".join(f"{h:>14}" for h in ["kind", "seqs"] + labels))
        for (kind, cls), g in sorted(groups.items(), key=lambda kv: (kv[0][0], int(kv[0][1].split("-")[0]))):
            cells = [kind, cls] + [f"{statistics.median(s[k] for s in g if k in s) / 1e6:.3f}"
                                   if any(k in s for s in g) else "-" for k in labels]
            print(" ".join(f"{c:>14}" for c in cells))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
