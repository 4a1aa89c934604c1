//! The vLLM-style entry point: `LLM::new(model, config)`, `generate(prompts, params)` for offline
//! use, and `add_request` / `step` for arrival-timed use by the harness.
use burn::tensor::{Int, Tensor};
use nanovllm_kernels::{DeviceSampling, KernelBackend, PendingIds, RowSampling};
use std::collections::VecDeque;
use std::time::Instant;

use tokenizers::Tokenizer;

use crate::backend::trace_mark;
use crate::model::attention::AttentionImpl;
use crate::model::{ArchSpec, ChatMessage, ChatOptions, ChatTemplate, LoadedModel};

use super::block_manager::BlockManager;
use super::kv_cache::plan_num_blocks;
use super::params::{EngineConfig, SamplingParams};
use super::runner::{ModelRunner, SeqWork};
use super::sampler::sample;
use super::scheduler::{Batch, Placeholder, Scheduler, SchedulerLimits};
use super::sequence::Sequence;
use super::types::{ExpertLoad, OffloadStats, RequestId, RequestOutput, StepReport};

/// A prompt as text (needs the model's tokenizer), as token ids, or as a conversation rendered
/// by the model folder's chat template (with the assistant's header appended, as vLLM's
/// `LLM.chat`).
#[derive(Clone, Debug, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    Chat(Vec<ChatMessage>),
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
    #[error("chat prompt, but the model folder has no chat template (tokenizer_config.json's `chat_template` or chat_template.jinja)")]
    NoChatTemplate,
    #[error("{0}")]
    ChatTemplate(String),
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
    chat_template: Option<ChatTemplate>,
    next_id: RequestId,
    max_model_len: usize,
    pub(crate) block_size: usize,
    /// Model name and whether its weights are random, for reports.
    pub model_name: String,
    pub random_weights: bool,
    async_scheduling: bool,
    /// Experts per sparse layer (0 for a dense model), to read the expert load back.
    num_experts: usize,
    /// Steps whose work is queued, oldest first; their sampled tokens are not read yet.
    queued: VecDeque<QueuedStep<B>>,
}

/// A step whose work is queued: its batch, where its sampled tokens go, and the tokens.
struct QueuedStep<B: KernelBackend> {
    batch: Batch,
    placed: Vec<Placeholder>,
    tokens: StepTokens<B>,
    /// A MoE model's tokens per expert of each sparse layer, on their way to the host.
    expert_load: Option<PendingIds>,
    /// Tokens of context the step's attention reads (each sequence's cached plus new tokens).
    context_tokens: usize,
    /// Decode rows that attended a shared prefix once per group.
    cascade_rows: usize,
    /// What the expert caches did (offloading), known once the step is queued.
    offload: Option<OffloadStats>,
}

enum StepTokens<B: KernelBackend> {
    /// Sampled on the device: the ids (the next step's inputs) and their copy to the host.
    Device {
        ids: Tensor<B, 1, Int>,
        read: PendingIds,
    },
    /// Sampled on the host (none for a step with no work): the next step waits for them.
    Host(Vec<u32>),
    /// Samples nothing (a prefill chunk): a one-element copy queued behind the step's work says
    /// when it is done. Without it the host would queue a long prompt's chunks far ahead of the
    /// device, and a request arriving meanwhile would wait for all.
    Done(PendingIds),
}

impl<B: KernelBackend> QueuedStep<B> {
    fn empty(batch: Batch) -> Self {
        Self {
            batch,
            placed: Vec::new(),
            tokens: StepTokens::Host(Vec::new()),
            expert_load: None,
            context_tokens: 0,
            cascade_rows: 0,
            offload: None,
        }
    }

    /// Whether a step can be queued behind this one before its tokens are read: its tokens
    /// stay on the device for the next step to take, or it samples none (a prefill chunk).
    fn feeds_next(&self) -> bool {
        matches!(self.tokens, StepTokens::Device { .. }) || self.placed.is_empty()
    }
}

impl<B: KernelBackend> LLM<B> {
    /// Sizes the KV cache from `config.kv_budget` and builds the engine.
    pub fn new(
        model: LoadedModel<B>,
        config: EngineConfig,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        let spec = model.spec().clone();
        let max_model_len = spec
            .resolve_max_model_len(config.max_model_len)
            .map_err(|e| anyhow::anyhow!("{}: {e}", model.name))?;
        config.validate(max_model_len).map_err(anyhow::Error::msg)?;
        let attention = config.attention.resolve();
        let (tuning, _) = config
            .kernels
            .with_env_overrides()
            .map_err(anyhow::Error::msg)?;
        B::install_tuning(device, tuning);
        for peer in &model.peers {
            B::install_tuning(&peer.device, tuning);
        }
        anyhow::ensure!(
            model.decoder.device == *device,
            "{}: loaded on {:?}, but the engine runs on {device:?}",
            model.name,
            model.decoder.device
        );
        let ranks = 1 + model.peers.len();
        anyhow::ensure!(
            ranks == config.tensor_parallel_size,
            "{}: loaded over {ranks} ranks, but engine.tensor_parallel_size is {}",
            model.name,
            config.tensor_parallel_size
        );
        let mut runner = ModelRunner::new(
            (model.decoder, model.peers),
            1,
            config.block_size,
            (attention, config.attention_mode.rule()),
            device,
        );
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
            chat_template: model.chat_template,
            next_id: 0,
            max_model_len,
            block_size: config.block_size,
            model_name: model.name,
            random_weights: model.random_weights,
            async_scheduling: config.async_scheduling,
            num_experts: spec.ffn.moe().map_or(0, |m| m.num_experts),
            queued: VecDeque::new(),
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
        self.scheduler.has_unfinished() || !self.queued.is_empty()
    }

    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// The text a conversation becomes through the model's chat template.
    pub fn render_chat(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
    ) -> Result<String, RequestError> {
        let template = self
            .chat_template
            .as_ref()
            .ok_or(RequestError::NoChatTemplate)?;
        template
            .render(messages, options)
            .map_err(|e| RequestError::ChatTemplate(format!("{}: {e}", template.path.display())))
    }

    /// A prompt's token ids. Text is encoded without added special tokens (a rendered chat
    /// already has them, as with HF's `apply_chat_template`).
    pub fn tokenize(&self, prompt: Prompt) -> Result<Vec<u32>, RequestError> {
        let text = match prompt {
            Prompt::Tokens(ids) => return Ok(ids),
            Prompt::Text(text) => text,
            Prompt::Chat(messages) => self.render_chat(&messages, &ChatOptions::default())?,
        };
        let tok = self.tokenizer.as_ref().ok_or(RequestError::NoTokenizer)?;
        tok.encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| RequestError::Tokenizer(e.to_string()))
    }

    /// Refuses ids the embedding has no row for (burn's `select` would panic on them).
    pub fn check_vocab(&self, ids: &[u32]) -> Result<(), RequestError> {
        let vocab_size = self.spec().vocab_size;
        match ids.iter().find(|&&t| t as usize >= vocab_size) {
            Some(&id) => Err(RequestError::TokenOutOfRange { id, vocab_size }),
            None => Ok(()),
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
        self.check_vocab(&ids)?;
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

    /// Reads back the oldest queued step and reports it. With async scheduling the next step is
    /// queued first, so the GPU runs it while the host reads, schedules and launches.
    pub fn step(&mut self) -> anyhow::Result<StepReport> {
        let started = Instant::now();
        trace_mark("step");
        let depth = if self.async_scheduling { 2 } else { 1 };
        while self.queued.len() < depth && self.queued.back().is_none_or(QueuedStep::feeds_next) {
            let batch = self.scheduler.schedule();
            trace_mark("scheduled");
            if batch.is_empty() {
                match self.queued.back_mut() {
                    Some(last) => last.batch.preempted += batch.preempted,
                    None => self.queued.push_back(QueuedStep::empty(batch)),
                }
                break;
            }
            let step = self.queue_step(batch);
            self.queued.push_back(step);
        }
        let queued = started.elapsed();
        let step = self.queued.pop_front().expect("a step was queued");
        let tokens = match step.tokens {
            StepTokens::Device { read, .. } => read.wait().map_err(anyhow::Error::msg)?,
            StepTokens::Done(read) => {
                read.wait().map_err(anyhow::Error::msg)?;
                Vec::new()
            }
            StepTokens::Host(tokens) => tokens,
        };
        let expert_load = match step.expert_load {
            Some(read) => Some(ExpertLoad::new(
                read.wait().map_err(anyhow::Error::msg)?,
                self.num_experts,
            )),
            None => None,
        };
        trace_mark("read");
        if let Some(failure) = crate::backend::device_failure() {
            anyhow::bail!("the device failed during this step, so its results are void: {failure}");
        }
        let read = self.scheduler.read_back(&step.placed, &tokens);
        trace_mark("postprocessed");
        let finished = read
            .finished
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
        let batch = step.batch;
        Ok(StepReport {
            kind: batch.kind(),
            prefill_tokens: batch.prefill_tokens,
            decode_tokens: batch.decode_tokens,
            num_seqs: batch.seqs.len(),
            kv_blocks_used: self.scheduler.blocks.num_used(),
            kv_blocks_total: self.scheduler.blocks.num_blocks(),
            preempted: batch.preempted,
            prefix_hit_tokens: batch.prefix_hit_tokens,
            new_tokens: read.tokens,
            finished,
            expert_load,
            context_tokens: step.context_tokens,
            cascade_rows: step.cascade_rows,
            offload: step.offload,
            queued,
            duration: started.elapsed(),
        })
    }

    /// Queues `batch`'s forward pass and sampling; a token sampled on the host is read here.
    fn queue_step(&mut self, batch: Batch) -> QueuedStep<B> {
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
        let unread_ids = match self.queued.back() {
            Some(QueuedStep {
                tokens: StepTokens::Device { ids, .. },
                ..
            }) => Some(ids),
            _ => None,
        };
        let context_tokens = work.iter().map(|w| w.seq.num_computed + w.num_tokens).sum();
        let out = self.runner.execute(&work, false, unread_ids);
        let (logits, expert_load) = (out.logits, out.expert_load.map(B::read_ids_later));
        let (cascade_rows, offload) = (out.cascade_rows, out.offload);
        trace_mark("launched");
        let device_ids = |ids: Tensor<B, 1, Int>| StepTokens::Device {
            read: B::read_ids_later(ids.clone()),
            ids,
        };
        let tokens = match (logits, sampling) {
            (None, _) => {
                let marker = Tensor::<B, 1, Int>::zeros([1], &self.runner.device);
                StepTokens::Done(B::read_ids_later(marker))
            }
            (Some(logits), Some(params)) => device_ids(B::sample_rows(logits, &params)),
            // Greedy included: burn's argmax over a 150k vocabulary is one slow reduce.
            (Some(logits), None) if all_greedy => device_ids(logits.argmax(1).flatten(0, 1)),
            (Some(logits), None) => {
                let vocab = logits.dims()[1];
                let host = ModelRunner::to_host(logits);
                StepTokens::Host(
                    samplers
                        .iter()
                        .zip(host.chunks_exact(vocab))
                        .map(|(&id, row)| {
                            let seq = self.scheduler.seq_mut(id);
                            sample(row, &seq.params, &mut seq.rng)
                        })
                        .collect(),
                )
            }
        };
        let placed = self.scheduler.launched(&batch);
        QueuedStep {
            batch,
            placed,
            tokens,
            expert_load,
            context_tokens,
            cascade_rows,
            offload,
        }
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
