//! Attention over the paged KV cache, by one of two implementations chosen per engine: the
//! backend's own ([`KernelBackend::paged_attention`]: the cubecl kernels on a GPU, host
//! attention on the arrays in place on the CPU) or the plain-burn reference (every backend;
//! the oracle).
//!
//! One code path serves whole prefills, prefills whose prefix is cached, prefill chunks and
//! decodes, mixed in one batch: each sequence brings `q_len` new query tokens and attends
//! causally to its first `ctx_len` cached tokens (the new ones included, already stored).
use burn::tensor::Tensor;
use nanovllm_kernels::{
    paged_attention_reference, AttentionShape, HeadShape, KernelBackend, ReferenceLayout, SeqAttn,
    SharedPrefix,
};

/// Which implementation an engine uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionImpl {
    Kernel,
    Reference,
}

impl AttentionImpl {
    pub fn as_str(self) -> &'static str {
        match self {
            AttentionImpl::Kernel => "kernel",
            AttentionImpl::Reference => "reference",
        }
    }
}

/// One step's attention layout, built once and shared by every layer.
pub enum StepAttention<B: KernelBackend> {
    Kernel(B::StepPlan),
    Reference(ReferenceLayout<B>),
}

impl<B: KernelBackend> StepAttention<B> {
    /// The step's layout for `imp` over `heads` (a rank's under tensor parallelism); with the
    /// backend's own attention, the decode rows of each of `prefixes` attend their shared keys
    /// once per group (the reference is paged only).
    pub fn new(
        imp: AttentionImpl,
        seqs: &[SeqAttn],
        prefixes: &[SharedPrefix],
        block_size: usize,
        heads: HeadShape,
        device: &B::Device,
    ) -> Self {
        match imp {
            AttentionImpl::Kernel => {
                let shape = AttentionShape { block_size, heads };
                StepAttention::Kernel(B::plan_attention(seqs, shape, prefixes, device))
            }
            AttentionImpl::Reference => {
                debug_assert!(prefixes.is_empty(), "the reference is paged only");
                StepAttention::Reference(ReferenceLayout::new(seqs, block_size, device))
            }
        }
    }

    /// A decode-only step's q/k norm + rotary, cache write and attention from the fused
    /// projection `qkv` in one launch, where the backend takes the step
    /// ([`KernelBackend::decode_attention_qkv`]); `[tokens, heads * head_dim]`.
    pub fn attend_qkv(
        &self,
        qkv: &Tensor<B, 2>,
        norms: Option<(&Tensor<B, 1>, &Tensor<B, 1>)>,
        rope: (&Tensor<B, 2>, &Tensor<B, 2>),
        eps: f32,
        caches: (&mut Tensor<B, 3>, &mut Tensor<B, 3>),
        scale: f32,
    ) -> Option<Tensor<B, 2>> {
        let StepAttention::Kernel(plan) = self else {
            return None;
        };
        let out = B::decode_attention_qkv(qkv, norms, rope, eps, caches, plan, scale)?;
        let [tokens, heads, hd] = out.dims();
        Some(out.reshape([tokens, heads * hd]))
    }

    /// Packed queries `q` `[tokens, heads, head_dim]` over the layer's caches
    /// `[slots, kv_heads, head_dim]`; returns `[tokens, heads * head_dim]`.
    pub fn attend(
        &self,
        q: Tensor<B, 3>,
        k_cache: &Tensor<B, 3>,
        v_cache: &Tensor<B, 3>,
        scale: f32,
    ) -> Tensor<B, 2> {
        let out = match self {
            StepAttention::Kernel(plan) => B::paged_attention(q, k_cache, v_cache, plan, scale),
            StepAttention::Reference(layout) => {
                paged_attention_reference(q, k_cache, v_cache, layout, scale)
            }
        };
        let [tokens, heads, hd] = out.dims();
        out.reshape([tokens, heads * hd])
    }
}
