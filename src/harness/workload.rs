//! `[workload]` -> the requests of one run, each with its class and arrival time.
//! Deterministic: the same config, seed and vocabulary give the same requests, so every
//! variant of an experiment sees identical traffic. Each class draws from its own seeded stream,
//! so adding a class does not change the others.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::prompts_file::read_prompts;
use super::python_random::PythonRandom;
use crate::config::{
    ArrivalSpec, ClassesSpec, ExperimentConfig, LenRange, PromptsSpec, RandomSpec,
    SharedPrefixSpec, WorkloadSpec,
};
use crate::engine::{Prompt, SamplingParams};

/// nano-vllm's bench draws prompt token ids with `randint(0, 10000)`, which includes 10000:
/// the exclusive end of the range is 10001.
pub const DEFAULT_TOKEN_HI: u32 = 10_001;

/// One request of a workload.
#[derive(Clone, Debug, PartialEq)]
pub struct GenRequest {
    /// The class name (`random`, `shared_prefix`, `prompts`, or a `classes` entry's name).
    pub class: String,
    /// Seconds from the start of the timed run.
    pub arrival_s: f64,
    pub prompt: Prompt,
    pub params: SamplingParams,
}

/// A workload that cannot be built (a bad prompts file, tokens outside the vocabulary).
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read prompts file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    BadLine {
        path: String,
        line: usize,
        message: String,
    },
    #[error("prompts file {path} has no prompts")]
    Empty { path: String },
    #[error("workload.token_range [{lo}, {hi}) goes past the model's vocabulary of {vocab} tokens; use token_range = [0, {vocab}] or less")]
    TokensOutsideVocab { lo: u32, hi: u32, vocab: usize },
}

/// The requests of `cfg.workload`, sorted by arrival (ties keep generation order).
/// `vocab_size` bounds the default token range.
pub fn generate(
    cfg: &ExperimentConfig,
    vocab_size: usize,
) -> Result<Vec<GenRequest>, WorkloadError> {
    let [lo, hi] = token_range(&cfg.workload, vocab_size)?;
    let params = |max_tokens: usize| SamplingParams {
        max_tokens,
        ..cfg.sampling.clone()
    };
    let tokens = |rng: &mut StdRng, n: usize| -> Vec<u32> {
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    };
    let mut out = Vec::new();
    match &cfg.workload {
        WorkloadSpec::Random(RandomSpec {
            num_requests,
            prompt_len,
            output_len,
            ..
        }) => {
            // bench.py's draws, in its order: every prompt (length, then ids), then every
            // max_tokens, from Python's own generator.
            let mut py = PythonRandom::new(cfg.seed);
            let mut prompts = Vec::with_capacity(*num_requests);
            for _ in 0..*num_requests {
                let len = py.randint(prompt_len.min as u32, prompt_len.max as u32) as usize;
                prompts.push(
                    (0..len)
                        .map(|_| py.randint(lo, hi - 1))
                        .collect::<Vec<u32>>(),
                );
            }
            for prompt in prompts {
                let out_len = py.randint(output_len.min as u32, output_len.max as u32) as usize;
                out.push(GenRequest {
                    class: "random".into(),
                    arrival_s: 0.0,
                    prompt: Prompt::Tokens(prompt),
                    params: params(out_len),
                });
            }
        }
        WorkloadSpec::Classes(ClassesSpec { classes, .. }) => {
            for (i, class) in classes.iter().enumerate() {
                let mut rng = stream(cfg.seed, i as u64);
                for arrival_s in arrivals(&class.arrival, class.count, &mut rng) {
                    let len = draw(&mut rng, &class.prompt_len);
                    let prompt = tokens(&mut rng, len);
                    let out_len = draw(&mut rng, &class.output_len);
                    out.push(GenRequest {
                        class: class.name.clone(),
                        arrival_s,
                        prompt: Prompt::Tokens(prompt),
                        params: params(out_len),
                    });
                }
            }
        }
        WorkloadSpec::SharedPrefix(SharedPrefixSpec {
            num_requests,
            prefix_len,
            suffix_len,
            output_len,
            arrival,
            ..
        }) => {
            let mut rng = stream(cfg.seed, 0);
            let prefix = tokens(&mut rng, *prefix_len);
            for arrival_s in arrivals(arrival, *num_requests, &mut rng) {
                let mut prompt = prefix.clone();
                let suffix = draw(&mut rng, suffix_len);
                prompt.extend(tokens(&mut rng, suffix));
                let out_len = draw(&mut rng, output_len);
                out.push(GenRequest {
                    class: "shared_prefix".into(),
                    arrival_s,
                    prompt: Prompt::Tokens(prompt),
                    params: params(out_len),
                });
            }
        }
        WorkloadSpec::Prompts(PromptsSpec {
            path,
            output_len,
            arrival,
            chat,
            ..
        }) => {
            let prompts = read_prompts(path, *chat)?;
            let mut rng = stream(cfg.seed, 0);
            let times = arrivals(arrival, prompts.len(), &mut rng);
            for (prompt, arrival_s) in prompts.into_iter().zip(times) {
                let out_len = output_len
                    .as_ref()
                    .map_or(cfg.sampling.max_tokens, |len| draw(&mut rng, len));
                out.push(GenRequest {
                    class: "prompts".into(),
                    arrival_s,
                    prompt,
                    params: params(out_len),
                });
            }
        }
    }
    out.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    Ok(out)
}

/// Untimed requests that run before the measured ones: random token prompts as long as the
/// first measured prompts (32 tokens for text), at most 16 output tokens. They come from their
/// own stream, so they do not warm the prefix cache for the measured prompts.
pub fn warmup(requests: &[GenRequest], n: usize, vocab_size: usize, seed: u64) -> Vec<GenRequest> {
    let mut rng = stream(seed, u64::MAX);
    let hi = (vocab_size.min(DEFAULT_TOKEN_HI as usize).max(1)) as u32;
    (0..n)
        .filter_map(|i| requests.get(i % requests.len().max(1)))
        .map(|r| {
            let len = match &r.prompt {
                Prompt::Tokens(t) => t.len(),
                Prompt::Text(_) | Prompt::Chat(_) => 32,
            };
            let prompt = (0..len).map(|_| rng.random_range(0..hi)).collect();
            let params = SamplingParams {
                max_tokens: r.params.max_tokens.min(16),
                ignore_eos: true,
                ..r.params.clone()
            };
            GenRequest {
                class: "warmup".into(),
                arrival_s: 0.0,
                prompt: Prompt::Tokens(prompt),
                params,
            }
        })
        .collect()
}

/// `[lo, hi)` for token ids: the explicit range (checked against the vocabulary) or the default.
fn token_range(w: &WorkloadSpec, vocab_size: usize) -> Result<[u32; 2], WorkloadError> {
    match w.token_range() {
        Some([lo, hi]) if hi as usize > vocab_size => Err(WorkloadError::TokensOutsideVocab {
            lo,
            hi,
            vocab: vocab_size,
        }),
        Some(range) => Ok(range),
        None => Ok([0, (vocab_size.min(DEFAULT_TOKEN_HI as usize).max(1)) as u32]),
    }
}

/// A per-class random stream (SplitMix64 of seed and class index).
fn stream(seed: u64, index: u64) -> StdRng {
    let mut z = seed ^ index.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

fn draw(rng: &mut StdRng, len: &LenRange) -> usize {
    rng.random_range(len.min..=len.max)
}

/// Arrival times of `count` requests, in order.
fn arrivals(spec: &ArrivalSpec, count: usize, rng: &mut StdRng) -> Vec<f64> {
    let mut t = 0.0;
    (0..count)
        .map(|i| match *spec {
            ArrivalSpec::AtStart => 0.0,
            ArrivalSpec::Burst { at } => at,
            ArrivalSpec::Interval { every, start } => start + i as f64 * every,
            // As vLLM's benchmark: the first request at `start`, then exponential gaps.
            ArrivalSpec::Poisson { rate, start } => {
                if i > 0 {
                    let u: f64 = rng.random();
                    t += -(1.0 - u).ln() / rate;
                }
                start + t
            }
        })
        .collect()
}
