//! Paged attention on host arrays: the CPU engine's attention. The plain-burn reference pads
//! every sequence to the step's longest query and context and gathers through burn-ndarray ops
//! that copy (a mixed step of one 512-token chunk and nine decodes scores ten 512-row blocks);
//! here each (sequence, KV head) gathers only its own rows and multiplies them in place.
//! Checked against [`paged_attention_reference`](crate::paged_attention_reference).
use ndarray::{s, Array2, Array3, ArrayView3, Axis};
use rayon::prelude::*;

use crate::attention::plan::SeqAttn;
use crate::attention::prefix::SharedPrefix;

/// One sequence of a step, as attention sees it (an owned [`SeqAttn`]).
struct HostSeq {
    first_row: usize,
    q_len: usize,
    ctx_len: usize,
    block_table: Vec<u32>,
    /// Its own keys start here; the keys before it are a shared prefix attended with its group.
    kv_start: usize,
    /// Its group in [`HostLayout::prefixes`] and its place there.
    prefix: Option<(usize, usize)>,
}

/// One step's sequences for [`host_attention`], built once and shared by every layer.
pub struct HostLayout {
    seqs: Vec<HostSeq>,
    /// Cascade attention's groups: decode rows whose shared keys are attended once per group.
    prefixes: Vec<SharedPrefix>,
    block_size: usize,
}

impl HostLayout {
    /// Paged attention over `seqs`, with each of `prefixes` (decode rows only) attended once
    /// per group.
    pub fn new(seqs: &[SeqAttn], block_size: usize, prefixes: &[SharedPrefix]) -> Self {
        let mut first_row = 0;
        let mut seqs: Vec<HostSeq> = seqs
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
                    kv_start: 0,
                    prefix: None,
                };
                first_row += s.q_len;
                seq
            })
            .collect();
        for (g, p) in prefixes.iter().enumerate() {
            for (m, &b) in p.seqs.iter().enumerate() {
                let seq = &mut seqs[b];
                assert!(
                    seq.q_len == 1 && p.tokens < seq.ctx_len && seq.prefix.is_none(),
                    "sequence {b}: a cascade member is a decode row with keys past its prefix"
                );
                seq.kv_start = p.tokens;
                seq.prefix = Some((g, m));
            }
        }
        Self {
            seqs,
            prefixes: prefixes.to_vec(),
            block_size,
        }
    }
}

/// One product of attention: queries of one KV head over a run of keys.
#[derive(Clone, Copy)]
enum HostWork {
    /// A sequence's queries over its own keys.
    Own(usize),
    /// A group's decode rows over the prefix they share.
    Prefix(usize),
}

/// The normalised outputs `[rows, head_dim]` of a work item's query rows and the log-sum-exp
/// of each row's scaled scores.
struct Partial {
    out: Array2<f32>,
    lse: Vec<f32>,
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
    let items = (0..layout.seqs.len())
        .map(HostWork::Own)
        .chain((0..layout.prefixes.len()).map(HostWork::Prefix));
    let work: Vec<(HostWork, usize)> = items
        .flat_map(|w| (0..kv_heads).map(move |kv| (w, kv)))
        .collect();
    let parts: Vec<Partial> = work
        .par_iter()
        .map(|&(w, kv)| match w {
            HostWork::Own(b) => {
                let seq = &layout.seqs[b];
                let keys = seq.kv_start..seq.ctx_len;
                // Query i sits at position ctx - q_len + i and sees keys up to it.
                let visible = |i: usize| seq.ctx_len - seq.q_len + i + 1 - seq.kv_start;
                let rows: Vec<usize> = (seq.first_row..seq.first_row + seq.q_len).collect();
                let table = &seq.block_table;
                attend(
                    q,
                    k_cache,
                    v_cache,
                    (&rows, kv, group),
                    table,
                    keys,
                    visible,
                    scale,
                    layout.block_size,
                )
            }
            HostWork::Prefix(g) => {
                let prefix = &layout.prefixes[g];
                let rows: Vec<usize> = prefix
                    .seqs
                    .iter()
                    .map(|&b| layout.seqs[b].first_row)
                    .collect();
                let table = &layout.seqs[prefix.seqs[0]].block_table;
                let all = |_| prefix.tokens;
                attend(
                    q,
                    k_cache,
                    v_cache,
                    (&rows, kv, group),
                    table,
                    0..prefix.tokens,
                    all,
                    scale,
                    layout.block_size,
                )
            }
        })
        .collect();
    let part = |w: usize, kv: usize| &parts[w * kv_heads + kv];
    let own = layout.seqs.len();
    let mut out = Array3::zeros((tokens, heads, head_dim));
    for (b, seq) in layout.seqs.iter().enumerate() {
        for kv in 0..kv_heads {
            let mine = part(b, kv);
            for g in 0..group {
                for i in 0..seq.q_len {
                    let r = g * seq.q_len + i;
                    let mut dst = out.slice_mut(s![seq.first_row + i, kv * group + g, ..]);
                    match seq.prefix {
                        None => dst.assign(&mine.out.row(r)),
                        Some((p, m)) => {
                            let shared = part(own + p, kv);
                            let members = layout.prefixes[p].seqs.len();
                            let sr = g * members + m;
                            let top = mine.lse[r].max(shared.lse[sr]);
                            let (wa, wb) =
                                ((mine.lse[r] - top).exp(), (shared.lse[sr] - top).exp());
                            let merged =
                                (&mine.out.row(r) * wa + &shared.out.row(sr) * wb) / (wa + wb);
                            dst.assign(&merged);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Query rows `rows` (packed rows, each with the `group` heads of KV head `kv`) over keys
/// `keys` of the block table `table`; row `i` sees the first `visible(i)` of them.
#[allow(clippy::too_many_arguments)]
fn attend(
    q: ArrayView3<f32>,
    k_cache: ArrayView3<f32>,
    v_cache: ArrayView3<f32>,
    (rows, kv, group): (&[usize], usize, usize),
    table: &[u32],
    keys: std::ops::Range<usize>,
    visible: impl Fn(usize) -> usize,
    scale: f32,
    block_size: usize,
) -> Partial {
    let head_dim = q.dim().2;
    let k = gather_rows(k_cache, table, keys.clone(), kv, block_size);
    let v = gather_rows(v_cache, table, keys, kv, block_size);
    // Rows ordered (head in group, query): one product serves the whole group.
    let n = rows.len();
    let mut queries = Array2::zeros((group * n, head_dim));
    for g in 0..group {
        for (i, &row) in rows.iter().enumerate() {
            queries
                .row_mut(g * n + i)
                .assign(&q.slice(s![row, kv * group + g, ..]));
        }
    }
    let mut scores = queries.dot(&k.t());
    let lse = scores
        .axis_iter_mut(Axis(0))
        .enumerate()
        .map(|(r, mut row)| {
            let row = row.as_slice_mut().expect("scores are rows");
            softmax_prefix(row, visible(r % n), scale)
        })
        .collect();
    Partial {
        out: scores.dot(&v),
        lse,
    }
}

/// Keys `keys` of KV head `kv` of the sequence with block table `table`, `[keys, head_dim]`,
/// copied block by block (a block's slots are consecutive rows of the cache).
fn gather_rows(
    cache: ArrayView3<f32>,
    table: &[u32],
    keys: std::ops::Range<usize>,
    kv: usize,
    block_size: usize,
) -> Array2<f32> {
    let mut rows = Array2::zeros((keys.len(), cache.dim().2));
    let mut pos = keys.start;
    while pos < keys.end {
        let len = (block_size - pos % block_size).min(keys.end - pos);
        let slot = table[pos / block_size] as usize * block_size + pos % block_size;
        let at = pos - keys.start;
        rows.slice_mut(s![at..at + len, ..])
            .assign(&cache.slice(s![slot..slot + len, kv, ..]));
        pos += len;
    }
    rows
}

/// Scaled softmax over the first `visible` entries of `row`; the rest become 0. Returns the
/// log-sum-exp of the scaled scores.
fn softmax_prefix(row: &mut [f32], visible: usize, scale: f32) -> f32 {
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
    max + sum.ln()
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
            &HostLayout::new(&seqs, block_size, &[]),
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

    /// Cascade on the host: two groups sharing 3 and 2 blocks (one prefix ending mid-block), a
    /// chunk over the first group's blocks and a lone decode, against the paged reference.
    #[test]
    fn host_cascade_matches_the_reference() {
        use crate::SharedPrefix;
        let device = Default::default();
        let (heads, kv_heads, head_dim, block_size) = (8, 2, 16, 4);
        let tables: [&[u32]; 6] = [
            &[1, 2, 3, 20],
            &[1, 2, 3, 21, 22],
            &[5, 6, 23],
            &[1, 2, 3, 24],
            &[5, 6, 25, 26],
            &[27, 28],
        ];
        let shapes = [(1, 13), (1, 18), (1, 10), (6, 15), (1, 14), (1, 7)];
        let seqs: Vec<SeqAttn> = tables
            .iter()
            .zip(shapes)
            .map(|(table, (q_len, ctx_len))| SeqAttn {
                q_len,
                ctx_len,
                block_table: table,
            })
            .collect();
        let prefixes = [
            SharedPrefix {
                seqs: vec![0, 1],
                tokens: 12,
            },
            SharedPrefix {
                seqs: vec![2, 4],
                tokens: 7,
            },
        ];
        let tokens: usize = shapes.iter().map(|s| s.0).sum();
        let random = |dims: [usize; 3]| {
            Tensor::<B, 3>::random(dims, Distribution::Normal(0.0, 1.0), &device)
        };
        let q = random([tokens, heads, head_dim]);
        let k = random([30 * block_size, kv_heads, head_dim]);
        let v = random([30 * block_size, kv_heads, head_dim]);
        let layout = HostLayout::new(&seqs, block_size, &prefixes);
        let host = B::paged_attention(q.clone(), &k, &v, &layout, 0.25);
        let reference = paged_attention_reference(
            q,
            &k,
            &v,
            &ReferenceLayout::new(&seqs, block_size, &device),
            0.25,
        );
        assert!(
            !host.clone().is_nan().any().into_scalar(),
            "NaN in the output"
        );
        let diff = (host - reference).abs().max().into_scalar();
        assert!(
            diff < 1e-5,
            "host cascade differs from the reference by {diff}"
        );
    }
}
