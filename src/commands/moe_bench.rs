//! `nanovllm kernels moe-bench`: one MoE layer's decode time by part, on Mixtral-8x7B and
//! Qwen3-30B-A3B shapes, each part beside its roofline: the bytes it must read (the distinct
//! experts the batch chose, the KV cache) over the H200's copy bandwidth.
use std::path::Path;

use anyhow::Context;
use nanovllm_kernels::dev::attention_bench::AttnShape;
use nanovllm_kernels::dev::moe_bench::{time_moe_layer, MoeShape};
use nanovllm_kernels::dev::ops::DevOps;
use nanovllm_kernels::moe::RouterConfig;

/// The H200's device-to-device copy bandwidth, bytes read plus written (measured with
/// PyTorch on these machines: 8.6 GB in 2.0 ms; the datasheet says 4.8 TB/s).
pub const H200_COPY_GB_PER_S: f64 = 4300.0;

const SHAPES: [MoeShape; 2] = [
    MoeShape {
        name: "mixtral-8x7b",
        hidden: 4096,
        inter: 14_336,
        experts: 8,
        router: RouterConfig {
            top_k: 2,
            renormalize: true,
        },
        attention: AttnShape {
            kv_heads: 8,
            group: 4,
            head_dim: 128,
            block_size: 256,
        },
    },
    MoeShape {
        name: "qwen3-30b-a3b",
        hidden: 2048,
        inter: 768,
        experts: 128,
        router: RouterConfig {
            top_k: 8,
            renormalize: true,
        },
        attention: AttnShape {
            kv_heads: 4,
            group: 8,
            head_dim: 128,
            block_size: 256,
        },
    },
];

pub fn bench_moe<B: DevOps>(device: &B::Device, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join("moe_decode.csv");
    let mut w =
        csv::Writer::from_path(&path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record([
        "model",
        "batch",
        "ctx",
        "path",
        "distinct_experts",
        "router_ms",
        "group_ms",
        "kernel_ms",
        "gemm_ms",
        "attention_ms",
        "expert_mb",
        "experts_roofline_ms",
        "kernel_of_roofline",
        "gemm_of_roofline",
        "kv_mb",
        "attention_roofline_ms",
    ])?;
    let ms = |bytes: usize| bytes as f64 / (H200_COPY_GB_PER_S * 1e9) * 1e3;
    for shape in SHAPES {
        println!(
            "\n{}: one layer of a decode step (ms), roofline = bytes read / {:.1} TB/s",
            shape.name,
            H200_COPY_GB_PER_S / 1e3
        );
        for batch in [1, 4, 16, 64, 256] {
            let ctx = 1024;
            let t = time_moe_layer::<B>(shape, batch, ctx, device);
            let roof = ms(t.expert_bytes);
            println!(
                "  batch {batch:>3} ({} experts, engine picks {}): router {:.3}, grouping {}, \
                 experts: kernels {:.3} ({:.0}% of roofline {roof:.3}), host-routed (grouped cuBLAS) {:.3} \
                 ({:.0}%); attention {:.3} (roofline {:.3})",
                t.distinct_experts,
                t.path,
                t.router_ms,
                t.group_ms.map_or("-".into(), |g| format!("{g:.3}")),
                t.kernel_ms,
                100.0 * roof / t.kernel_ms,
                t.gemm_ms,
                100.0 * roof / t.gemm_ms,
                t.attention_ms,
                ms(t.kv_bytes),
            );
            w.write_record([
                shape.name.to_string(),
                batch.to_string(),
                ctx.to_string(),
                t.path.to_string(),
                t.distinct_experts.to_string(),
                format!("{:.4}", t.router_ms),
                t.group_ms.map_or(String::new(), |g| format!("{g:.4}")),
                format!("{:.4}", t.kernel_ms),
                format!("{:.4}", t.gemm_ms),
                format!("{:.4}", t.attention_ms),
                format!("{:.1}", t.expert_bytes as f64 / 1e6),
                format!("{roof:.4}"),
                format!("{:.3}", roof / t.kernel_ms),
                format!("{:.3}", roof / t.gemm_ms),
                format!("{:.1}", t.kv_bytes as f64 / 1e6),
                format!("{:.4}", ms(t.kv_bytes)),
            ])?;
        }
    }
    w.flush()?;
    println!("\nwrote {}", path.display());
    Ok(())
}
