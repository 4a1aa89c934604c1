//! Attention over the paged KV cache in plain burn ops: the reference the cubecl kernels must match.
//!
//! One code path serves whole prefills, prefills whose prefix is already cached, prefill chunks
//! and decodes, mixed in one batch: each sequence `b` brings `q_len[b]` new query tokens and
//! attends to its first `ctx_len[b]` cached tokens (the new ones included, already stored),
//! causally. Sequences are padded to `[batch, max_q]` queries and `[batch, max_ctx]` keys by
//! gathering rows; the mask hides padded keys and future positions.
use burn::tensor::{activation::softmax, backend::Backend, Bool, DType, Int, Tensor, TensorData};

/// Per-step attention layout, shared by every layer. Built once by [`AttnMetadata::new`].
pub struct AttnMetadata<B: Backend> {
    pub batch: usize,
    pub max_q: usize,
    pub max_ctx: usize,
    /// `[batch * max_q]`: packed query row for padded query `(b, i)` (row 0 for padding).
    q_gather: Tensor<B, 1, Int>,
    /// `[tokens]`: padded row `b * max_q + i` of each packed query row.
    out_unpad: Tensor<B, 1, Int>,
    /// `[batch * max_ctx]`: cache slot of key `j` of sequence `b` (slot 0 for padding).
    kv_gather: Tensor<B, 1, Int>,
    /// `[batch, 1, max_q, max_ctx]`: true where attention is not allowed.
    mask: Tensor<B, 4, Bool>,
}

/// One sequence's part of a step, as the runner sees it.
pub struct SeqSlots<'a> {
    /// New query tokens this step.
    pub q_len: usize,
    /// Cache slots of all its tokens up to and including the new ones (`ctx_len` of them).
    pub slots: &'a [u32],
}

impl<B: Backend> AttnMetadata<B> {
    pub fn new(seqs: &[SeqSlots], device: &B::Device) -> Self {
        let batch = seqs.len();
        let max_q = seqs.iter().map(|s| s.q_len).max().unwrap_or(1).max(1);
        let max_ctx = seqs.iter().map(|s| s.slots.len()).max().unwrap_or(1).max(1);
        let mut q_gather = vec![0i32; batch * max_q];
        let mut out_unpad = Vec::new();
        let mut kv_gather = vec![0i32; batch * max_ctx];
        let mut mask = vec![true; batch * max_q * max_ctx];
        let mut row = 0;
        for (b, s) in seqs.iter().enumerate() {
            let ctx = s.slots.len();
            debug_assert!(s.q_len >= 1 && s.q_len <= ctx);
            for i in 0..s.q_len {
                q_gather[b * max_q + i] = (row + i) as i32;
                out_unpad.push((b * max_q + i) as i32);
            }
            for (j, &slot) in s.slots.iter().enumerate() {
                kv_gather[b * max_ctx + j] = slot as i32;
            }
            for i in 0..max_q {
                // Query i sits at position ctx - q_len + i; padded queries see the whole context.
                let last_visible = (ctx - s.q_len + i).min(ctx - 1);
                let base = (b * max_q + i) * max_ctx;
                mask[base..=base + last_visible]
                    .iter_mut()
                    .for_each(|m| *m = false);
            }
            row += s.q_len;
        }
        let ints = |v: Vec<i32>| {
            let n = v.len();
            Tensor::<B, 1, Int>::from_data(TensorData::new(v, [n]), device)
        };
        Self {
            batch,
            max_q,
            max_ctx,
            q_gather: ints(q_gather),
            out_unpad: ints(out_unpad),
            kv_gather: ints(kv_gather),
            mask: Tensor::from_data(TensorData::new(mask, [batch, 1, max_q, max_ctx]), device),
        }
    }
}

/// Attention of packed queries `q` `[tokens, heads, head_dim]` over the cache
/// `k_cache`/`v_cache` `[slots, kv_heads, head_dim]`. Returns `[tokens, heads * head_dim]`.
pub fn paged_attention<B: Backend>(
    q: Tensor<B, 3>,
    k_cache: &Tensor<B, 3>,
    v_cache: &Tensor<B, 3>,
    meta: &AttnMetadata<B>,
    scale: f32,
) -> Tensor<B, 2> {
    let [_, heads, hd] = q.dims();
    let kv_heads = k_cache.dims()[1];
    let group = heads / kv_heads;
    let (b, mq, mc) = (meta.batch, meta.max_q, meta.max_ctx);
    let gather_kv = |cache: &Tensor<B, 3>| {
        cache
            .clone()
            .select(0, meta.kv_gather.clone())
            .reshape([b, mc, kv_heads, hd])
            .swap_dims(1, 2)
    };
    let k = gather_kv(k_cache); // [b, kv_heads, mc, hd]
    let v = gather_kv(v_cache);
    // Query head h uses KV head h / group (HF's repeat_kv), so heads split as (kv_heads, group).
    let q = q
        .select(0, meta.q_gather.clone())
        .reshape([b, mq, kv_heads, group, hd])
        .permute([0, 2, 3, 1, 4])
        .reshape([b, kv_heads, group * mq, hd]);
    let scores = q.matmul(k.transpose()).reshape([b, heads, mq, mc]);
    let dtype = scores.dtype();
    let scores = scores.cast(DType::F32).mul_scalar(scale).mask_fill(
        meta.mask.clone().expand([b, heads, mq, mc]),
        f32::NEG_INFINITY,
    );
    let probs = softmax(scores, 3)
        .cast(dtype)
        .reshape([b, kv_heads, group * mq, mc]);
    let out = probs
        .matmul(v)
        .reshape([b, kv_heads, group, mq, hd])
        .permute([0, 3, 1, 2, 4])
        .reshape([b * mq, heads * hd]);
    out.select(0, meta.out_unpad.clone())
}
