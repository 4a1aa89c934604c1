//! The one decoder for every architecture, and its one forward pass: embeddings, `num_layers`
//! pre-norm blocks (attention over the paged cache + the feed-forward block), final norm and LM
//! head. Architecture differences are switches resolved at load from [`ArchSpec`] (q/k norm,
//! qkv bias, tied embeddings, the [`FeedForward`] arm); backend differences live behind
//! [`KernelBackend`]'s ops (plain burn by default, fused kernels where a backend has them).
use burn::tensor::{Int, Tensor};
use nanovllm_kernels::matmul::gemv::GEMV_MAX_ROWS;
use nanovllm_kernels::{HeadShape, KernelBackend, KvWrite};

use super::arch::ArchSpec;
use super::attention::StepAttention;
use super::capture::ExpertCapture;
use super::error::ModelError;
use super::ffn::{ExpertsSource, FeedForward};
use super::linear::Linear;
use super::offload::OffloadStats;
use super::rope::Rope;
use super::weights::{names, Init, WeightSource};
use crate::parallel::{Collective, Cut, TensorParallel};

/// One layer's K and V cache, `[slots, kv_heads, head_dim]` each, written in place each step.
pub struct LayerCache<B: KernelBackend> {
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
}

impl<B: KernelBackend> LayerCache<B> {
    pub fn zeros(slots: usize, kv_heads: usize, head_dim: usize, device: &B::Device) -> Self {
        let t = || Tensor::zeros([slots, kv_heads, head_dim], device);
        Self { k: t(), v: t() }
    }
}

/// The tensors of one forward pass, built by the runner.
pub struct StepTensors<B: KernelBackend> {
    /// `[tokens]` packed token ids of every scheduled sequence.
    pub token_ids: Tensor<B, 1, Int>,
    /// `[tokens]` absolute position of each token.
    pub positions: Tensor<B, 1, Int>,
    /// `[tokens]` cache slot each token's K and V go to.
    pub slot_mapping: Tensor<B, 1, Int>,
    pub attn: StepAttention<B>,
    /// `[rows]` packed rows whose logits are wanted (last token of sequences that sample).
    pub logits_rows: Tensor<B, 1, Int>,
}

/// What one forward pass returns.
pub struct StepOutput<B: KernelBackend> {
    /// `[rows, vocab]` of the step's wanted rows; `None` when no row is wanted (a chunk that
    /// ends no prompt).
    pub logits: Option<Tensor<B, 2>>,
    /// A MoE model's expert load: `[moe_layers * experts]` tokens routed to each expert of
    /// each sparse layer, on the device.
    pub expert_load: Option<Tensor<B, 1, Int>>,
    /// Decode rows that attended a shared prefix once per group (cascade attention).
    pub cascade_rows: usize,
    /// What the expert caches did (expert offloading), summed over the sparse layers.
    pub offload: Option<OffloadStats>,
}

struct Layer<B: KernelBackend> {
    input_norm: Tensor<B, 1>,
    post_attn_norm: Tensor<B, 1>,
    /// `[hidden, (heads + 2 * kv_heads) * head_dim]`: q, k and v projections side by side.
    qkv: Linear<B>,
    qkv_bias: Option<Tensor<B, 1>>,
    q_norm: Option<Tensor<B, 1>>,
    k_norm: Option<Tensor<B, 1>>,
    /// `[heads * head_dim, hidden]`.
    o: Linear<B>,
    ffn: FeedForward<B>,
}

pub struct Decoder<B: KernelBackend> {
    pub spec: ArchSpec,
    /// This rank's place in a tensor-parallel group (the whole model when single).
    pub shard: TensorParallel,
    /// The heads this rank attends with (all of the model's when single).
    pub heads: HeadShape,
    /// How this rank combines its partial results with the others'.
    collective: Collective<B>,
    /// The device this rank's weights and KV cache are on.
    pub device: B::Device,
    /// `[vocab rows of this rank, hidden]`.
    embed: Tensor<B, 2>,
    layers: Vec<Layer<B>>,
    final_norm: Tensor<B, 1>,
    /// `[hidden, vocab]`; the transposed embedding when tied.
    lm_head: Linear<B>,
    rope: Rope<B>,
    /// Calibration: records every sparse layer's expert inputs while set.
    capture: Option<ExpertCapture>,
}

impl<B: KernelBackend> Decoder<B> {
    /// Loads (or draws) every parameter of rank `shard`'s slice, checking shapes against
    /// `spec`; `collective` combines its partial results with the other ranks'.
    pub fn load(
        spec: &ArchSpec,
        source: &WeightSource,
        experts: &ExpertsSource,
        max_positions: usize,
        (shard, collective): (TensorParallel, Collective<B>),
        device: &B::Device,
    ) -> Result<Self, ModelError> {
        let (h, hd, nq, nkv) = (
            spec.hidden_size,
            spec.head_dim,
            spec.num_heads,
            spec.num_kv_heads,
        );
        let (q_rows, kv_rows) = (
            TensorParallel::head_rows(shard.q_heads(spec), hd),
            TensorParallel::head_rows(shard.kv_heads(spec), hd),
        );
        let vector =
            |name: String, n: usize, init: Init| source.load::<B, 1>(&name, [n], init, device);
        let mut layers = Vec::with_capacity(spec.num_layers);
        for i in 0..spec.num_layers {
            let n = |rest: &str| names::layer(i, rest);
            let weight = |p: &str| n(&format!("{p}.weight"));
            // Column-parallel: this rank's heads' rows of q, k and v.
            let qkv = Linear::load_cut(
                source,
                &[
                    (
                        weight(names::Q),
                        [nq * hd, h],
                        Cut::along(0, q_rows.clone()),
                    ),
                    (
                        weight(names::K),
                        [nkv * hd, h],
                        Cut::along(0, kv_rows.clone()),
                    ),
                    (
                        weight(names::V),
                        [nkv * hd, h],
                        Cut::along(0, kv_rows.clone()),
                    ),
                ],
                device,
            )?;
            let qkv_bias = match spec.qkv_bias {
                true => {
                    let b = |p: &str, len: usize, rows: &std::ops::Range<usize>| {
                        let cut = Cut::along(0, rows.clone());
                        let name = n(&format!("{p}.bias"));
                        source.load_cut::<B, 1>(&name, [len], &cut, Init::Zeros, device)
                    };
                    Some(Tensor::cat(
                        vec![
                            b(names::Q, nq * hd, &q_rows)?,
                            b(names::K, nkv * hd, &kv_rows)?,
                            b(names::V, nkv * hd, &kv_rows)?,
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
                // Row-parallel: the columns of this rank's heads.
                o: Linear::load_cut(
                    source,
                    &[(n(names::O), [h, nq * hd], Cut::along(1, q_rows.clone()))],
                    device,
                )?,
                ffn: FeedForward::load(spec.ffn.layer(i), i, h, source, experts, shard, device)?,
            });
        }
        // Vocab-parallel: this rank's rows of the embedding and of the LM head.
        let vocab = Cut::along(0, shard.vocab(spec.vocab_size));
        let v = spec.vocab_size;
        let embed = source.load_cut::<B, 2>(names::EMBED, [v, h], &vocab, Init::Matrix, device)?;
        // Some tied checkpoints still ship lm_head.weight; tying wins only when it is absent.
        let lm_head = match spec.tie_word_embeddings && !source.has(names::LM_HEAD) {
            true => Linear::dense(embed.clone().transpose()),
            false => Linear::load_cut(source, &[(names::LM_HEAD.into(), [v, h], vocab)], device)?,
        };
        let heads = HeadShape {
            heads: shard.q_heads(spec).len(),
            kv_heads: shard.kv_heads(spec).len(),
            head_dim: hd,
        };
        Ok(Self {
            spec: spec.clone(),
            shard,
            heads,
            collective,
            device: device.clone(),
            embed,
            layers,
            final_norm: vector(names::FINAL_NORM.into(), h, Init::Ones)?,
            lm_head,
            rope: Rope::new(spec, max_positions, device),
            capture: None,
        })
    }

    /// How this rank combines its partial results with the other ranks'.
    pub fn collective(&self) -> &Collective<B> {
        &self.collective
    }

    /// Starts (or with `None` ends, returning it) recording the sparse layers' expert inputs.
    pub fn set_capture(&mut self, capture: Option<ExpertCapture>) -> Option<ExpertCapture> {
        std::mem::replace(&mut self.capture, capture)
    }

    pub fn capture(&self) -> Option<&ExpertCapture> {
        self.capture.as_ref()
    }

    /// Layer `layer`'s experts, where it is sparse and holds each expert's own weights.
    pub fn full_experts(&self, layer: usize) -> Option<&nanovllm_kernels::moe::ExpertWeights<B>> {
        self.layers.get(layer)?.ffn.full_experts()
    }

    /// Runs every projection shape once at each of `rows`, discarding the results, with the
    /// norms and SiLU·mul fused in as the decode steps run them. cubecl compiles a kernel per
    /// matmul strategy and bounds check, and per row capacity of the fused gemv, on first
    /// sight, 1 to 5 s each on an H100: unwarmed, a benchmark's steps pay that in their timings.
    pub fn warm_up_projections(&self, rows: &[usize]) {
        let layer = &self.layers[0];
        let eps = self.spec.rms_norm_eps as f32;
        let norm = &layer.input_norm;
        let zeros = |m: usize, k: usize| Tensor::<B, 2>::zeros([m, k], &layer.qkv.device());
        // Larger batches run the ops apart, which the projections below warm up.
        for &m in rows.iter().filter(|&&m| m <= GEMV_MAX_ROWS) {
            let x = zeros(m, layer.qkv.dims()[0]);
            for w in [&layer.qkv, &self.lm_head] {
                let (_, out) = w.norm_forward(x.clone(), Some(x.clone()), norm, eps);
                let _ = out.into_data();
            }
            let (_, out) = layer.qkv.norm_forward(x, None, norm, eps);
            let _ = out.into_data();
            layer.ffn.warm_up(m, norm, eps, true);
        }
        for &m in rows {
            for w in [&layer.qkv, &layer.o, &self.lm_head] {
                let _ = w.forward(zeros(m, w.dims()[0])).into_data();
            }
            layer.ffn.warm_up(m, norm, eps, false);
        }
    }

    /// Runs one step: stores every new token's K and V in `cache` and returns the logits of
    /// `step.logits_rows` (and a MoE model's expert load). Each sublayer's output is added to
    /// the residual stream by the next norm (fused where the backend can), so `pending` holds
    /// the last one not yet added.
    pub fn forward(&self, step: &StepTensors<B>, cache: &mut [LayerCache<B>]) -> StepOutput<B> {
        let s = &self.spec;
        let eps = s.rms_norm_eps as f32;
        let mut x = self.embed(&step.token_ids);
        let mut pending: Option<Tensor<B, 2>> = None;
        let mut expert_counts = Vec::new();
        for (i, (layer, layer_cache)) in self.layers.iter().zip(cache.iter_mut()).enumerate() {
            let (sum, qkv) = layer
                .qkv
                .norm_forward(x, pending.take(), &layer.input_norm, eps);
            let attn = self.attention(layer, qkv, step, layer_cache);
            let out = layer.ffn.forward(
                sum,
                self.collective.all_reduce(layer.o.forward(attn)),
                &layer.post_attn_norm,
                eps,
                self.capture.as_ref().map(|c| (c, i)),
            );
            x = out.residual;
            pending = Some(self.collective.all_reduce(out.out));
            expert_counts.extend(out.expert_counts);
        }
        StepOutput {
            logits: self.logits(x, pending.expect("at least one layer"), step),
            // Each sparse layer's counts are a by-product of grouping its tokens by expert.
            expert_load: (!expert_counts.is_empty()).then(|| Tensor::cat(expert_counts, 0)),
            cascade_rows: 0,
            offload: self.take_offload_stats(),
        }
    }

    /// What the offloaded layers' expert caches did since the last call (`None` when no
    /// layer is offloaded).
    fn take_offload_stats(&self) -> Option<OffloadStats> {
        self.layers
            .iter()
            .filter_map(|l| l.ffn.take_offload_stats())
            .reduce(|mut a, b| {
                a.add(&b);
                a
            })
    }

    /// The LM head over the wanted rows of the residual stream `x` plus `delta`.
    fn logits(
        &self,
        x: Tensor<B, 2>,
        delta: Tensor<B, 2>,
        step: &StepTensors<B>,
    ) -> Option<Tensor<B, 2>> {
        let eps = self.spec.rms_norm_eps as f32;
        let wanted = step.logits_rows.dims()[0];
        if wanted == 0 {
            return None;
        }
        // The wanted rows are increasing and distinct: as many as tokens means all of them, in
        // order (every decode step), and selecting them would only copy.
        let (x, delta) = match wanted == x.dims()[0] {
            true => (x, delta),
            false => (
                x.select(0, step.logits_rows.clone()),
                delta.select(0, step.logits_rows.clone()),
            ),
        };
        let logits = self
            .lm_head
            .norm_forward(x, Some(delta), &self.final_norm, eps)
            .1;
        let v = self.spec.vocab_size;
        Some(self.collective.all_gather(logits, self.shard.vocab(v), v))
    }

    /// The embeddings of `ids`: a lookup, or under tensor parallelism each rank's rows for the
    /// ids in its vocabulary range (zeros for the others), summed over the ranks.
    fn embed(&self, ids: &Tensor<B, 1, Int>) -> Tensor<B, 2> {
        if self.shard.is_single() {
            return self.embed.clone().select(0, ids.clone());
        }
        let range = self.shard.vocab(self.spec.vocab_size);
        let local = ids.clone().sub_scalar(range.start as i64);
        let mine = local
            .clone()
            .greater_equal_elem(0)
            .bool_and(local.clone().lower_elem(range.len() as i64));
        let rows = local.clamp(0, range.len() as i64 - 1);
        let x = self.embed.clone().select(0, rows);
        let keep = mine.float().cast(x.dtype()).unsqueeze_dim::<2>(1);
        self.collective.all_reduce(x * keep)
    }

    /// One layer's attention from its fused projection `qkv` `[tokens, (heads + 2 kv_heads) *
    /// head_dim]`: q/k norm and rotary, the new K and V into the cache, attention over it.
    /// Returns `[tokens, heads * head_dim]`.
    fn attention(
        &self,
        layer: &Layer<B>,
        mut qkv: Tensor<B, 2>,
        step: &StepTensors<B>,
        cache: &mut LayerCache<B>,
    ) -> Tensor<B, 2> {
        let s = &self.spec;
        let eps = s.rms_norm_eps as f32;
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        if let Some(bias) = &layer.qkv_bias {
            qkv = qkv + bias.clone().unsqueeze();
        }
        let norms = layer.q_norm.as_ref().zip(layer.k_norm.as_ref());
        let rope = self.rope.tables();
        // Decode-only steps on the kernels: one launch for all of it.
        let caches = (&mut cache.k, &mut cache.v);
        if let Some(out) = step.attn.attend_qkv(&qkv, norms, rope, eps, caches, scale) {
            return out;
        }
        let shape = self.heads;
        let write = KvWrite {
            k_cache: &mut cache.k,
            v_cache: &mut cache.v,
            slots: &step.slot_mapping,
        };
        let q = B::qk_norm_rope_into_cache(
            qkv,
            norms,
            rope.0,
            rope.1,
            &step.positions,
            shape,
            eps,
            write,
        );
        step.attn.attend(q, &cache.k, &cache.v, scale)
    }
}
