//! The layer ops and projections against host arithmetic in f32.
use burn::tensor::{DType, Int, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::backends::KvWrite;
use crate::dev::ops::DevOps;
use crate::layers::HeadShape;
use crate::matmul::gemv::Prologue;

use super::{host_rms, nan_max, random, rel_err, to_host, upload, worst};

/// Relative errors of the fused layer kernels against host arithmetic in f32.
#[derive(Debug, Clone)]
pub struct LayerParity {
    pub rms_norm: f32,
    pub add_rms_norm: f32,
    pub qk_norm_rope: f32,
    pub rope_without_norm: f32,
    /// `qk_norm_rope_into_cache` against `qk_norm_rope` then a scatter into the cache.
    pub rope_into_cache: f32,
    pub silu_mul: f32,
    /// `project` at 1, 3, 40 and 300 rows on transposed weights: the worst of the four.
    pub project: f32,
    /// `fused_project` with each prologue at 1, 3 and 8 rows, the residual sum included:
    /// the worst case, infinite when the backend's kernel did not take a case it should.
    pub fused_project: f32,
}

/// RMSNorm (with and without the residual add), q/k norm + rotary embedding (with and without
/// the norms; GQA; odd token count), and SiLU·mul, on random inputs.
pub fn run_layers<B: DevOps>(seed: u64, dev: &B::Device) -> LayerParity {
    let mut rng = StdRng::seed_from_u64(seed);
    let eps = 1e-6;
    let (rows, n) = (5, 1000);
    let (x, xh) = upload::<B, 2>(random(&mut rng, rows * n), [rows, n], dev);
    let (r, rh) = upload::<B, 2>(random(&mut rng, rows * n), [rows, n], dev);
    let (w, wh) = upload::<B, 1>(random(&mut rng, n), [n], dev);
    let want: Vec<f32> = (0..rows)
        .flat_map(|i| host_rms(&xh[i * n..(i + 1) * n], &wh, eps))
        .collect();
    let rms_norm = rel_err(&to_host(B::rms_norm(x.clone(), &w, eps)), &want);
    let sum: Vec<f32> = xh.iter().zip(&rh).map(|(a, b)| a + b).collect();
    let (got_sum, got_norm) = B::add_rms_norm(x, r, &w, eps);
    let want: Vec<f32> = (0..rows)
        .flat_map(|i| host_rms(&sum[i * n..(i + 1) * n], &wh, eps))
        .collect();
    let add_rms_norm = nan_max(
        rel_err(&to_host(got_sum), &sum),
        rel_err(&to_host(got_norm), &want),
    );

    let shape = HeadShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 64,
    };
    let (tokens, hd, half) = (3, 64, 32);
    let width = (shape.heads + 2 * shape.kv_heads) * hd;
    let (qkv, qkvh) = upload::<B, 2>(random(&mut rng, tokens * width), [tokens, width], dev);
    let positions: Vec<i32> = vec![0, 7, 19];
    let max_pos = 20;
    let angles: Vec<f32> = (0..max_pos * half)
        .map(|_| rng.random_range(0.0f32..6.3))
        .collect();
    let table = |f: fn(f32) -> f32| {
        let v: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
        Tensor::<B, 2>::from_data(
            TensorData::new(v.clone(), [max_pos, half]),
            (dev, DType::F32),
        )
    };
    let (cos, sin) = (table(f32::cos), table(f32::sin));
    let pos = Tensor::<B, 1, Int>::from_data(TensorData::new(positions.clone(), [tokens]), dev);
    let (qw, qwh) = upload::<B, 1>(random(&mut rng, hd), [hd], dev);
    let (kw, kwh) = upload::<B, 1>(random(&mut rng, hd), [hd], dev);
    let mut rope_err = [0.0f32; 2];
    for (i, with_norm) in [true, false].into_iter().enumerate() {
        let norms = with_norm.then_some((&qw, &kw));
        let (q, k, v) = B::qk_norm_rope(qkv.clone(), norms, &cos, &sin, &pos, shape, eps);
        let got: Vec<f32> = [to_host(q), to_host(k), to_host(v)].concat();
        let mut want = Vec::new();
        for kind in 0..3 {
            let (first, count) = match kind {
                0 => (0, shape.heads),
                1 => (shape.heads, shape.kv_heads),
                _ => (shape.heads + shape.kv_heads, shape.kv_heads),
            };
            for t in 0..tokens {
                for h in first..first + count {
                    let x = &qkvh[t * width + h * hd..t * width + (h + 1) * hd];
                    if kind == 2 {
                        want.extend_from_slice(x);
                        continue;
                    }
                    let x = match with_norm {
                        true => host_rms(x, if kind == 0 { &qwh } else { &kwh }, eps),
                        false => x.to_vec(),
                    };
                    let p = positions[t] as usize;
                    let (c, s) = (
                        |j: usize| angles[p * half + j].cos(),
                        |j: usize| angles[p * half + j].sin(),
                    );
                    want.extend((0..half).map(|j| x[j] * c(j) - x[j + half] * s(j)));
                    want.extend((0..half).map(|j| x[j + half] * c(j) + x[j] * s(j)));
                }
            }
        }
        rope_err[i] = rel_err(&got, &want);
    }

    // The same with k and v written straight into a paged cache at shuffled slots: q, k and v
    // as above, and the slots no token maps to left untouched.
    let (n_slots, kv_row) = (6, shape.kv_heads * hd);
    let slot_of = [5usize, 0, 3];
    let zeros = || Tensor::<B, 3>::zeros([n_slots, shape.kv_heads, hd], dev);
    let (mut k_cache, mut v_cache) = (zeros(), zeros());
    let slot_ids: Vec<i32> = slot_of.iter().map(|&s| s as i32).collect();
    let slots = Tensor::<B, 1, Int>::from_data(TensorData::new(slot_ids, [tokens]), dev);
    let norms = Some((&qw, &kw));
    let (q, k, v) = B::qk_norm_rope(qkv.clone(), norms, &cos, &sin, &pos, shape, eps);
    let cache = KvWrite {
        k_cache: &mut k_cache,
        v_cache: &mut v_cache,
        slots: &slots,
    };
    let q_fused = B::qk_norm_rope_into_cache(qkv, norms, &cos, &sin, &pos, shape, eps, cache);
    let scatter = |rows: Vec<f32>| {
        let mut want = vec![0.0f32; n_slots * kv_row];
        for (t, &slot) in slot_of.iter().enumerate() {
            want[slot * kv_row..(slot + 1) * kv_row]
                .copy_from_slice(&rows[t * kv_row..(t + 1) * kv_row]);
        }
        want
    };
    let rope_into_cache = worst([
        rel_err(&to_host(q_fused), &to_host(q)),
        rel_err(&to_host(k_cache), &scatter(to_host(k))),
        rel_err(&to_host(v_cache), &scatter(to_host(v))),
    ]);

    let inter = 300;
    let (gu, guh) = upload::<B, 2>(
        random(&mut rng, tokens * 2 * inter),
        [tokens, 2 * inter],
        dev,
    );
    let want: Vec<f32> = (0..tokens)
        .flat_map(|t| {
            let row = &guh[t * 2 * inter..(t + 1) * 2 * inter];
            (0..inter).map(move |j| row[j] / (1.0 + (-row[j]).exp()) * row[inter + j])
        })
        .collect();
    let silu_mul = rel_err(&to_host(B::silu_mul(gu)), &want);

    // Every row class of `project` (vector-matrix, small tiles, cuBLAS on CUDA), on widths
    // whose output rows cubecl may pad (192).
    let mut project = 0f32;
    for (m, k, n) in [(1, 300, 77), (3, 300, 77), (40, 64, 192), (300, 128, 77)] {
        let (x, xh) = upload::<B, 2>(random(&mut rng, m * k), [m, k], dev);
        let (w_nk, wh) = upload::<B, 2>(random(&mut rng, n * k), [n, k], dev);
        let want: Vec<f32> = (0..m)
            .flat_map(|i| {
                let (xh, wh) = (&xh, &wh);
                (0..n).map(move |j| (0..k).map(|l| xh[i * k + l] * wh[j * k + l]).sum::<f32>())
            })
            .collect();
        project = nan_max(
            project,
            rel_err(&to_host(B::project(x, &w_nk.transpose())), &want),
        );
    }
    LayerParity {
        rms_norm,
        add_rms_norm,
        qk_norm_rope: rope_err[0],
        rope_without_norm: rope_err[1],
        rope_into_cache,
        silu_mul,
        project,
        fused_project: run_fused_project::<B>(&mut rng, dev),
    }
}

/// See [`LayerParity::fused_project`]; `NAN`-free inputs, so any miss shows as an error.
fn run_fused_project<B: DevOps>(rng: &mut StdRng, dev: &B::Device) -> f32 {
    let eps = 1e-6;
    let mut largest = 0f32;
    for (m, k, n) in [(1, 512, 40), (3, 512, 77), (8, 256, 130)] {
        let (w_nk, wh) = upload::<B, 2>(random(rng, n * k), [n, k], dev);
        let w = w_nk.transpose();
        let (nw, nwh) = upload::<B, 1>(random(rng, k), [k], dev);
        for kind in 0..4 {
            let cols = if kind == 3 { 2 * k } else { k };
            let (x, xh) = upload::<B, 2>(random(rng, m * cols), [m, cols], dev);
            let (r, rh) = upload::<B, 2>(random(rng, m * k), [m, k], dev);
            let row = |i: usize| &xh[i * cols..(i + 1) * cols];
            let sum: Vec<f32> = xh.iter().zip(&rh).map(|(a, b)| a + b).collect();
            let act: Vec<f32> = (0..m)
                .flat_map(|i| match kind {
                    0 => row(i).to_vec(),
                    1 => host_rms(row(i), &nwh, eps),
                    2 => host_rms(&sum[i * k..(i + 1) * k], &nwh, eps),
                    _ => (0..k)
                        .map(|j| row(i)[j] / (1.0 + (-row(i)[j]).exp()) * row(i)[k + j])
                        .collect(),
                })
                .collect();
            let want: Vec<f32> = (0..m)
                .flat_map(|i| {
                    let (act, wh) = (&act, &wh);
                    (0..n).map(move |j| (0..k).map(|l| act[i * k + l] * wh[j * k + l]).sum())
                })
                .collect();
            let prologue = match kind {
                0 => Prologue::Plain,
                3 => Prologue::SiluMul,
                _ => Prologue::RmsNorm {
                    residual: (kind == 2).then_some(&r),
                    weight: &nw,
                    eps,
                },
            };
            let err = match B::fused_project(&x, prologue, &w) {
                None => f32::INFINITY,
                Some((out, got_sum)) => {
                    let sum_err = match (kind, got_sum) {
                        (2, Some(s)) => rel_err(&to_host(s), &sum),
                        (2, None) => f32::INFINITY,
                        (_, None) => 0.0,
                        (_, Some(_)) => f32::INFINITY,
                    };
                    nan_max(rel_err(&to_host(out), &want), sum_err)
                }
            };
            largest = nan_max(largest, err);
        }
    }
    largest
}
