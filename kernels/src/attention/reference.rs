//! Paged attention in plain burn ops: runs on every backend (the CPU engine's path) and is the
//! oracle of the kernel's parity tests.
//!
//! Sequences are padded to `[batch, max_q]` queries and `[batch, max_ctx]` keys by gathering
//! rows through the block tables; a mask hides padded keys and future positions.
use burn::tensor::{activation::softmax, backend::Backend, Bool, DType, Int, Tensor, TensorData};

use crate::attention::plan::SeqAttn;

/// The gather indices and mask of one step, shared by every layer.
pub struct ReferenceLayout<B: Backend> {
    batch: usize,
    max_q: usize,
    max_ctx: usize,
    /// `[batch * max_q]`: packed query row for padded query `(b, i)` (row 0 for padding).
    q_gather: Tensor<B, 1, Int>,
    /// `[tokens]`: padded row `b * max_q + i` of each packed query row.
    out_unpad: Tensor<B, 1, Int>,
    /// `[batch * max_ctx]`: cache slot of key `j` of sequence `b` (slot 0 for padding).
    kv_gather: Tensor<B, 1, Int>,
    /// `[batch, 1, max_q, max_ctx]`: true where attention is not allowed.
    mask: Tensor<B, 4, Bool>,
}

impl<B: Backend> ReferenceLayout<B> {
    pub fn new(seqs: &[SeqAttn], block_size: usize, device: &B::Device) -> Self {
        let batch = seqs.len();
        let max_q = seqs.iter().map(|s| s.q_len).max().unwrap_or(1).max(1);
        let max_ctx = seqs.iter().map(|s| s.ctx_len).max().unwrap_or(1).max(1);
        let mut q_gather = vec![0i32; batch * max_q];
        let mut out_unpad = Vec::new();
        let mut kv_gather = vec![0i32; batch * max_ctx];
        let mut mask = vec![true; batch * max_q * max_ctx];
        let mut row = 0;
        for (b, s) in seqs.iter().enumerate() {
            let ctx = s.ctx_len;
            assert!(s.q_len >= 1 && s.q_len <= ctx, "sequence {b}: bad q_len");
            for i in 0..s.q_len {
                q_gather[b * max_q + i] = (row + i) as i32;
                out_unpad.push((b * max_q + i) as i32);
            }
            for pos in 0..ctx {
                let slot = s.block_table[pos / block_size] as usize * block_size + pos % block_size;
                kv_gather[b * max_ctx + pos] = slot as i32;
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

/// Attention of packed queries `q` `[tokens, heads, head_dim]` over the caches
/// `[slots, kv_heads, head_dim]`. Returns `[tokens, heads, head_dim]`. Softmax in f32.
pub fn paged_attention_reference<B: Backend>(
    q: Tensor<B, 3>,
    k_cache: &Tensor<B, 3>,
    v_cache: &Tensor<B, 3>,
    layout: &ReferenceLayout<B>,
    scale: f32,
) -> Tensor<B, 3> {
    let [_, heads, hd] = q.dims();
    let kv_heads = k_cache.dims()[1];
    let group = heads / kv_heads;
    let (b, mq, mc) = (layout.batch, layout.max_q, layout.max_ctx);
    let gather_kv = |cache: &Tensor<B, 3>| {
        cache
            .clone()
            .select(0, layout.kv_gather.clone())
            .reshape([b, mc, kv_heads, hd])
            .swap_dims(1, 2)
    };
    let k = gather_kv(k_cache); // [b, kv_heads, mc, hd]
    let v = gather_kv(v_cache);
    // Query head h uses KV head h / group (HF's repeat_kv), so heads split as (kv_heads, group).
    let q = q
        .select(0, layout.q_gather.clone())
        .reshape([b, mq, kv_heads, group, hd])
        .permute([0, 2, 3, 1, 4])
        .reshape([b, kv_heads, group * mq, hd]);
    let scores = q.matmul(k.transpose()).reshape([b, heads, mq, mc]);
    let dtype = scores.dtype();
    let scores = scores.cast(DType::F32).mul_scalar(scale).mask_fill(
        layout.mask.clone().expand([b, heads, mq, mc]),
        f32::NEG_INFINITY,
    );
    let probs = softmax(scores, 3)
        .cast(dtype)
        .reshape([b, kv_heads, group * mq, mc]);
    let out = probs
        .matmul(v)
        .reshape([b, kv_heads, group, mq, hd])
        .permute([0, 3, 1, 2, 4])
        .reshape([b * mq, heads, hd]);
    out.select(0, layout.out_unpad.clone())
}
