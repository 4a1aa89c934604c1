//! Paged attention on host arrays: the CPU engine's attention. The plain-burn reference pads
//! every sequence to the step's longest query and context and gathers through burn-ndarray ops
//! that copy (a mixed step of one 512-token chunk and nine decodes scores ten 512-row blocks);
//! here each (sequence, KV head) gathers only its own rows and multiplies them in place.
//! Checked against [`paged_attention_reference`](crate::paged_attention_reference).
use ndarray::{s, Array2, Array3, ArrayView3, Axis};
use rayon::prelude::*;

use crate::attention::plan::SeqAttn;

/// One sequence of a step, as attention sees it (an owned [`SeqAttn`]).
struct HostSeq {
    first_row: usize,
    q_len: usize,
    ctx_len: usize,
    block_table: Vec<u32>,
}

/// One step's sequences for [`host_attention`], built once and shared by every layer.
pub struct HostLayout {
    seqs: Vec<HostSeq>,
    block_size: usize,
}

impl HostLayout {
    pub fn new(seqs: &[SeqAttn], block_size: usize) -> Self {
        let mut first_row = 0;
        let seqs = seqs
            .iter()
            .enumerate()
            .map(|(b, s)| {
                assert!(
                    s.q_len >= 1 && s.q_len <= s.ctx_len,
                    "sequence {b}: bad q_len"
                );
                let seq = HostSeq {
                    first_row,
                    q_len: s.q_len,
                    ctx_len: s.ctx_len,
                    block_table: s.block_table.to_vec(),
                };
                first_row += s.q_len;
                seq
            })
            .collect();
        Self { seqs, block_size }
    }
}

/// Packed queries `q` `[tokens, heads, head_dim]` over the caches `[slots, kv_heads, head_dim]`;
/// returns `[tokens, heads, head_dim]`. Query head `h` reads KV head `h / group` (HF's repeat_kv).
pub fn host_attention(
    q: ArrayView3<f32>,
    k_cache: ArrayView3<f32>,
    v_cache: ArrayView3<f32>,
    layout: &HostLayout,
    scale: f32,
) -> Array3<f32> {
    let (tokens, heads, head_dim) = q.dim();
    let kv_heads = k_cache.dim().1;
    let group = heads / kv_heads;
    let work: Vec<(usize, usize)> = (0..layout.seqs.len())
        .flat_map(|b| (0..kv_heads).map(move |kv| (b, kv)))
        .collect();
    let blocks: Vec<Array2<f32>> = work
        .par_iter()
        .map(|&(b, kv)| {
            let seq = &layout.seqs[b];
            let keys = gather_rows(k_cache, seq, kv, layout.block_size);
            let values = gather_rows(v_cache, seq, kv, layout.block_size);
            // Rows ordered (head in group, query): one product serves the whole group.
            let mut queries = Array2::zeros((group * seq.q_len, head_dim));
            for g in 0..group {
                let rows = q.slice(s![
                    seq.first_row..seq.first_row + seq.q_len,
                    kv * group + g,
                    ..
                ]);
                queries
                    .slice_mut(s![g * seq.q_len..(g + 1) * seq.q_len, ..])
                    .assign(&rows);
            }
            let mut scores = queries.dot(&keys.t());
            for (r, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
                // Query i sits at position ctx - q_len + i and sees keys up to it.
                let visible = seq.ctx_len - seq.q_len + r % seq.q_len + 1;
                softmax_prefix(row.as_slice_mut().expect("scores are rows"), visible, scale);
            }
            scores.dot(&values)
        })
        .collect();
    let mut out = Array3::zeros((tokens, heads, head_dim));
    for (&(b, kv), block) in work.iter().zip(&blocks) {
        let seq = &layout.seqs[b];
        for g in 0..group {
            out.slice_mut(s![
                seq.first_row..seq.first_row + seq.q_len,
                kv * group + g,
                ..
            ])
            .assign(&block.slice(s![g * seq.q_len..(g + 1) * seq.q_len, ..]));
        }
    }
    out
}

/// The `ctx_len` cached rows of KV head `kv` for one sequence, `[ctx_len, head_dim]`, copied
/// block by block (a block's slots are consecutive rows of the cache).
fn gather_rows(cache: ArrayView3<f32>, seq: &HostSeq, kv: usize, block_size: usize) -> Array2<f32> {
    let mut rows = Array2::zeros((seq.ctx_len, cache.dim().2));
    for (i, &block) in seq.block_table.iter().enumerate() {
        let start = i * block_size;
        if start >= seq.ctx_len {
            break;
        }
        let len = block_size.min(seq.ctx_len - start);
        let slot = block as usize * block_size;
        rows.slice_mut(s![start..start + len, ..])
            .assign(&cache.slice(s![slot..slot + len, kv, ..]));
    }
    rows
}

/// Scaled softmax over the first `visible` entries of `row`; the rest become 0.
fn softmax_prefix(row: &mut [f32], visible: usize, scale: f32) {
    let (seen, hidden) = row.split_at_mut(visible);
    seen.iter_mut().for_each(|x| *x *= scale);
    let max = seen.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let mut sum = 0.0;
    for x in seen.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    seen.iter_mut().for_each(|x| *x /= sum);
    hidden.fill(0.0);
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Distribution, Tensor};

    use crate::{paged_attention_reference, HostLayout, KernelBackend, ReferenceLayout, SeqAttn};

    type B = NdArray<f32>;

    /// Decodes, a chunk over a cached prefix, a whole prefill and a sequence of exactly one
    /// block, with scattered blocks and GQA: the host path equals the plain-burn reference.
    #[test]
    fn host_attention_matches_the_reference() {
        let device = Default::default();
        let (heads, kv_heads, head_dim, block_size) = (8, 2, 16, 4);
        let tables: [&[u32]; 4] = [&[7, 2, 5], &[0, 3, 9, 1], &[4], &[6, 8, 10, 11]];
        let shapes = [(1, 10), (5, 13), (4, 4), (14, 14)];
        let seqs: Vec<SeqAttn> = tables
            .iter()
            .zip(shapes)
            .map(|(table, (q_len, ctx_len))| SeqAttn {
                q_len,
                ctx_len,
                block_table: table,
            })
            .collect();
        let tokens: usize = shapes.iter().map(|s| s.0).sum();
        let random = |dims: [usize; 3]| {
            Tensor::<B, 3>::random(dims, Distribution::Normal(0.0, 1.0), &device)
        };
        let q = random([tokens, heads, head_dim]);
        let k = random([12 * block_size, kv_heads, head_dim]);
        let v = random([12 * block_size, kv_heads, head_dim]);
        let scale = 0.25;
        let host = B::paged_attention(
            q.clone(),
            &k,
            &v,
            &HostLayout::new(&seqs, block_size),
            scale,
        );
        let reference = paged_attention_reference(
            q,
            &k,
            &v,
            &ReferenceLayout::new(&seqs, block_size, &device),
            scale,
        );
        assert!(
            !host.clone().is_nan().any().into_scalar(),
            "NaN in the host output"
        );
        let diff = (host - reference.clone()).abs().max().into_scalar();
        let size = reference.abs().max().into_scalar();
        assert!(size > 0.1, "outputs are not trivially zero");
        assert!(
            diff < 1e-5,
            "host attention differs from the reference by {diff}"
        );
    }
}
