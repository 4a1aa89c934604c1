"""cuBLAS (through PyTorch) on the shapes of `nanovllm kernels matmul`, bf16: the ceiling the
cubek strategies are compared with. Writes a CSV with the same columns."""
import argparse
import csv

import torch

SHAPES = [("qkv", 1024, 4096), ("o", 2048, 1024), ("gate_up", 1024, 6144),
          ("down", 3072, 1024), ("lm_head", 1024, 151936)]
ROWS = [1, 4, 16, 64, 256, 4096]


def time_ms(f):
    f()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(3):
        f()
    end.record()
    torch.cuda.synchronize()
    iters = max(3, min(200, int(50 / max(start.elapsed_time(end) / 3, 1e-3))))
    start.record()
    for _ in range(iters):
        f()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    with open(args.out, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["proj", "k", "n", "m", "layout", "strategy", "ms", "tflops", "weight_gb_per_s"])
        for proj, k, n in SHAPES:
            for m in [r for r in ROWS if proj != "lm_head" or r <= 256]:
                x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
                for layout in ["row_major", "transposed"]:
                    w = torch.randn(k, n, device="cuda", dtype=torch.bfloat16) if layout == "row_major" \
                        else torch.randn(n, k, device="cuda", dtype=torch.bfloat16).t()
                    ms = time_ms(lambda: x @ w)
                    tflops = 2 * m * k * n / (ms * 1e-3) / 1e12
                    gbs = k * n * 2 / (ms * 1e-3) / 1e9
                    out.writerow([proj, k, n, m, layout, "torch_cublas", f"{ms:.4f}", f"{tflops:.2f}", f"{gbs:.1f}"])
                    print(f"{proj:>8} m {m:>6} {layout:<10}: cuBLAS {ms:.4f} ms ({tflops:.1f} TFLOP/s, {gbs:.0f} GB/s)")


if __name__ == "__main__":
    main()
