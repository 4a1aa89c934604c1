//! The vLLM-style entry point: `LLM::new(model, config)`, `generate(prompts, params)` for offline
//! use, and `add_request` / `step` for arrival-timed use by the harness.
use nanovllm_kernels::{DeviceSampling, KernelBackend, RowSampling};
use std::time::Instant;

use tokenizers::Tokenizer;

use crate::backend::trace_mark;
use crate::model::attention::AttentionImpl;
use crate::model::{ArchSpec, LoadedModel};

use super::block_manager::BlockManager;
use super::kv_cache::plan_num_blocks;
use super::params::{EngineConfig, SamplingParams};
use super::runner::{ModelRunner, SeqWork};
use super::sampler::sample;
use super::scheduler::{Scheduler, SchedulerLimits};
use super::sequence::Sequence;
use super::types::{RequestId, RequestOutput, StepReport};

/// A prompt as text (needs the model's tokenizer) or as token ids.
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// Why one request was refused; the engine and every other request go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("prompt has {len} tokens but max_model_len is {max_model_len}: it must leave room for one output token")]
    PromptTooLong { len: usize, max_model_len: usize },
    #[error("empty prompt")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { id: u32, vocab_size: usize },
    #[error("text prompt, but the model folder has no tokenizer.json: pass token ids")]
    NoTokenizer,
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("invalid sampling parameters: {0}")]
    Sampling(String),
    #[error("request needs {needed} KV blocks but the whole cache has {total}: raise the KV budget or lower max_tokens")]
    CacheTooSmall { needed: usize, total: usize },
}

pub struct LLM<B: KernelBackend> {
    pub(crate) runner: ModelRunner<B>,
    pub(crate) scheduler: Scheduler,
    tokenizer: Option<Tokenizer>,
    next_id: RequestId,
    max_model_len: usize,
    pub(crate) block_size: usize,
    /// Model name and whether its weights are random, for reports.
    pub model_name: String,
    pub random_weights: bool,
}

impl<B: KernelBackend> LLM<B> {
    /// Sizes the KV cache from `config.kv_budget` and builds the engine.
    pub fn new(
        model: LoadedModel<B>,
        config: EngineConfig,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        let spec = model.spec().clone();
        let max_model_len = config
            .max_model_len
            .unwrap_or(spec.max_position_embeddings)
            .min(spec.max_position_embeddings);
        config.validate(max_model_len).map_err(anyhow::Error::msg)?;
        let attention = config
            .attention
            .resolve(B::kernel_caps(device).is_some() || B::HOST_ATTENTION)
            .map_err(anyhow::Error::msg)?;
        let mut runner = ModelRunner::new(model.decoder, 1, config.block_size, attention, device);
        let num_blocks = plan_num_blocks(&mut runner, &config, max_model_len, device)?;
        runner.reset_cache(num_blocks);
        let blocks = BlockManager::new(num_blocks, config.block_size, config.enable_prefix_caching);
        let limits = SchedulerLimits {
            max_num_seqs: config.max_num_seqs,
            max_num_batched_tokens: config.max_num_batched_tokens,
            max_model_len,
        };
        let scheduler = Scheduler::new(
            config.scheduler.clone(),
            limits,
            spec.eos_token_ids.clone(),
            blocks,
        );
        Ok(Self {
            runner,
            scheduler,
            tokenizer: model.tokenizer,
            next_id: 0,
            max_model_len,
            block_size: config.block_size,
            model_name: model.name,
            random_weights: model.random_weights,
        })
    }

    pub fn spec(&self) -> &ArchSpec {
        &self.runner.model.spec
    }

    pub fn attention_impl(&self) -> AttentionImpl {
        self.runner.attention()
    }

    pub fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    pub fn num_kv_blocks(&self) -> usize {
        self.scheduler.blocks.num_blocks()
    }

    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn has_unfinished(&self) -> bool {
        self.scheduler.has_unfinished()
    }

    pub fn tokenize(&self, prompt: Prompt) -> Result<Vec<u32>, RequestError> {
        match prompt {
            Prompt::Tokens(ids) => Ok(ids),
            Prompt::Text(text) => {
                let tok = self.tokenizer.as_ref().ok_or(RequestError::NoTokenizer)?;
                tok.encode(text, false)
                    .map(|e| e.get_ids().to_vec())
                    .map_err(|e| RequestError::Tokenizer(e.to_string()))
            }
        }
    }

    /// Queues a request. Errors concern this request only.
    pub fn add_request(
        &mut self,
        prompt: Prompt,
        params: SamplingParams,
    ) -> Result<RequestId, RequestError> {
        params.validate().map_err(RequestError::Sampling)?;
        let ids = self.tokenize(prompt)?;
        if ids.is_empty() {
            return Err(RequestError::EmptyPrompt);
        }
        if ids.len() >= self.max_model_len {
            return Err(RequestError::PromptTooLong {
                len: ids.len(),
                max_model_len: self.max_model_len,
            });
        }
        let vocab_size = self.spec().vocab_size;
        if let Some(&id) = ids.iter().find(|&&t| t as usize >= vocab_size) {
            return Err(RequestError::TokenOutOfRange { id, vocab_size });
        }
        // A request that cannot fit alone would be preempted forever.
        let needed = (ids.len() + params.max_tokens)
            .min(self.max_model_len)
            .div_ceil(self.block_size);
        let total = self.num_kv_blocks();
        if needed > total {
            return Err(RequestError::CacheTooSmall { needed, total });
        }
        let id = self.next_id;
        self.next_id += 1;
        self.scheduler.add(Sequence::new(id, ids, params));
        Ok(id)
    }

    /// Schedules, runs and samples one step.
    pub fn step(&mut self) -> anyhow::Result<StepReport> {
        let started = Instant::now();
        trace_mark("step");
        let batch = self.scheduler.schedule();
        trace_mark("scheduled");
        let mut new_tokens = Vec::new();
        // Set where the step's device work is all queued, just before the host waits for it.
        let mut queued = None;
        if !batch.is_empty() {
            let work: Vec<SeqWork> = batch
                .seqs
                .iter()
                .map(|s| SeqWork {
                    seq: self.scheduler.seq(s.id),
                    num_tokens: s.num_tokens,
                    samples: s.samples,
                })
                .collect();
            let samplers: Vec<RequestId> = batch
                .seqs
                .iter()
                .filter(|s| s.samples)
                .map(|s| s.id)
                .collect();
            let all_greedy = samplers
                .iter()
                .all(|&id| self.scheduler.seq(id).params.temperature == 0.0);
            // Temperature alone samples on the device; top-k / top-p rows go to the host sampler.
            let device_sampling = B::kernel_caps(&self.runner.device).is_some()
                && samplers.iter().all(|&id| {
                    let p = &self.scheduler.seq(id).params;
                    p.top_k.is_none() && p.top_p >= 1.0
                });
            // Uploaded before the forward pass, so they are not on the step's tail.
            let sampling = (device_sampling && !samplers.is_empty()).then(|| {
                let rows: Vec<RowSampling> = samplers
                    .iter()
                    .map(|&id| {
                        let seq = self.scheduler.seq(id);
                        RowSampling {
                            temperature: seq.params.temperature,
                            key: seq.sample_key,
                            step: seq.len() as u32,
                        }
                    })
                    .collect();
                DeviceSampling::new(&rows, &self.runner.device)
            });
            let logits = self.runner.execute(&work, false);
            trace_mark("launched");
            new_tokens = match (logits, sampling) {
                (None, _) => Vec::new(),
                // Greedy included: burn's argmax over a 150k vocabulary is one slow reduce.
                (Some(logits), Some(params)) => {
                    let ids = B::sample_rows(logits, &params);
                    queued = Some(started.elapsed());
                    let tokens = ModelRunner::<B>::ids_to_host(ids);
                    trace_mark("read");
                    samplers.iter().copied().zip(tokens).collect()
                }
                (Some(logits), None) if all_greedy => {
                    let ids = logits.argmax(1).flatten(0, 1);
                    queued = Some(started.elapsed());
                    samplers
                        .iter()
                        .copied()
                        .zip(ModelRunner::<B>::ids_to_host(ids))
                        .collect()
                }
                (Some(logits), None) => {
                    queued = Some(started.elapsed());
                    let vocab = logits.dims()[1];
                    let host = ModelRunner::to_host(logits);
                    samplers
                        .iter()
                        .zip(host.chunks_exact(vocab))
                        .map(|(&id, row)| {
                            let seq = self.scheduler.seq_mut(id);
                            (id, sample(row, &seq.params, &mut seq.rng))
                        })
                        .collect()
                }
            };
        }
        if let Some(failure) = crate::backend::device_failure() {
            anyhow::bail!("the device failed during this step, so its results are void: {failure}");
        }
        let finished = self.scheduler.postprocess(&batch, &new_tokens);
        trace_mark("postprocessed");
        let finished = finished
            .into_iter()
            .map(|(seq, reason)| {
                let token_ids = seq.tokens[seq.num_prompt_tokens..].to_vec();
                let text = self
                    .tokenizer
                    .as_ref()
                    .and_then(|t| t.decode(&token_ids, true).ok())
                    .unwrap_or_default();
                RequestOutput {
                    id: seq.id,
                    prompt_token_ids: seq.tokens[..seq.num_prompt_tokens].to_vec(),
                    token_ids,
                    text,
                    finish_reason: reason,
                }
            })
            .collect();
        Ok(StepReport {
            kind: batch.kind(),
            prefill_tokens: batch.prefill_tokens,
            decode_tokens: batch.decode_tokens,
            num_seqs: batch.seqs.len(),
            kv_blocks_used: self.scheduler.blocks.num_used(),
            kv_blocks_total: self.scheduler.blocks.num_blocks(),
            preempted: batch.preempted,
            prefix_hit_tokens: batch.prefix_hit_tokens,
            new_tokens,
            finished,
            queued: queued.unwrap_or_else(|| started.elapsed()),
            duration: started.elapsed(),
        })
    }

    /// Runs `prompts` to completion; `params` holds one entry for all or one per prompt.
    /// Results come back in prompt order; a refused prompt gets its error, the rest still run.
    pub fn generate(
        &mut self,
        prompts: Vec<Prompt>,
        params: &[SamplingParams],
    ) -> anyhow::Result<Vec<Result<RequestOutput, RequestError>>> {
        anyhow::ensure!(
            params.len() == 1 || params.len() == prompts.len(),
            "generate: {} sampling params for {} prompts",
            params.len(),
            prompts.len()
        );
        let ids: Vec<Result<RequestId, RequestError>> = prompts
            .into_iter()
            .enumerate()
            .map(|(i, p)| self.add_request(p, params[i.min(params.len() - 1)].clone()))
            .collect();
        let mut done = std::collections::HashMap::new();
        while self.has_unfinished() {
            for out in self.step()?.finished {
                done.insert(out.id, out);
            }
        }
        Ok(ids
            .into_iter()
            .map(|r| r.map(|id| done.remove(&id).expect("every admitted request finishes")))
            .collect())
    }
}
