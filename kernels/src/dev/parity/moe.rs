//! The MoE ops against their references on random routings: the router kernel against host
//! softmax + top-k, the grouping kernel against the host grouping, and the expert products
//! (this backend's `moe_experts`) and their plain-burn reference on the same backend, both
//! against the host's f32 arithmetic on the same (rounded) values.
use std::cmp::Ordering;

use burn::tensor::{Int, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::dev::ops::DevOps;
use crate::layers::reference::silu_mul;
use crate::moe::launch::ROWS_PER_CHUNK;
use crate::moe::padded::experts_padded_reference;
use crate::moe::reference::{self as moe_reference, host_ints};
use crate::moe::sorted::{experts_sorted, grouped_reference};
use crate::moe::{ExpertWeights, RouterConfig, Routing};

use super::{nan_max, random, rel_err, to_host, upload, worst};

/// The worst case of each MoE op.
#[derive(Debug, Clone)]
pub struct MoeParity {
    /// Rows whose chosen experts' logits differ from the host's top-k (ties may swap equal
    /// experts, so the chosen logits are compared, not the ids).
    pub route_mismatches: usize,
    /// The routing weights against host softmax (renormalised and not).
    pub route_weights: f32,
    /// Counts, sorted slots or chunks that differ from the host grouping; `None` where the
    /// backend has no grouping kernel.
    pub group_mismatches: Option<usize>,
    /// `moe_experts` against the host's f32 arithmetic on the same values, worst over the cases.
    pub experts: f32,
    /// The plain-burn reference on this backend against the host's f32 arithmetic on the same
    /// values, worst over the cases: an oracle that is itself wrong would hide a kernel's error.
    pub reference: f32,
    /// Each case's errors, in the order of the cases.
    pub experts_by_case: Vec<MoeCase>,
    /// The padded batch (burn's batched matmul) against the host, where it takes the
    /// routing; and in how many cases it did.
    pub padded: f32,
    pub padded_cases: usize,
    /// The rows sorted by expert ([`experts_sorted`]) with the plain-burn grouped product,
    /// against the host, every case: the gathers around cuBLAS's grouped GEMM.
    pub sorted: f32,
    /// Cases whose routing sent more than a chunk of rows to one expert and left an expert
    /// without a row (the cases must include both).
    pub crowded_cases: usize,
    pub idle_cases: usize,
}

/// One case of the expert products.
#[derive(Debug, Clone)]
pub struct MoeCase {
    /// The shape and the path the engine took (`kernel`, `padded` or `per_expert`).
    pub name: String,
    /// `moe_experts` against the host.
    pub err: f32,
    /// The reference against the host.
    pub reference_err: f32,
    /// Where `moe_experts` is furthest from the host: the token, its routed experts, the column,
    /// and how many of the token's columns are off by more than 1e-2 of the output's scale.
    pub worst: String,
    /// For a case off by more than 1e-2: the same op replayed (see [`replay`]).
    pub replay: Option<String>,
}

/// `(tokens, experts, top_k, hidden, inter, skew)`: `skew` biases the router towards the
/// first experts, so one gets more than a chunk of rows and others none.
/// The last two are past the gemv-class kernels' rows: the padded batch, and the per-expert
/// products where the skew makes padding too costly.
const CASES: [(usize, usize, usize, usize, usize, f32); 7] = [
    (1, 8, 2, 64, 48, 0.0),
    (3, 8, 2, 128, 96, 0.0),
    (12, 8, 2, 64, 48, 4.0),
    (9, 16, 4, 96, 64, 0.0),
    (20, 64, 8, 64, 32, 3.0),
    (150, 8, 2, 64, 48, 0.0),
    (150, 8, 2, 64, 48, 5.0),
];

/// `kernel_max_rows`: the tuning's `moe_kernel_max_rows`, to name the path each case takes.
pub fn run_moe<B: DevOps>(seed: u64, kernel_max_rows: usize, dev: &B::Device) -> MoeParity {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut r = MoeParity {
        route_mismatches: 0,
        route_weights: 0.0,
        group_mismatches: Some(0),
        experts: 0.0,
        reference: 0.0,
        experts_by_case: Vec::new(),
        padded: 0.0,
        padded_cases: 0,
        sorted: 0.0,
        crowded_cases: 0,
        idle_cases: 0,
    };
    for (tokens, experts, top_k, hidden, inter, skew) in CASES {
        let logits: Vec<f32> = (0..tokens * experts)
            .map(|i| rng.random_range(-1.0f32..1.0) + skew * (i % experts < 2) as u8 as f32)
            .collect();
        let (logits, held) = upload::<B, 2>(logits, [tokens, experts], dev);
        for renormalize in [true, false] {
            let config = RouterConfig { top_k, renormalize };
            let got = B::moe_route(logits.clone(), config);
            let ids = host_ints(&got.experts);
            let (want_ids, want_w) = host_route(&held, experts, config);
            r.route_mismatches += (0..tokens)
                .filter(|&t| {
                    (0..top_k).any(|j| {
                        let (a, b) = (ids[t * top_k + j], want_ids[t * top_k + j]);
                        held[t * experts + a as usize] != held[t * experts + b as usize]
                    })
                })
                .count();
            r.route_weights = nan_max(r.route_weights, rel_err(&to_host(got.weights), &want_w));
        }
        // Random routings (distinct experts per token) for the grouping and the products.
        let ids: Vec<i64> = (0..tokens)
            .flat_map(|_| {
                let mut picks = Vec::new();
                while picks.len() < top_k {
                    let e = match rng.random_range(0.0f32..1.0) < skew / 5.0 {
                        true => rng.random_range(0..2),
                        false => rng.random_range(0..experts as i64),
                    };
                    if !picks.contains(&e) {
                        picks.push(e);
                    }
                }
                picks
            })
            .collect();
        let slots = moe_reference::slots_by_expert(&ids, experts);
        let counts: Vec<u32> = slots.iter().map(|s| s.len() as u32).collect();
        let sorted: Vec<u32> = slots.iter().flatten().map(|&s| s as u32).collect();
        r.crowded_cases += counts.iter().any(|&c| c as usize > ROWS_PER_CHUNK) as usize;
        r.idle_cases += counts.contains(&0) as usize;
        let ids_t =
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [tokens, top_k]), dev);
        match B::moe_group(ids_t.clone(), experts).map(|g| g.map(|t| host_ints(&t))) {
            Some([c, s, chunks]) => {
                let bad = |a: &[i64], b: &[u32]| {
                    a.len() != b.len() || a.iter().zip(b).any(|(x, y)| *x != *y as i64)
                };
                let want_chunks = host_chunks(&counts);
                let chunks_bad = want_chunks.iter().enumerate().any(|(i, w)| chunks[i] != *w)
                    || chunks[want_chunks.len()..].chunks(3).any(|c| c[2] != 0);
                let n = bad(&c, &counts) as usize + bad(&s, &sorted) as usize + chunks_bad as usize;
                r.group_mismatches = r.group_mismatches.map(|m| m + n);
            }
            None => r.group_mismatches = None,
        }
        let weights: Vec<f32> = (0..tokens * top_k)
            .map(|_| rng.random_range(0.1f32..1.0))
            .collect();
        let (weights, held_weights) = upload::<B, 2>(weights, [tokens, top_k], dev);
        let routing = Routing {
            experts: ids_t,
            weights,
        };
        let scale = |v: Vec<f32>| v.into_iter().map(|x| x * 0.2).collect::<Vec<_>>();
        let (gate_up, held_gate_up) = upload::<B, 3>(
            scale(random(&mut rng, experts * 2 * inter * hidden)),
            [experts, 2 * inter, hidden],
            dev,
        );
        let (down, held_down) = upload::<B, 3>(
            scale(random(&mut rng, experts * hidden * inter)),
            [experts, hidden, inter],
            dev,
        );
        let w = ExpertWeights { gate_up, down };
        let (x, held_x) = upload::<B, 2>(random(&mut rng, tokens * hidden), [tokens, hidden], dev);
        let host = host_experts(
            &held_x,
            &ids,
            &held_weights,
            &held_gate_up,
            &held_down,
            [hidden, inter, top_k],
        );
        let got = B::moe_experts(x.clone(), &routing, &w);
        if host_ints(&got.counts) != counts.iter().map(|&c| i64::from(c)).collect::<Vec<_>>() {
            r.group_mismatches = r.group_mismatches.map(|m| m + 1).or(Some(1));
        }
        let got_out = got.out;
        let got = to_host(got_out.clone());
        let want = to_host(moe_reference::experts(x.clone(), &routing, &w).out);
        let err = rel_err(&got, &host);
        r.experts = nan_max(r.experts, err);
        let reference_err = rel_err(&want, &host);
        r.reference = nan_max(r.reference, reference_err);
        let worst = worst_element(&got, &host, &ids, [hidden, top_k]);
        // NaN is off too.
        let within = err <= 1e-2;
        let replay = (!within).then(|| {
            let held = Held {
                x: &held_x,
                weights: &held_weights,
                host: &host,
                ids: &ids,
                gate_up: &held_gate_up,
                down: &held_down,
                dims: [hidden, inter, top_k],
            };
            replay(x.clone(), &routing, &w, got_out.clone(), held)
        });
        let padded = experts_padded_reference(x.clone(), &routing, &slots, &w);
        let sorted = experts_sorted(x.clone(), &routing, &slots, &w, grouped_reference, silu_mul);
        if let Some(sorted) = sorted {
            r.sorted = nan_max(r.sorted, rel_err(&to_host(sorted), &host));
        } else {
            r.sorted = f32::NAN;
        }
        // The engine's path on a cubecl backend (see `moe_experts`): the host-routed rows go
        // through cuBLAS's grouped GEMM on CUDA.
        let path = match (tokens * top_k <= kernel_max_rows * experts, &padded) {
            (true, _) => "kernel",
            (false, Some(_)) => "grouped on CUDA, else padded",
            (false, None) => "grouped on CUDA, else per_expert",
        };
        r.experts_by_case.push(MoeCase {
            name: format!(
                "{tokens} tokens, {experts} experts, top {top_k}, {hidden}x{inter}, {path}"
            ),
            err,
            reference_err,
            worst,
            replay,
        });
        if let Some(padded) = padded {
            r.padded = nan_max(r.padded, rel_err(&to_host(padded), &host));
            r.padded_cases += 1;
        }
    }
    r.route_weights = worst([r.route_weights]);
    r
}

/// Host softmax + top-k (ties to the lower id) of `logits` `[tokens, experts]`.
fn host_route(logits: &[f32], experts: usize, config: RouterConfig) -> (Vec<i64>, Vec<f32>) {
    let (mut ids, mut weights) = (Vec::new(), Vec::new());
    for row in logits.chunks(experts) {
        let max = row.iter().copied().fold(f32::MIN, f32::max);
        let total: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let mut order: Vec<usize> = (0..experts).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        let top: Vec<f32> = order[..config.top_k]
            .iter()
            .map(|&e| (row[e] - max).exp() / total)
            .collect();
        let sum: f32 = top.iter().sum();
        ids.extend(order[..config.top_k].iter().map(|&e| e as i64));
        weights.extend(top.iter().map(|p| match config.renormalize {
            true => p / sum,
            false => *p,
        }));
    }
    (ids, weights)
}

/// The experts' weighted sum in f32 on the host: `x` `[tokens, hidden]`, `ids` and `weights`
/// `[tokens, top_k]`, `gate_up` `[experts, 2 * inter, hidden]`, `down` `[experts, hidden, inter]`.
pub(super) fn host_experts(
    x: &[f32],
    ids: &[i64],
    weights: &[f32],
    gate_up: &[f32],
    down: &[f32],
    [hidden, inter, top_k]: [usize; 3],
) -> Vec<f32> {
    let held = Held {
        x,
        weights,
        host: &[],
        ids,
        gate_up,
        down,
        dims: [hidden, inter, top_k],
    };
    let (_, rows) = host_rows(&held);
    let mut out = vec![0.0; x.len()];
    for (s, row) in rows.chunks(hidden).enumerate() {
        let t = s / top_k;
        for (o, v) in out[t * hidden..(t + 1) * hidden].iter_mut().zip(row) {
            *o += v;
        }
    }
    out
}

/// What the host holds of a case's inputs and its f32 answer.
struct Held<'a> {
    x: &'a [f32],
    weights: &'a [f32],
    host: &'a [f32],
    ids: &'a [i64],
    gate_up: &'a [f32],
    down: &'a [f32],
    /// `[hidden, inter, top_k]`.
    dims: [usize; 3],
}

/// A failing case replayed, to tell a wrong product from wrong memory: the output read again,
/// the inputs read back (changed since upload?), the op run again on the same tensors, and on
/// fresh copies of them (new allocations).
fn replay<B: DevOps>(
    x: Tensor<B, 2>,
    routing: &Routing<B>,
    w: &ExpertWeights<B>,
    out: Tensor<B, 2>,
    held: Held<'_>,
) -> String {
    let err = |t: Tensor<B, 2>| rel_err(&to_host(t), held.host);
    let changed = |t: &Tensor<B, 2>, h: &[f32]| {
        let now = to_host(t.clone());
        now.iter()
            .zip(h)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count()
    };
    let again = err(out);
    let x_changed = changed(&x, held.x);
    let weights_changed = changed(&routing.weights, held.weights);
    let rerun = err(B::moe_experts(x.clone(), routing, w).out);
    let copy = |t: &Tensor<B, 2>| Tensor::<B, 2>::from_data(t.to_data(), &t.device());
    let fresh = Routing {
        experts: routing.experts.clone(),
        weights: copy(&routing.weights),
    };
    let fresh_err = err(B::moe_experts(copy(&x), &fresh, w).out);
    let flat = |t: &Tensor<B, 3>| t.clone().reshape([0, -1]);
    let experts_changed =
        changed(&flat(&w.gate_up), held.gate_up) + changed(&flat(&w.down), held.down);
    let mut line = format!(
        "read again rel {again:.2e}; since upload {x_changed} x, {weights_changed} routing weight \
         and {experts_changed} expert weight values changed; run again rel {rerun:.2e}; on fresh \
         copies rel {fresh_err:.2e}"
    );
    match B::moe_expert_rows(x, routing, w) {
        Ok([act, out]) => {
            let (want_act, want_out) = host_rows(&held);
            let [hidden, inter, _] = held.dims;
            line += &format!(
                "; expert kernel rows off: act {}, out {}",
                bad_rows(&to_host(act), &want_act, inter),
                bad_rows(&to_host(out), &want_out, hidden)
            );
        }
        Err(why) => line += &format!("; the expert kernels decline: {why}"),
    }
    line
}

/// Each routed slot's `silu(gate) * up` `[slots, inter]` and weighted down product `[slots,
/// hidden]`, in f32 on the host.
fn host_rows(held: &Held<'_>) -> (Vec<f32>, Vec<f32>) {
    let [hidden, inter, top_k] = held.dims;
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
    let (mut act, mut out) = (Vec::new(), Vec::new());
    for (s, &e) in held.ids.iter().enumerate() {
        let (e, t) = (e as usize, s / top_k);
        let row = &held.x[t * hidden..(t + 1) * hidden];
        let w = &held.gate_up[e * 2 * inter * hidden..(e + 1) * 2 * inter * hidden];
        let a: Vec<f32> = (0..inter)
            .map(|j| {
                let gate = dot(row, &w[j * hidden..(j + 1) * hidden]);
                let up = dot(row, &w[(inter + j) * hidden..(inter + j + 1) * hidden]);
                gate / (1.0 + (-gate).exp()) * up
            })
            .collect();
        let d = &held.down[e * hidden * inter..(e + 1) * hidden * inter];
        out.extend((0..hidden).map(|i| held.weights[s] * dot(&a, &d[i * inter..(i + 1) * inter])));
        act.extend(a);
    }
    (act, out)
}

/// The rows (of `width`) where `got` is off `want` by more than 1e-2 of `want`'s scale (NaN
/// counts as off), listed.
fn bad_rows(got: &[f32], want: &[f32], width: usize) -> String {
    let scale = want.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let rows: Vec<usize> = (0..want.len() / width)
        .filter(|&r| {
            (r * width..(r + 1) * width).any(|i| {
                (got[i] - want[i]).abs().partial_cmp(&(1e-2 * scale)) != Some(Ordering::Less)
            })
        })
        .collect();
    format!("{rows:?} of {}", want.len() / width)
}

/// The element of `got` furthest from `want` (`[tokens, hidden]`), described for a report.
fn worst_element(got: &[f32], want: &[f32], ids: &[i64], [hidden, top_k]: [usize; 2]) -> String {
    let diff = |i: usize| (got[i] - want[i]).abs();
    let Some(i) = (0..got.len()).max_by(|&a, &b| diff(a).total_cmp(&diff(b))) else {
        return String::new();
    };
    let scale = want.iter().fold(f32::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let (t, c) = (i / hidden, i % hidden);
    let row = t * hidden..(t + 1) * hidden;
    // NaN counts as off.
    let off = row
        .filter(|&j| diff(j).partial_cmp(&(1e-2 * scale)) != Some(Ordering::Less))
        .count();
    format!(
        "token {t} (experts {:?}), column {c}: {} against {}; {off} of its {hidden} columns off",
        &ids[t * top_k..(t + 1) * top_k],
        got[i],
        want[i]
    )
}

/// The chunks the grouping kernel should cut: `(expert, start, rows)` flat.
fn host_chunks(counts: &[u32]) -> Vec<i64> {
    let mut out = Vec::new();
    let mut start = 0;
    for (e, &n) in counts.iter().enumerate() {
        let mut r = 0;
        while r < n {
            out.extend([
                e as i64,
                (start + r) as i64,
                (n - r).min(ROWS_PER_CHUNK as u32) as i64,
            ]);
            r += ROWS_PER_CHUNK as u32;
        }
        start += n;
    }
    out
}
