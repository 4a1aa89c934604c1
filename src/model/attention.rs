//! Attention over the paged KV cache, by one of two implementations chosen per engine:
//! the cubecl kernel (GPU backends) or the plain-burn reference (every backend; the oracle).
//!
//! On a backend without kernels whose tensors live in host memory (ndarray), "kernel" means
//! the host attention: the same attention computed on the arrays in place.
//!
//! One code path serves whole prefills, prefills whose prefix is cached, prefill chunks and
//! decodes, mixed in one batch: each sequence brings `q_len` new query tokens and attends
//! causally to its first `ctx_len` cached tokens (the new ones included, already stored).
use burn::tensor::Tensor;
use nanovllm_kernels::{
    paged_attention_reference, AttentionPlan, HostLayout, KernelBackend, KernelPlan,
    ReferenceLayout, SeqAttn,
};

use super::arch::ArchSpec;

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
    Kernel(KernelPlan<B>),
    Host(HostLayout),
    Reference(ReferenceLayout<B>),
}

impl<B: KernelBackend> StepAttention<B> {
    pub fn new(
        imp: AttentionImpl,
        seqs: &[SeqAttn],
        block_size: usize,
        spec: &ArchSpec,
        device: &B::Device,
    ) -> Self {
        match (imp, B::kernel_caps(device)) {
            (AttentionImpl::Kernel, Some(caps)) => {
                let group = spec.num_heads / spec.num_kv_heads;
                let plan = AttentionPlan::new(
                    seqs,
                    block_size,
                    group,
                    spec.head_dim,
                    spec.num_kv_heads,
                    caps,
                );
                StepAttention::Kernel(KernelPlan::new(plan, device))
            }
            (AttentionImpl::Kernel, None) if B::HOST_ATTENTION => {
                StepAttention::Host(HostLayout::new(seqs, block_size))
            }
            _ => StepAttention::Reference(ReferenceLayout::new(seqs, block_size, device)),
        }
    }

    /// A decode-only step's q/k norm + rotary, cache write and attention from the fused
    /// projection `qkv` in one launch, where the kernel backend takes the step
    /// ([`KernelBackend::decode_attention_qkv`]); `[tokens, heads * head_dim]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attend_qkv(
        &self,
        qkv: &Tensor<B, 2>,
        norms: Option<(&Tensor<B, 1>, &Tensor<B, 1>)>,
        (cos, sin): (&Tensor<B, 2>, &Tensor<B, 2>),
        eps: f32,
        k_cache: &Tensor<B, 3>,
        v_cache: &Tensor<B, 3>,
        scale: f32,
    ) -> Option<Tensor<B, 2>> {
        let StepAttention::Kernel(plan) = self else {
            return None;
        };
        let out =
            B::decode_attention_qkv(qkv, norms, cos, sin, eps, (k_cache, v_cache), plan, scale)?;
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
            StepAttention::Host(layout) => B::host_attention(q, k_cache, v_cache, layout, scale),
            StepAttention::Reference(layout) => {
                paged_attention_reference(q, k_cache, v_cache, layout, scale)
            }
        };
        let [tokens, heads, hd] = out.dims();
        out.reshape([tokens, heads * hd])
    }
}
