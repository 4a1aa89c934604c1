"""Summarises `nanovllm kernels matmul` (matmul.csv) beside cuBLAS (matmul_torch.csv): per case,
burn's default, the engine's `project`, the best cubek strategy, and cuBLAS, in ms."""
import csv
import sys
from collections import defaultdict


def main(folder):
    rows = list(csv.DictReader(open(f"{folder}/matmul.csv")))
    try:
        rows += list(csv.DictReader(open(f"{folder}/matmul_torch.csv")))
    except FileNotFoundError:
        pass
    cases = defaultdict(dict)
    for r in rows:
        cases[(r["proj"], int(r["m"]), r["layout"])][r["strategy"]] = float(r["ms"])
    wins = defaultdict(int)
    print("| proj | m | layout | burn | engine | best cubek | ms | cuBLAS |")
    print("|---|---|---|---|---|---|---|---|")
    for (proj, m, layout), t in sorted(cases.items(), key=lambda c: (c[0][0], c[0][1], c[0][2])):
        cubek = {k: v for k, v in t.items() if k not in ("engine_project", "burn_matmul", "torch_cublas")}
        best = min(cubek, key=cubek.get) if cubek else "-"
        wins[best] += 1
        get = lambda k: f"{t[k]:.4f}" if k in t else "-"
        print(f"| {proj} | {m} | {layout} | {get('burn_matmul')} | {get('engine_project')} | {best} | "
              f"{cubek.get(best, float('nan')):.4f} | {get('torch_cublas')} |")
    print("\nwins:", dict(sorted(wins.items(), key=lambda w: -w[1])))


if __name__ == "__main__":
    main(sys.argv[1])
