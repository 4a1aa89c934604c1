//! Parity of the attention kernel against the plain-burn reference on random inputs, over
//! shapes chosen to hit the edges: one token, a block boundary, a context of exactly one block,
//! GQA ratios 1, 2, 4 and 8, head dims 64 and 128, split decode contexts, chunked prefill over a
//! cached prefix. Used by the wgpu test in CI (f32) and by `nanovllm kernels-check` on CUDA (bf16).
//!
//! The oracle runs on ndarray in f32 on the inputs as the kernel's backend stored them (bf16-
//! rounded on CUDA), so the comparison measures the kernel alone.
use burn::backend::NdArray;
use burn::tensor::{DType, Int, Tensor, TensorData};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use crate::attention::device_plan::KernelPlan;
use crate::attention::plan::{AttentionPlan, SeqAttn};
use crate::attention::reference::{paged_attention_reference, ReferenceLayout};
use crate::backends::{KernelBackend, KvWrite};
use crate::dev::ops::DevOps;
use crate::layers::HeadShape;
use crate::matmul::gemv::Prologue;
use crate::sample::DeviceSampling;
use crate::sample::{key_from_seed, sample_row_host, RowSampling};

/// One attention shape: `(q_len, ctx_len)` per sequence.
#[derive(Debug, Clone)]
pub struct ParityCase {
    pub name: &'static str,
    pub kv_heads: usize,
    pub group: usize,
    pub head_dim: usize,
    pub block_size: usize,
    pub seqs: Vec<(usize, usize)>,
    /// Unused ints after each row of the plan's arrays, as CUDA pitches them (see
    /// [`KernelPlan::with_row_padding`]); the planted fixed-width strides failed these cases.
    pub int_row_padding: usize,
    /// Query rows per prefill tile instead of the device's (64: tiles the plan must shrink to
    /// fit shared memory, and the tensor-core kernel at twice the rows).
    pub prefill_rows: Option<usize>,
}

/// How far the kernel landed from the reference on one case.
#[derive(Debug, Clone)]
pub struct ParityResult {
    pub name: &'static str,
    pub max_abs_err: f32,
    pub max_abs_ref: f32,
    /// `max_abs_err / max_abs_ref`.
    pub rel_err: f32,
    /// Whether the step split a decode context (and so ran the merge kernel).
    pub split: bool,
}

pub fn standard_cases() -> Vec<ParityCase> {
    let case = |name, kv_heads, group, head_dim, block_size, seqs| ParityCase {
        name,
        kv_heads,
        group,
        head_dim,
        block_size,
        seqs,
        int_row_padding: 0,
        prefill_rows: None,
    };
    let padded = |c: ParityCase, name| ParityCase {
        name,
        int_row_padding: 64,
        ..c
    };
    vec![
        case(
            "decode, edges, gqa 1",
            2,
            1,
            64,
            16,
            vec![(1, 1), (1, 16), (1, 17), (1, 33)],
        ),
        case("decode, long split, gqa 2", 2, 2, 128, 16, vec![(1, 2500)]),
        // Blocks shorter than a plane's chunk of keys: one block-table lookup per key.
        case(
            "decode, block 4, gqa 2",
            2,
            2,
            64,
            4,
            vec![(1, 45), (1, 3), (1, 700)],
        ),
        case(
            "decode, batch, gqa 4",
            2,
            4,
            128,
            16,
            vec![(1, 300), (1, 1517), (1, 64), (1, 2)],
        ),
        case(
            "decode, gqa 8",
            1,
            8,
            64,
            16,
            vec![(1, 1), (1, 2), (1, 600)],
        ),
        case(
            "prefill, gqa 2",
            2,
            2,
            64,
            16,
            vec![(37, 37), (16, 16), (1, 1)],
        ),
        case(
            "chunk over cached prefix, gqa 4",
            2,
            4,
            128,
            16,
            vec![(20, 100), (1, 50), (64, 64)],
        ),
        case("prefill, block 8, gqa 1", 2, 1, 128, 8, vec![(100, 130)]),
        case("prefill, gqa 8", 1, 8, 128, 16, vec![(5, 5), (33, 70)]),
        padded(
            case("", 2, 4, 128, 16, vec![(1, 1300), (1, 2100), (1, 40)]),
            "pitched int rows, decode split",
        ),
        padded(
            case("", 2, 2, 64, 16, vec![(1, 30), (9, 40)]),
            "pitched int rows, mixed",
        ),
        // 64 query rows per tile: head dim 64 runs them everywhere; head dim 128 on tensor
        // cores (its scalar tile exceeds lavapipe's shared memory, so it falls back to 32).
        ParityCase {
            prefill_rows: Some(64),
            ..case(
                "prefill, 64-row tiles, gqa 2",
                2,
                2,
                64,
                16,
                vec![(100, 130), (64, 64), (1, 20)],
            )
        },
        ParityCase {
            prefill_rows: Some(64),
            ..case(
                "prefill, 64-row tiles, head dim 128",
                2,
                4,
                128,
                16,
                vec![(150, 150), (33, 90)],
            )
        },
    ]
}

fn random(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Uploads `values` to `B` and reads them back as f32: the values `B` actually holds.
fn upload<B: KernelBackend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    dev: &B::Device,
) -> (Tensor<B, D>, Vec<f32>) {
    let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), dev);
    let held = to_host(t.clone());
    (t, held)
}

/// Runs one case with inputs drawn from `seed`.
pub fn run_case<B: DevOps>(case: &ParityCase, seed: u64, dev: &B::Device) -> ParityResult {
    let mut caps = B::kernel_caps(dev).expect("a backend with kernels");
    caps.prefill_rows = case.prefill_rows.unwrap_or(caps.prefill_rows);
    let mut rng = StdRng::seed_from_u64(seed);
    let bs = case.block_size;
    let heads = case.kv_heads * case.group;
    let hd = case.head_dim;
    // Blocks handed out in a random order, with spares, as the block manager would.
    let needed: usize = case.seqs.iter().map(|&(_, c)| c.div_ceil(bs)).sum();
    let mut blocks: Vec<u32> = (0..(needed + 3) as u32).collect();
    blocks.shuffle(&mut rng);
    let mut tables = Vec::new();
    let mut next = 0;
    for &(_, ctx) in &case.seqs {
        tables.push(blocks[next..next + ctx.div_ceil(bs)].to_vec());
        next += ctx.div_ceil(bs);
    }
    let seqs: Vec<SeqAttn> = case
        .seqs
        .iter()
        .zip(&tables)
        .map(|(&(q_len, ctx_len), t)| SeqAttn {
            q_len,
            ctx_len,
            block_table: t,
        })
        .collect();
    let tokens: usize = case.seqs.iter().map(|s| s.0).sum();
    let slots = blocks.len() * bs;
    let (q, q_host) = upload::<B, 3>(
        random(&mut rng, tokens * heads * hd),
        [tokens, heads, hd],
        dev,
    );
    let kv_shape = [slots, case.kv_heads, hd];
    let (k, k_host) = upload::<B, 3>(random(&mut rng, slots * case.kv_heads * hd), kv_shape, dev);
    let (v, v_host) = upload::<B, 3>(random(&mut rng, slots * case.kv_heads * hd), kv_shape, dev);
    let scale = 1.0 / (hd as f32).sqrt();

    let plan = AttentionPlan::new(&seqs, bs, case.group, hd, case.kv_heads, caps);
    let split = !plan.merges.is_empty();
    let plan = B::step_plan(KernelPlan::<B>::with_row_padding(
        plan,
        dev,
        case.int_row_padding,
    ))
    .expect("a backend with kernels");
    let got = to_host(B::paged_attention(q, &k, &v, &plan, scale));

    type Cpu = NdArray<f32>;
    let cpu = Default::default();
    let host = |v: Vec<f32>, shape: [usize; 3]| {
        Tensor::<Cpu, 3>::from_data(TensorData::new(v, shape), &cpu)
    };
    let layout = ReferenceLayout::<Cpu>::new(&seqs, bs, &cpu);
    let want = paged_attention_reference(
        host(q_host, [tokens, heads, hd]),
        &host(k_host, kv_shape),
        &host(v_host, kv_shape),
        &layout,
        scale,
    )
    .into_data()
    .to_vec::<f32>()
    .unwrap();
    assert_eq!(got.len(), want.len());
    let max_abs_err = worst(got.iter().zip(&want).map(|(a, b)| (a - b).abs()));
    let max_abs_ref = worst(want.iter().map(|v| v.abs()));
    ParityResult {
        name: case.name,
        max_abs_err,
        max_abs_ref,
        rel_err: max_abs_err / nan_max(max_abs_ref, f32::MIN_POSITIVE),
        split,
    }
}

/// How the fused decode launch agreed with the two launches it replaces.
#[derive(Debug, Clone)]
pub struct DecodeQkvParity {
    pub name: &'static str,
    /// Relative error of the attention output.
    pub out_err: f32,
    /// Relative error of the caches after the step (the new keys and values written).
    pub cache_err: f32,
    pub split: bool,
}

/// The fused decode launch ([`KernelBackend::decode_attention_qkv`]) against q/k norm + rotary
/// into the cache followed by attention, on decode-only steps from one fused projection: with
/// and without q/k norms, GQA 2 and 4, head dims 64 and 128, short and split contexts. Both
/// start from the same caches (shuffled blocks); the output and both caches are compared.
pub fn run_decode_qkv<B: DevOps>(seed: u64, dev: &B::Device) -> Vec<DecodeQkvParity> {
    let caps = B::kernel_caps(dev).expect("a backend with kernels");
    let mut rng = StdRng::seed_from_u64(seed);
    let (bs, eps) = (16, 1e-6);
    // (name, KV heads, group, head dim, q/k norms, contexts)
    type Case = (&'static str, usize, usize, usize, bool, &'static [usize]);
    let cases: [Case; 3] = [
        (
            "fused decode, q/k norm, gqa 2",
            2,
            2,
            64,
            true,
            &[1, 17, 300],
        ),
        ("fused decode, long split", 2, 2, 128, true, &[2500]),
        (
            "fused decode, rotary only, gqa 4",
            2,
            4,
            128,
            false,
            &[16, 64, 513, 2],
        ),
    ];
    let mut results = Vec::new();
    for (name, kv_heads, group, hd, with_norm, ctxs) in cases {
        let shape = HeadShape {
            heads: kv_heads * group,
            kv_heads,
            head_dim: hd,
        };
        let needed: usize = ctxs.iter().map(|c| c.div_ceil(bs)).sum();
        let mut blocks: Vec<u32> = (0..(needed + 2) as u32).collect();
        blocks.shuffle(&mut rng);
        let mut tables = Vec::new();
        for &ctx in ctxs {
            let used: usize = tables.iter().map(Vec::len).sum();
            tables.push(blocks[used..used + ctx.div_ceil(bs)].to_vec());
        }
        let seqs: Vec<SeqAttn> = ctxs
            .iter()
            .zip(&tables)
            .map(|(&ctx_len, t)| SeqAttn {
                q_len: 1,
                ctx_len,
                block_table: t,
            })
            .collect();
        let tokens = ctxs.len();
        let positions: Vec<i32> = ctxs.iter().map(|&c| c as i32 - 1).collect();
        let slot_ids: Vec<i32> = positions
            .iter()
            .zip(&tables)
            .map(|(&p, t)| (t[p as usize / bs] as usize * bs + p as usize % bs) as i32)
            .collect();
        let width = (shape.heads + 2 * kv_heads) * hd;
        let (qkv, _) = upload::<B, 2>(random(&mut rng, tokens * width), [tokens, width], dev);
        let kv_shape = [blocks.len() * bs, kv_heads, hd];
        let n_kv = kv_shape.iter().product();
        let (k_data, v_data) = (random(&mut rng, n_kv), random(&mut rng, n_kv));
        // Two copies of each cache: the kernels write them in place.
        let cache = |v: &Vec<f32>| upload::<B, 3>(v.clone(), kv_shape, dev).0;
        let (mut k_two, mut v_two, mut k_one, mut v_one) = (
            cache(&k_data),
            cache(&v_data),
            cache(&k_data),
            cache(&v_data),
        );
        let (half, max_pos) = (hd / 2, ctxs.iter().max().copied().unwrap_or(1));
        let angles: Vec<f32> = (0..max_pos * half)
            .map(|_| rng.random_range(0.0f32..6.3))
            .collect();
        let table = |f: fn(f32) -> f32| {
            let v: Vec<f32> = angles.iter().map(|&a| f(a)).collect();
            Tensor::<B, 2>::from_data(TensorData::new(v, [max_pos, half]), (dev, DType::F32))
        };
        let (cos, sin) = (table(f32::cos), table(f32::sin));
        let weight = |rng: &mut StdRng| {
            let w: Vec<f32> = (0..hd).map(|_| rng.random_range(0.5f32..1.5)).collect();
            upload::<B, 1>(w, [hd], dev).0
        };
        let (qw, kw) = (weight(&mut rng), weight(&mut rng));
        let norms = with_norm.then_some((&qw, &kw));
        let ints = |v: Vec<i32>| Tensor::<B, 1, Int>::from_data(TensorData::new(v, [tokens]), dev);
        let (pos, slots) = (ints(positions), ints(slot_ids));
        let scale = 1.0 / (hd as f32).sqrt();
        let plan = AttentionPlan::new(&seqs, bs, group, hd, kv_heads, caps);
        let split = !plan.merges.is_empty();
        let plan = B::step_plan(KernelPlan::<B>::new(plan, dev)).expect("a backend with kernels");

        let into_cache = KvWrite {
            k_cache: &mut k_two,
            v_cache: &mut v_two,
            slots: &slots,
        };
        let q = B::qk_norm_rope_into_cache(
            qkv.clone(),
            norms,
            &cos,
            &sin,
            &pos,
            shape,
            eps,
            into_cache,
        );
        let want = to_host(B::paged_attention(q, &k_two, &v_two, &plan, scale));
        let got = B::decode_attention_qkv(
            &qkv,
            norms,
            (&cos, &sin),
            eps,
            (&mut k_one, &mut v_one),
            &plan,
            scale,
        )
        .unwrap_or_else(|| {
            panic!(
                "{name}: the fused decode did not take the step (kernels.decode_qkv_max_rows = 0?)"
            )
        });
        let cache_err = nan_max(
            rel_err(&to_host(k_one), &to_host(k_two)),
            rel_err(&to_host(v_one), &to_host(v_two)),
        );
        results.push(DecodeQkvParity {
            name,
            out_err: rel_err(&to_host(got), &want),
            cache_err,
            split,
        });
    }
    results
}

/// How the device sampler agreed with its host twin.
#[derive(Debug, Clone)]
pub struct SamplingParity {
    pub greedy_rows: usize,
    pub greedy_mismatches: usize,
    pub sampled_rows: usize,
    /// Rows where device and host picked different tokens: only possible when two noised
    /// scores tie within the rounding of `ln` on the two sides.
    pub sampled_mismatches: usize,
    /// Frequency ratio of two tokens whose probabilities are 2:1 (should be near 2).
    pub two_to_one_ratio: f64,
}

/// Device sampling against [`sample_row_host`] on random logits (an odd vocabulary size), and
/// the frequencies of many draws against softmax.
pub fn run_sampling<B: DevOps>(seed: u64, dev: &B::Device) -> SamplingParity {
    let mut rng = StdRng::seed_from_u64(seed);
    let (rows, vocab) = (64, 4999);
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.random_range(-6.0f32..6.0))
        .collect();
    let params: Vec<RowSampling> = (0..rows)
        .map(|r| RowSampling {
            temperature: if r % 2 == 0 {
                0.0
            } else {
                rng.random_range(0.3..1.5)
            },
            key: key_from_seed(rng.random()),
            step: rng.random_range(0..5000),
        })
        .collect();
    let (t, held) = upload::<B, 2>(logits, [rows, vocab], dev);
    let got = ids(B::sample_rows(t, &DeviceSampling::new(&params, dev)));
    let (mut greedy_mismatches, mut sampled_mismatches) = (0, 0);
    for (r, p) in params.iter().enumerate() {
        let want = sample_row_host(&held[r * vocab..(r + 1) * vocab], *p);
        if got[r] != want {
            match p.temperature == 0.0 {
                true => greedy_mismatches += 1,
                false => sampled_mismatches += 1,
            }
        }
    }
    // p(1) / p(0) = 2 at temperature 1; the other tokens are far below.
    let draws = 4000;
    let mut row = vec![-30.0f32; 8];
    row[0] = 0.0;
    row[1] = 2.0f32.ln();
    let many: Vec<f32> = (0..draws).flat_map(|_| row.clone()).collect();
    let params: Vec<RowSampling> = (0..draws)
        .map(|i| RowSampling {
            temperature: 1.0,
            key: 12345,
            step: i as u32,
        })
        .collect();
    let t = Tensor::<B, 2>::from_data(TensorData::new(many, [draws, 8]), dev);
    let picks = ids(B::sample_rows(t, &DeviceSampling::new(&params, dev)));
    let count = |tok| picks.iter().filter(|&&p| p == tok).count() as f64;
    SamplingParity {
        greedy_rows: rows / 2,
        greedy_mismatches,
        sampled_rows: rows / 2,
        sampled_mismatches,
        two_to_one_ratio: count(1) / count(0).max(1.0),
    }
}

fn ids<B: KernelBackend>(t: Tensor<B, 1, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}

/// `store_kv` against a host scatter: random K and V for tokens with distinct random slots
/// (a strided V, as the decoder's narrow of the fused qkv gives). Returns the max abs error.
pub fn run_store_kv<B: DevOps>(seed: u64, dev: &B::Device) -> f32 {
    let mut rng = StdRng::seed_from_u64(seed);
    let (slots, kv_heads, hd, tokens) = (64, 2, 64, 13);
    let mut order: Vec<usize> = (0..slots).collect();
    order.shuffle(&mut rng);
    let targets = &order[..tokens];
    let width = kv_heads * hd;
    let (mut k_cache, mut want_k) =
        upload::<B, 3>(random(&mut rng, slots * width), [slots, kv_heads, hd], dev);
    let (mut v_cache, mut want_v) =
        upload::<B, 3>(random(&mut rng, slots * width), [slots, kv_heads, hd], dev);
    let (k, k_host) = upload::<B, 3>(
        random(&mut rng, tokens * width),
        [tokens, kv_heads, hd],
        dev,
    );
    // V as the right half of a [tokens, 2 * width] tensor: a strided view.
    let (kv, kv_host) = upload::<B, 3>(
        random(&mut rng, tokens * 2 * width),
        [tokens, 2 * kv_heads, hd],
        dev,
    );
    let v = kv.narrow(1, kv_heads, kv_heads);
    for (t, &slot) in targets.iter().enumerate() {
        want_k[slot * width..(slot + 1) * width]
            .copy_from_slice(&k_host[t * width..(t + 1) * width]);
        want_v[slot * width..(slot + 1) * width]
            .copy_from_slice(&kv_host[t * 2 * width + width..(t + 1) * 2 * width]);
    }
    let ids: Vec<i32> = targets.iter().map(|&s| s as i32).collect();
    let ids = Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [tokens]), dev);
    let cache = KvWrite {
        k_cache: &mut k_cache,
        v_cache: &mut v_cache,
        slots: &ids,
    };
    B::store_kv(cache, k, v);
    let err = |got: Vec<f32>, want: &[f32]| worst(got.iter().zip(want).map(|(a, b)| (a - b).abs()));
    nan_max(
        err(to_host(k_cache), &want_k),
        err(to_host(v_cache), &want_v),
    )
}

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

fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let err = worst(got.iter().zip(want).map(|(a, b)| (a - b).abs()));
    err / nan_max(f32::MIN_POSITIVE, worst(want.iter().map(|v| v.abs())))
}

/// The larger of two errors, NaN when either is: `f32::max` drops NaN, which would let a
/// kernel that writes NaN pass.
pub fn nan_max(a: f32, b: f32) -> f32 {
    match a.is_nan() || b.is_nan() {
        true => f32::NAN,
        false => a.max(b),
    }
}

/// The largest of `errs` (0 when empty), NaN when any is.
pub fn worst(errs: impl IntoIterator<Item = f32>) -> f32 {
    errs.into_iter().fold(0.0, nan_max)
}

fn host_rms(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let inv = 1.0 / (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32 + eps).sqrt();
    x.iter().zip(w).map(|(v, w)| v * inv * w).collect()
}

fn to_host<B: KernelBackend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.cast(DType::F32)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap()
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
