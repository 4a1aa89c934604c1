//! The one decoder for every architecture: embeddings, `num_layers` pre-norm blocks
//! (attention over the paged cache + gated MLP), final norm and LM head. Architecture
//! differences are switches on [`ArchSpec`] (q/k norm, qkv bias, tied embeddings), resolved at load.
use burn::tensor::{activation::silu, DType, IndexingUpdateOp, Int, Tensor};
use nanovllm_kernels::gemv::GEMV_MAX_ROWS;
use nanovllm_kernels::{norm_project, silu_mul_project, KernelBackend};

use super::arch::ArchSpec;
use super::attention::StepAttention;
use super::error::ModelError;
use super::rope::Rope;
use super::weights::{names, Init, WeightSource};
use nanovllm_kernels::layers::HeadShape;

/// One layer's K and V cache, `[slots, kv_heads, head_dim]` each. `None` only while being updated.
pub struct LayerCache<B: KernelBackend> {
    kv: Option<(Tensor<B, 3>, Tensor<B, 3>)>,
}

impl<B: KernelBackend> LayerCache<B> {
    pub fn zeros(slots: usize, kv_heads: usize, head_dim: usize, device: &B::Device) -> Self {
        let t = || Tensor::zeros([slots, kv_heads, head_dim], device);
        Self {
            kv: Some((t(), t())),
        }
    }

    /// The caches as they stand: the kernels write them in place.
    fn caches(&self) -> (&Tensor<B, 3>, &Tensor<B, 3>) {
        let (k, v) = self.kv.as_ref().expect("cache present between steps");
        (k, v)
    }

    /// Writes this step's K and V at their slots with burn's scatter (the path without kernels)
    /// and returns the caches for attention. It reuses the buffers on ndarray, but copies the
    /// whole cache under fusion, which is why the kernel path writes in place instead.
    fn scatter(
        &mut self,
        step: &StepTensors<B>,
        k: Tensor<B, 3>,
        v: Tensor<B, 3>,
    ) -> (&Tensor<B, 3>, &Tensor<B, 3>) {
        let (kc, vc) = self.kv.take().expect("cache present between steps");
        let kc = kc.scatter_nd(step.slot_mapping.clone(), k, IndexingUpdateOp::Assign);
        let vc = vc.scatter_nd(step.slot_mapping.clone(), v, IndexingUpdateOp::Assign);
        let (k, v) = self.kv.insert((kc, vc));
        (k, v)
    }
}

/// The tensors of one forward pass, built by the runner.
pub struct StepTensors<B: KernelBackend> {
    /// `[tokens]` packed token ids of every scheduled sequence.
    pub token_ids: Tensor<B, 1, Int>,
    /// `[tokens]` absolute position of each token.
    pub positions: Tensor<B, 1, Int>,
    /// `[tokens, 1]` cache slot each token's K and V go to.
    pub slot_mapping: Tensor<B, 2, Int>,
    pub attn: StepAttention<B>,
    /// `[rows]` packed rows whose logits are wanted (last token of sequences that sample).
    pub logits_rows: Tensor<B, 1, Int>,
}

struct Layer<B: KernelBackend> {
    input_norm: Tensor<B, 1>,
    post_attn_norm: Tensor<B, 1>,
    /// `[hidden, (heads + 2 * kv_heads) * head_dim]`: q, k and v projections side by side.
    qkv: Tensor<B, 2>,
    qkv_bias: Option<Tensor<B, 1>>,
    q_norm: Option<Tensor<B, 1>>,
    k_norm: Option<Tensor<B, 1>>,
    /// `[heads * head_dim, hidden]`.
    o: Tensor<B, 2>,
    /// `[hidden, 2 * intermediate]`: gate and up side by side.
    gate_up: Tensor<B, 2>,
    /// `[intermediate, hidden]`.
    down: Tensor<B, 2>,
}

pub struct Decoder<B: KernelBackend> {
    pub spec: ArchSpec,
    embed: Tensor<B, 2>,
    layers: Vec<Layer<B>>,
    final_norm: Tensor<B, 1>,
    /// `[hidden, vocab]`; the transposed embedding when tied.
    lm_head: Tensor<B, 2>,
    rope: Rope<B>,
}

/// RMSNorm over the last dim, computed in f32 as HF does.
fn rms_norm<B: KernelBackend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let x = x.cast(DType::F32);
    let inv_rms = x
        .clone()
        .square()
        .mean_dim(D - 1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    (x * inv_rms).cast(dtype) * weight.clone().unsqueeze()
}

impl<B: KernelBackend> Decoder<B> {
    /// Loads (or draws) every parameter, checking shapes against `spec`.
    pub fn load(
        spec: &ArchSpec,
        source: &WeightSource,
        max_positions: usize,
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let (h, hd, nq, nkv, inter) = (
            spec.hidden_size,
            spec.head_dim,
            spec.num_heads,
            spec.num_kv_heads,
            spec.intermediate_size,
        );
        // HF stores linear weights as [out, in]; we keep [in, out] so activations multiply on the
        // left: a transposed view of HF's rows (a fused projection stacks its parts' rows first),
        // which the GPU's matmul strategies read fastest (`nanovllm kernels matmul`), then the
        // layout the backend's `project` wants (`prepare_weight`).
        let linear = |parts: &[(String, usize)], inp: usize| -> Result<Tensor<B, 2>, ModelError> {
            let rows = parts
                .iter()
                .map(|(name, out)| source.load::<B, 2>(name, [*out, inp], Init::Matrix, device))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(B::prepare_weight(Tensor::cat(rows, 0).transpose()))
        };
        let vector =
            |name: String, n: usize, init: Init| source.load::<B, 1>(&name, [n], init, device);
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            let n = |rest: &str| names::layer(i, rest);
            let weight = |p: &str| n(&format!("{p}.weight"));
            let qkv = linear(
                &[
                    (weight(names::Q), nq * hd),
                    (weight(names::K), nkv * hd),
                    (weight(names::V), nkv * hd),
                ],
                h,
            )?;
            let qkv_bias = match spec.qkv_bias {
                true => {
                    let b = |p: &str, len: usize| vector(n(&format!("{p}.bias")), len, Init::Zeros);
                    Some(Tensor::cat(
                        vec![
                            b(names::Q, nq * hd)?,
                            b(names::K, nkv * hd)?,
                            b(names::V, nkv * hd)?,
                        ],
                        0,
                    ))
                }
                false => None,
            };
            let (q_norm, k_norm) = match spec.qk_norm {
                true => (
                    Some(vector(n(names::Q_NORM), hd, Init::Ones)?),
                    Some(vector(n(names::K_NORM), hd, Init::Ones)?),
                ),
                false => (None, None),
            };
            layers.push(Layer {
                input_norm: vector(n(names::INPUT_NORM), h, Init::Ones)?,
                post_attn_norm: vector(n(names::POST_ATTN_NORM), h, Init::Ones)?,
                qkv,
                qkv_bias,
                q_norm,
                k_norm,
                o: linear(&[(n(names::O), h)], nq * hd)?,
                gate_up: linear(&[(n(names::GATE), inter), (n(names::UP), inter)], h)?,
                down: linear(&[(n(names::DOWN), h)], inter)?,
            });
        }
        let embed =
            source.load::<B, 2>(names::EMBED, [spec.vocab_size, h], Init::Matrix, device)?;
        // Some tied checkpoints still ship lm_head.weight; tying wins only when it is absent.
        let lm_head = match spec.tie_word_embeddings && !source.has(names::LM_HEAD) {
            true => B::prepare_weight(embed.clone().transpose()),
            false => linear(&[(names::LM_HEAD.into(), spec.vocab_size)], h)?,
        };
        Ok(Self {
            spec: spec.clone(),
            embed,
            layers,
            final_norm: vector(names::FINAL_NORM.into(), h, Init::Ones)?,
            lm_head,
            rope: Rope::new(spec, max_positions, device),
        })
    }

    /// Runs every projection shape once at each of `rows`, discarding the results, with the
    /// norms and SiLU·mul fused in as the decode steps run them. cubecl compiles a kernel per
    /// matmul strategy and bounds check, and per row capacity of the fused gemv, on first
    /// sight, 1 to 5 s each on an H100: unwarmed, a benchmark's steps pay that in their timings.
    pub fn warm_up_projections(&self, rows: &[usize]) {
        let layer = &self.layers[0];
        let eps = self.spec.rms_norm_eps as f32;
        let [hidden, _] = layer.qkv.dims();
        let [inter, _] = layer.down.dims();
        // Larger batches run the ops apart, which the projections below warm up.
        for &m in rows.iter().filter(|&&m| m <= GEMV_MAX_ROWS) {
            let x = Tensor::<B, 2>::zeros([m, hidden], &layer.qkv.device());
            for w in [&layer.qkv, &layer.gate_up, &self.lm_head] {
                let (_, out) = norm_project(x.clone(), Some(x.clone()), &layer.input_norm, eps, w);
                let _ = out.into_data();
            }
            let (_, out) = norm_project(x.clone(), None, &layer.input_norm, eps, &layer.qkv);
            let gate_up = Tensor::<B, 2>::zeros([m, 2 * inter], &layer.qkv.device());
            let _ = (
                out.into_data(),
                silu_mul_project(gate_up, &layer.down).into_data(),
            );
        }
        for w in [
            &layer.qkv,
            &layer.o,
            &layer.gate_up,
            &layer.down,
            &self.lm_head,
        ] {
            let [k, _] = w.dims();
            for &m in rows {
                let x = Tensor::<B, 2>::zeros([m, k], &w.device());
                let _ = B::project(x, w).into_data();
            }
        }
    }

    /// Runs one step: stores every new token's K and V in `cache` and returns the logits
    /// `[rows, vocab]` of `step.logits_rows`, or `None` when no row is wanted (a chunk that
    /// ends no prompt).
    pub fn forward(
        &self,
        step: &StepTensors<B>,
        cache: &mut [LayerCache<B>],
    ) -> Option<Tensor<B, 2>> {
        if let StepAttention::Kernel(_) = &step.attn {
            return self.forward_kernels(step, cache);
        }
        let mut x = self.embed.clone().select(0, step.token_ids.clone());
        for (layer, layer_cache) in self.layers.iter().zip(cache.iter_mut()) {
            x = self.layer_forward(layer, x, step, layer_cache);
        }
        if step.logits_rows.dims()[0] == 0 {
            return None;
        }
        let last = x.select(0, step.logits_rows.clone());
        Some(B::project(
            rms_norm(last, &self.final_norm, self.spec.rms_norm_eps),
            &self.lm_head,
        ))
    }

    /// [`forward`](Self::forward) with the fused kernels: each sublayer's residual add is fused
    /// into the next RMSNorm, q/k norm and rotary embedding into one launch, SiLU·mul into one;
    /// at decode batch sizes the norms and SiLU·mul also ride in the projection after them.
    fn forward_kernels(
        &self,
        step: &StepTensors<B>,
        cache: &mut [LayerCache<B>],
    ) -> Option<Tensor<B, 2>> {
        let s = &self.spec;
        let eps = s.rms_norm_eps as f32;
        let shape = HeadShape {
            heads: s.num_heads,
            kv_heads: s.num_kv_heads,
            head_dim: s.head_dim,
        };
        let (cos, sin) = self.rope.tables();
        let slots = step.slot_mapping.clone().flatten(0, 1);
        let mut x = self.embed.clone().select(0, step.token_ids.clone());
        // The MLP output of the previous layer, not yet added to the residual stream `x`.
        let mut pending: Option<Tensor<B, 2>> = None;
        for (layer, layer_cache) in self.layers.iter().zip(cache.iter_mut()) {
            let mut qkv;
            (x, qkv) = norm_project(x, pending.take(), &layer.input_norm, eps, &layer.qkv);
            if let Some(bias) = &layer.qkv_bias {
                qkv = qkv + bias.clone().unsqueeze();
            }
            let norms = layer.q_norm.as_ref().zip(layer.k_norm.as_ref());
            let (k_cache, v_cache) = layer_cache.caches();
            let scale = 1.0 / (s.head_dim as f32).sqrt();
            // Decode-only steps on the kernels: one launch for all of it.
            let fused = step
                .attn
                .attend_qkv(&qkv, norms, (cos, sin), eps, k_cache, v_cache, scale);
            let attn = fused.unwrap_or_else(|| {
                // One launch: q out, K and V into their cache slots; then attention.
                let q = B::qk_norm_rope_into_cache(
                    qkv,
                    norms,
                    cos,
                    sin,
                    &step.positions,
                    shape,
                    eps,
                    (k_cache, v_cache, &slots),
                );
                step.attn.attend(q, k_cache, v_cache, scale)
            });
            let gate_up;
            (x, gate_up) = norm_project(
                x,
                Some(B::project(attn, &layer.o)),
                &layer.post_attn_norm,
                eps,
                &layer.gate_up,
            );
            pending = Some(silu_mul_project(gate_up, &layer.down));
        }
        let wanted = step.logits_rows.dims()[0];
        if wanted == 0 {
            return None;
        }
        let delta = pending.expect("at least one layer");
        // The wanted rows are increasing and distinct: as many as tokens means all of them, in
        // order (every decode step), and selecting them would only copy.
        let (x, delta) = match wanted == x.dims()[0] {
            true => (x, delta),
            false => (
                x.select(0, step.logits_rows.clone()),
                delta.select(0, step.logits_rows.clone()),
            ),
        };
        Some(norm_project(x, Some(delta), &self.final_norm, eps, &self.lm_head).1)
    }

    fn layer_forward(
        &self,
        layer: &Layer<B>,
        x: Tensor<B, 2>,
        step: &StepTensors<B>,
        cache: &mut LayerCache<B>,
    ) -> Tensor<B, 2> {
        let s = &self.spec;
        let (hd, nq, nkv) = (s.head_dim, s.num_heads, s.num_kv_heads);
        let tokens = x.dims()[0];
        let h = rms_norm(x.clone(), &layer.input_norm, s.rms_norm_eps);
        let mut qkv = B::project(h, &layer.qkv);
        if let Some(bias) = &layer.qkv_bias {
            qkv = qkv + bias.clone().unsqueeze();
        }
        let mut q = qkv.clone().narrow(1, 0, nq * hd).reshape([tokens, nq, hd]);
        let mut k = qkv
            .clone()
            .narrow(1, nq * hd, nkv * hd)
            .reshape([tokens, nkv, hd]);
        let v = qkv
            .narrow(1, (nq + nkv) * hd, nkv * hd)
            .reshape([tokens, nkv, hd]);
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = rms_norm(q, qn, s.rms_norm_eps);
            k = rms_norm(k, kn, s.rms_norm_eps);
        }
        let q = self.rope.apply(q, &step.positions);
        let k = self.rope.apply(k, &step.positions);
        let (k_cache, v_cache) = cache.scatter(step, k, v);
        let attn = step
            .attn
            .attend(q, k_cache, v_cache, 1.0 / (hd as f32).sqrt());
        let x = x + B::project(attn, &layer.o);
        let h = rms_norm(x.clone(), &layer.post_attn_norm, s.rms_norm_eps);
        let gate_up = B::project(h, &layer.gate_up);
        let inter = s.intermediate_size;
        let act = silu(gate_up.clone().narrow(1, 0, inter)) * gate_up.narrow(1, inter, inter);
        x + B::project(act, &layer.down)
    }
}
