//! Cascade attention in plain burn, the oracle of a cascade kernel: each group's decode queries
//! attend the prefix its sequences share ([`shared_prefixes`](super::prefix::shared_prefixes))
//! once, each sequence attends the rest of its context alone, and the two partial results are
//! merged by log-sum-exp. Equal to [`paged_attention_reference`](super::reference) on the same
//! step up to rounding.
use burn::tensor::{backend::Backend, DType, Int, Tensor, TensorData};

use super::plan::SeqAttn;
use super::prefix::SharedPrefix;

/// Decode attention (one query per sequence) of `q` `[seqs, heads, head_dim]` over the caches
/// `[slots, kv_heads, head_dim]`, with `prefixes` attended once per group. Softmax in f32;
/// returns `[seqs, heads, head_dim]`.
#[allow(clippy::too_many_arguments)]
pub fn cascade_attention_reference<B: Backend>(
    q: Tensor<B, 3>,
    k_cache: &Tensor<B, 3>,
    v_cache: &Tensor<B, 3>,
    seqs: &[SeqAttn],
    prefixes: &[SharedPrefix],
    block_size: usize,
    scale: f32,
) -> Tensor<B, 3> {
    assert!(
        seqs.iter().all(|s| s.q_len == 1),
        "cascade covers decode steps"
    );
    let device = q.device();
    let slot = |s: &SeqAttn, pos: usize| {
        s.block_table[pos / block_size] as usize * block_size + pos % block_size
    };
    let ints = |v: Vec<usize>| {
        let n = v.len();
        let v: Vec<i64> = v.into_iter().map(|x| x as i64).collect();
        Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), &device)
    };
    let attend = |rows: Vec<usize>, keys: Vec<usize>| {
        let keys = ints(keys);
        partial(
            q.clone().select(0, ints(rows)),
            k_cache.clone().select(0, keys.clone()),
            v_cache.clone().select(0, keys),
            scale,
        )
    };
    let mut prefix_of = vec![None; seqs.len()];
    for (g, p) in prefixes.iter().enumerate() {
        for (m, &s) in p.seqs.iter().enumerate() {
            prefix_of[s] = Some((g, m, p.tokens));
        }
    }
    let group_parts: Vec<_> = prefixes
        .iter()
        .map(|p| {
            let first = &seqs[p.seqs[0]];
            let keys = (0..p.tokens).map(|pos| slot(first, pos)).collect();
            attend(p.seqs.clone(), keys)
        })
        .collect();
    let rows = seqs
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = prefix_of[i].map_or(0, |(_, _, tokens)| tokens);
            let suffix = attend(
                vec![i],
                (start..s.ctx_len).map(|pos| slot(s, pos)).collect(),
            );
            match prefix_of[i] {
                None => suffix.0,
                Some((g, m, _)) => {
                    let (out, lse) = &group_parts[g];
                    let prefix = (out.clone().narrow(0, m, 1), lse.clone().narrow(0, m, 1));
                    merge(prefix, suffix)
                }
            }
        })
        .collect();
    Tensor::cat(rows, 0)
}

/// Every query of `q` `[n, heads, head_dim]` over all keys `k`, `v` `[keys, kv_heads,
/// head_dim]`: the normalised output `[n, heads, head_dim]` and the log-sum-exp of the scaled
/// scores `[n, heads]` (f32).
fn partial<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    scale: f32,
) -> (Tensor<B, 3>, Tensor<B, 2>) {
    let [n, heads, hd] = q.dims();
    let kv_heads = k.dims()[1];
    let group = heads / kv_heads;
    // Query head h uses KV head h / group (HF's repeat_kv).
    let q = q
        .reshape([n, kv_heads, group, hd])
        .permute([1, 0, 2, 3])
        .reshape([kv_heads, n * group, hd]);
    let (k, v) = (k.swap_dims(0, 1), v.swap_dims(0, 1)); // [kv_heads, keys, hd]
    let dtype = q.dtype();
    let scores = q.matmul(k.transpose()).cast(DType::F32).mul_scalar(scale);
    let max = scores.clone().max_dim(2);
    let lse = (scores.clone() - max.clone()).exp().sum_dim(2).log() + max;
    let out = (scores - lse.clone()).exp().cast(dtype).matmul(v);
    let back = |t: Tensor<B, 3>, width: usize| {
        t.reshape([kv_heads, n, group, width])
            .permute([1, 0, 2, 3])
            .reshape([n, heads, width])
    };
    (back(out, hd), back(lse, 1).reshape([n, heads]))
}

/// Two partial results over disjoint keys combined by their log-sum-exps.
fn merge<B: Backend>(
    a: (Tensor<B, 3>, Tensor<B, 2>),
    b: (Tensor<B, 3>, Tensor<B, 2>),
) -> Tensor<B, 3> {
    let ((out_a, lse_a), (out_b, lse_b)) = (a, b);
    let dtype = out_a.dtype();
    let max = lse_a.clone().max_pair(lse_b.clone());
    let (wa, wb) = ((lse_a - max.clone()).exp(), (lse_b - max).exp());
    let total = wa.clone() + wb.clone();
    let weight = |w: Tensor<B, 2>| (w / total.clone()).unsqueeze_dim::<3>(2);
    (out_a.cast(DType::F32) * weight(wa) + out_b.cast(DType::F32) * weight(wb)).cast(dtype)
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::Distribution;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;
    use crate::attention::prefix::shared_prefixes;
    use crate::attention::reference::{paged_attention_reference, ReferenceLayout};

    type B = NdArray<f32>;

    /// Random steps whose sequences share prefixes of several lengths (some of them ending
    /// mid-context, one group of one), against the paged reference.
    #[test]
    fn cascade_equals_paged_attention() {
        let device = Default::default();
        let mut rng = StdRng::seed_from_u64(5);
        let block_size = 4;
        for (kv_heads, group) in [(2, 1), (2, 2), (1, 4)] {
            let heads = kv_heads * group;
            let hd = 16;
            // Two families sharing 3 and 1 leading blocks, and a lone sequence.
            let mut next_block = 100u32;
            let mut fresh = |n: usize| -> Vec<u32> {
                (0..n)
                    .map(|_| {
                        next_block += 1;
                        next_block
                    })
                    .collect()
            };
            let (shared_a, shared_b) = (fresh(3), fresh(1));
            let mut tables = Vec::new();
            let mut ctx = Vec::new();
            for (shared, members) in [(&shared_a, 3), (&shared_b, 2), (&Vec::new(), 1)] {
                for _ in 0..members {
                    let len = shared.len() * block_size + rng.random_range(1..10);
                    let mut table = shared.clone();
                    table.extend(fresh(len.div_ceil(block_size) - shared.len()));
                    tables.push(table);
                    ctx.push(len);
                }
            }
            let seqs: Vec<SeqAttn> = tables
                .iter()
                .zip(&ctx)
                .map(|(t, &c)| SeqAttn {
                    q_len: 1,
                    ctx_len: c,
                    block_table: t,
                })
                .collect();
            let slots = (next_block as usize + 1) * block_size;
            let normal = Distribution::Normal(0.0, 1.0);
            let q = Tensor::<B, 3>::random([seqs.len(), heads, hd], normal, &device);
            let k = Tensor::<B, 3>::random([slots, kv_heads, hd], normal, &device);
            let v = Tensor::<B, 3>::random([slots, kv_heads, hd], normal, &device);
            let scale = (hd as f32).powf(-0.5);
            let prefixes = shared_prefixes(&seqs, block_size, 1, 1);
            // The lone sequence is a group of one where it holds a full block before its last key.
            assert!(prefixes.len() >= 2, "{prefixes:?}");
            let layout = ReferenceLayout::new(&seqs, block_size, &device);
            let want = paged_attention_reference(q.clone(), &k, &v, &layout, scale);
            let got = cascade_attention_reference(q, &k, &v, &seqs, &prefixes, block_size, scale);
            assert!(
                !got.clone().is_nan().any().into_scalar(),
                "NaN in the cascade output"
            );
            let err = (got - want).abs().max().into_scalar();
            assert!(
                err <= 1e-5,
                "kv_heads {kv_heads} group {group}: max error {err}"
            );
        }
    }
}
