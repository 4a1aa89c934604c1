//! Paged attention, the fused decode launch and `store_kv` against their references.
use burn::backend::NdArray;
use burn::tensor::{DType, Int, Tensor, TensorData};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

use crate::attention::device_plan::KernelPlan;
use crate::attention::plan::{AttentionPlan, SeqAttn, MERGE_FIELDS};
use crate::attention::prefix::SharedPrefix;
use crate::attention::reference::{paged_attention_reference, ReferenceLayout};
use crate::backends::KvWrite;
use crate::dev::ops::DevOps;
use crate::layers::HeadShape;

use super::{nan_max, random, rel_err, to_host, upload, worst};

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
    /// Cascade attention's groups: `(prefix tokens, sequences)`. The members' tables share
    /// the blocks that hold the prefix; the step is planned with these prefixes.
    pub prefixes: Vec<(usize, Vec<usize>)>,
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
    /// Whether the step attended shared prefixes once per group (cascade).
    pub cascade: bool,
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
        prefixes: Vec::new(),
    };
    let cascade = |c: ParityCase, prefixes| ParityCase { prefixes, ..c };
    let many: Vec<(usize, usize)> = (0..64).map(|i| (1, 1024 + 1 + (i * 7) % 40)).collect();
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
        // Decode rows of a mixed step split their long contexts like a decode-only step's;
        // the last row is a prefix-cache hit that left one prompt token.
        case(
            "mixed, decode split, gqa 4",
            2,
            4,
            128,
            16,
            vec![(1, 2500), (30, 200), (1, 40), (1, 1100)],
        ),
        padded(
            case("", 2, 4, 128, 16, vec![(1, 1300), (1, 2100), (1, 40)]),
            "pitched int rows, decode split",
        ),
        padded(
            case("", 2, 2, 64, 16, vec![(17, 900), (1, 1800)]),
            "pitched int rows, mixed split",
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
        cascade(
            case(
                "cascade, 64 rows, 1k prefix, gqa 2",
                2,
                2,
                128,
                16,
                many.clone(),
            ),
            vec![(1024, (0..64).collect())],
        ),
        cascade(
            case(
                "cascade, prefix ends mid-block, gqa 4",
                2,
                4,
                64,
                16,
                vec![(1, 60), (1, 45), (1, 38)],
            ),
            vec![(37, vec![0, 1, 2])],
        ),
        cascade(
            case(
                "cascade, two groups, chunk, lone, gqa 1",
                2,
                1,
                64,
                16,
                vec![(1, 300), (1, 290), (9, 200), (1, 310), (1, 100), (1, 350)],
            ),
            vec![(256, vec![0, 1, 3]), (96, vec![4, 5])],
        ),
        cascade(
            case(
                "cascade, one sequence, split suffix",
                2,
                2,
                128,
                16,
                vec![(1, 3000)],
            ),
            vec![(1000, vec![0])],
        ),
        cascade(
            padded(
                case("", 2, 4, 128, 16, many[..20].to_vec()),
                "pitched int rows, cascade",
            ),
            vec![(1024, (0..20).collect())],
        ),
    ]
}

/// Runs one case with inputs drawn from `seed`.
pub fn run_case<B: DevOps>(case: &ParityCase, seed: u64, dev: &B::Device) -> ParityResult {
    let mut caps = B::kernel_caps(dev).expect("a backend with kernels");
    caps.prefill_rows = case.prefill_rows.unwrap_or(caps.prefill_rows);
    let mut rng = StdRng::seed_from_u64(seed);
    let bs = case.block_size;
    let heads = case.kv_heads * case.group;
    let hd = case.head_dim;
    // Blocks handed out in a random order, with spares, as the block manager would; a
    // group's members share the blocks that hold its prefix.
    let needed: usize = case.seqs.iter().map(|&(_, c)| c.div_ceil(bs)).sum();
    let mut blocks: Vec<u32> = (0..(needed + 3) as u32).collect();
    blocks.shuffle(&mut rng);
    let mut next = 0;
    let mut take = |n: usize| {
        next += n;
        blocks[next - n..next].to_vec()
    };
    let mut tables: Vec<Vec<u32>> = vec![Vec::new(); case.seqs.len()];
    for (tokens, members) in &case.prefixes {
        let shared = take(tokens.div_ceil(bs));
        for &m in members {
            tables[m] = shared.clone();
        }
    }
    for (table, &(_, ctx)) in tables.iter_mut().zip(&case.seqs) {
        let own = take(ctx.div_ceil(bs) - table.len());
        table.extend(own);
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

    let prefixes: Vec<SharedPrefix> = case
        .prefixes
        .iter()
        .map(|(tokens, members)| SharedPrefix {
            seqs: members.clone(),
            tokens: *tokens,
        })
        .collect();
    let plan =
        AttentionPlan::with_prefixes(&seqs, bs, case.group, hd, case.kv_heads, caps, &prefixes);
    let split = plan.merges.len() > MERGE_FIELDS * plan.cascaded_rows;
    let cascade = plan.cascaded_rows > 0;
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
        cascade,
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
