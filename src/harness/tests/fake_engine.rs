//! A deterministic stand-in for the engine, on a simulated clock: a step that prefills
//! costs `prefill_s_per_token` per prompt token, a decode step costs `decode_s`. Like
//! nano-vllm's scheduler, a step is all prefill (every waiting prompt) or all decode.
//! Output token k of every request is token id 7 + k.
//!
//! With `moe_experts = E` (at least 3) it reports a MoE model's expert load: two sparse layers,
//! top-2; layer 0 sends every token to experts 0 and 1, layer 1 sends token i of the step to
//! expert 0 and to expert 2 + i mod (E - 2). For n tokens and E = 4 that is
//! `[[n, n, 0, 0], [n, 0, ceil(n/2), floor(n/2)]]`.
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::engine::{
    ExpertLoad, FinishReason, Prompt, RequestId, RequestOutput, SamplingParams, StepKind,
    StepReport,
};
use crate::harness::{Clock, EngineInfo, StepEngine};

/// Simulated seconds, shared by the loop and the fake engine.
#[derive(Clone, Default)]
pub struct SimClock(pub Rc<Cell<f64>>);

impl Clock for SimClock {
    fn now(&self) -> f64 {
        self.0.get()
    }
    fn sleep(&self, secs: f64) {
        self.0.set(self.0.get() + secs.max(0.0));
    }
}

struct Seq {
    id: RequestId,
    prompt: Vec<u32>,
    out: Vec<u32>,
    max_tokens: usize,
}

pub struct FakeEngine {
    pub clock: SimClock,
    pub prefill_s_per_token: f64,
    pub decode_s: f64,
    /// Prompts longer than this are refused.
    pub max_prompt: usize,
    /// `step` fails on this step index.
    pub fail_at_step: Option<usize>,
    /// `step` panics on this step index.
    pub panic_at_step: Option<usize>,
    /// Sets this flag (as Ctrl-C would) when this step index starts.
    pub stop_at_step: Option<(usize, Arc<AtomicBool>)>,
    pub steps: usize,
    pub random_weights: bool,
    /// Experts of the simulated MoE model; 0 for a dense model (no expert load).
    pub moe_experts: usize,
    next_id: RequestId,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
}

impl FakeEngine {
    pub fn new(clock: SimClock) -> Self {
        FakeEngine {
            clock,
            prefill_s_per_token: 0.001,
            decode_s: 0.01,
            max_prompt: usize::MAX,
            fail_at_step: None,
            panic_at_step: None,
            stop_at_step: None,
            steps: 0,
            random_weights: true,
            moe_experts: 0,
            next_id: 100,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    fn advance(&self, secs: f64) {
        self.clock.sleep(secs);
    }

    /// The routing described in the header, for a step of `tokens` tokens.
    fn expert_load(&self, tokens: usize) -> Option<ExpertLoad> {
        let e = self.moe_experts;
        if e == 0 {
            return None;
        }
        let mut layers = vec![vec![0u32; e]; 2];
        for i in 0..tokens {
            for (layer, second) in [(0, 1), (1, 2 + i % (e - 2))] {
                layers[layer][0] += 1;
                layers[layer][second] += 1;
            }
        }
        Some(ExpertLoad { per_layer: layers })
    }
}

impl StepEngine for FakeEngine {
    fn add_request(&mut self, prompt: Prompt, params: SamplingParams) -> Result<RequestId, String> {
        let Prompt::Tokens(prompt) = prompt else {
            return Err("the fake engine has no tokenizer".into());
        };
        if prompt.len() > self.max_prompt {
            return Err(format!(
                "prompt of {} tokens is longer than max_model_len {}",
                prompt.len(),
                self.max_prompt
            ));
        }
        self.next_id += 1;
        self.waiting.push_back(Seq {
            id: self.next_id,
            prompt,
            out: Vec::new(),
            max_tokens: params.max_tokens,
        });
        Ok(self.next_id)
    }

    fn step(&mut self) -> anyhow::Result<StepReport> {
        let index = self.steps;
        self.steps += 1;
        if let Some((at, flag)) = &self.stop_at_step {
            if *at == index {
                flag.store(true, Ordering::SeqCst);
            }
        }
        if self.fail_at_step == Some(index) {
            anyhow::bail!("simulated device failure");
        }
        if self.panic_at_step == Some(index) {
            panic!("simulated panic");
        }
        // A prefill reads its prompts; a decode each sequence's prompt and outputs so far.
        let context_tokens: usize = match self.waiting.is_empty() {
            true => self
                .running
                .iter()
                .map(|s| s.prompt.len() + s.out.len())
                .sum(),
            false => self.waiting.iter().map(|s| s.prompt.len()).sum(),
        };
        let (kind, prefill_tokens, decode_tokens, cost) = if !self.waiting.is_empty() {
            let tokens: usize = self.waiting.iter().map(|s| s.prompt.len()).sum();
            self.running.extend(self.waiting.drain(..));
            (
                StepKind::Prefill,
                tokens,
                0,
                tokens as f64 * self.prefill_s_per_token,
            )
        } else {
            (StepKind::Decode, 0, self.running.len(), self.decode_s)
        };
        let num_seqs = if kind == StepKind::Prefill {
            self.running.iter().filter(|s| s.out.is_empty()).count()
        } else {
            self.running.len()
        };
        let mut new_tokens = Vec::new();
        for s in self
            .running
            .iter_mut()
            .filter(|s| kind == StepKind::Decode || s.out.is_empty())
        {
            // Token k of every request is 7 + k, so tests can tell tokens apart.
            let token = 7 + s.out.len() as u32;
            s.out.push(token);
            new_tokens.push((s.id, token));
        }
        let (done, still): (Vec<Seq>, Vec<Seq>) = self
            .running
            .drain(..)
            .partition(|s| s.out.len() >= s.max_tokens);
        self.running = still;
        self.advance(cost);
        let finished = done
            .into_iter()
            .map(|s| RequestOutput {
                id: s.id,
                prompt_token_ids: s.prompt,
                token_ids: s.out,
                text: String::new(),
                finish_reason: FinishReason::Length,
            })
            .collect();
        Ok(StepReport {
            kind,
            prefill_tokens,
            decode_tokens,
            num_seqs,
            kv_blocks_used: self.running.len(),
            kv_blocks_total: 64,
            preempted: 0,
            prefix_hit_tokens: 0,
            new_tokens,
            finished,
            expert_load: self.expert_load(prefill_tokens + decode_tokens),
            context_tokens,
            cascade_rows: 0,
            offload: None,
            duration: Duration::from_secs_f64(cost),
            queued: Duration::from_secs_f64(cost / 2.0),
        })
    }

    fn has_unfinished(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    fn info(&self) -> EngineInfo {
        EngineInfo {
            model: "tiny-qwen3".into(),
            random_weights: self.random_weights,
            backend: "fake".into(),
            device: "simulated".into(),
            dtype: "f32".into(),
            attention_backend: "reference".into(),
            num_params: 1234,
            vocab_size: 1024,
            max_model_len: 4096,
            experts: String::new(),
            expert_params: 0,
            full_expert_params: 0,
            tensor_parallel_devices: 1,
            dtype_bytes: 4,
        }
    }
}
