//! Command-line interface: `nanovllm <experiment.toml>` runs an experiment; subcommands
//! generate text, score perplexity, re-render reports and describe the backend.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::backend::{BackendChoice, Placement};
use crate::engine::{AttentionBackend, AttentionMode};
use crate::model::WeightsKind;

#[derive(Parser, Debug)]
#[command(
    name = "nanovllm",
    version,
    about = "A small LLM inference engine and experiment harness",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Experiment file to run (results go to results/<name>/).
    pub experiment: Option<PathBuf>,
    /// Folder under which results/<name>/ is written.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate text for prompts and print tokens/s.
    Generate(GenerateArgs),
    /// Perplexity of a model on token windows (a folder's heldout.json by default).
    Perplexity(PerplexityArgs),
    /// Re-render plots and report.md of a results folder from its CSVs alone.
    Report { dir: PathBuf },
    /// Build the compressed-experts folders an experiment's variants use (`[compression]`):
    /// calibrate, fit, write `<model>/svd_experts-<method>-r<rank>...`. Existing folders are
    /// kept unless `--force`.
    Compress {
        experiment: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Print the backend, device and attention path in use, and with `--model` the model's
    /// shape (a MoE model's experts, top-k, sparse layers, parameters all and active).
    Info(InfoArgs),
    /// The cubecl kernels: parity against the reference, and benches.
    Kernels(KernelsArgs),
    /// Times a mixed step (decodes plus a prefill chunk) against a decode step and a chunk
    /// step of the same rows.
    StepBench(StepBenchArgs),
}

#[derive(Args, Debug)]
pub struct KernelsArgs {
    #[command(subcommand)]
    pub command: KernelsCommand,
}

#[derive(Subcommand, Debug)]
pub enum KernelsCommand {
    /// Each kernel against its plain-burn reference on fresh random inputs (bf16 on CUDA).
    Check(CheckArgs),
    /// Decode attention bandwidth, the prefill attention table (kernel vs reference), and a
    /// mixed step's attention against its decode and chunk parts.
    Bench {
        #[command(flatten)]
        backend: BackendArgs,
        /// Folder for decode_attention.csv and prefill_attention.csv.
        #[arg(long, default_value = "results/kernels")]
        out: PathBuf,
    },
    /// cubek's matmul strategies and cuBLAS on qwen3-0.6b's projections, both weight layouts.
    Matmul {
        #[command(flatten)]
        backend: BackendArgs,
        /// Folder for matmul.csv.
        #[arg(long, default_value = "results/kernels")]
        out: PathBuf,
        /// Time only the engine's `project`, cuBLAS and burn's default (minutes faster).
        #[arg(long)]
        engine_only: bool,
    },
    /// What each kind of call in a decode step costs the host: time to queue it, and until done.
    HostCost(BackendArgs),
    /// One decode step's attention, paged against cascade, over shared prefixes of 128 to 8k
    /// tokens and 16 to 256 requests (the crossover table and plot).
    CascadeBench {
        #[command(flatten)]
        backend: BackendArgs,
        /// Folder for cascade_attention.csv and cascade_crossover.png.
        #[arg(long, default_value = "results/kernels")]
        out: PathBuf,
        /// Request counts to time (comma-separated; default the 16,64,256).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
        requests: Vec<u32>,
        /// Shared prefix lengths in tokens (comma-separated; default 128,512,1024,4096,8192).
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..))]
        prefixes: Vec<u32>,
    },
    /// Where a MoE layer's decode time goes (router, grouping, expert products, attention) on
    /// mixtral-8x7b and qwen3-30b-a3b shapes, beside the bytes each must read.
    MoeBench {
        #[command(flatten)]
        backend: BackendArgs,
        /// Folder for moe_decode.csv.
        #[arg(long, default_value = "results/kernels")]
        out: PathBuf,
    },
}

/// `--backend`: [`BackendChoice`] on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// `cuda-unfused` when built with `--features cuda`, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// burn-cuda with kernel fusion (bf16); slower than `cuda-unfused`.
    Cuda,
    /// burn-cuda without fusion.
    CudaUnfused,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Cpu => BackendChoice::Cpu,
            BackendArg::Cuda => BackendChoice::Cuda,
            BackendArg::CudaUnfused => BackendChoice::CudaUnfused,
        }
    }
}

/// `--attention`: [`AttentionBackend`] on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum AttentionArg {
    /// The backend's own: cubecl kernels on a GPU, host attention on the CPU.
    #[default]
    Auto,
    Kernel,
    /// Plain burn ops: the kernels' oracle and baseline.
    Reference,
}

impl From<AttentionArg> for AttentionBackend {
    fn from(a: AttentionArg) -> Self {
        match a {
            AttentionArg::Auto => AttentionBackend::Auto,
            AttentionArg::Kernel => AttentionBackend::Kernel,
            AttentionArg::Reference => AttentionBackend::Reference,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,
    /// CUDA device index.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
}

impl BackendArgs {
    pub fn placement(&self) -> Placement {
        Placement {
            backend: self.backend.into(),
            device: self.device,
        }
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// The random inputs' seed (printed by every run); the clock's when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Only these op families (all when absent).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<CheckPart>,
}

/// The op families `kernels check` covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CheckPart {
    Attention,
    Layers,
    Moe,
    Sampling,
}

#[derive(Args, Debug, Clone)]
pub struct InfoArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// HF model folder or preset name to describe (only its config.json is read).
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// HF model folder or preset name (qwen3-0.6b, llama-3.1-8b, llama-2-7b, mixtral-8x7b,
    /// qwen3-30b-a3b, their `-dense-active` twins, tiny-qwen3, tiny-llama, tiny-mixtral,
    /// tiny-qwen3-moe).
    #[arg(long, default_value = "models/tiny-qwen3-pystdlib")]
    pub model: String,
    #[arg(long, value_enum, default_value_t = WeightsArg::File)]
    pub weights: WeightsArg,
    /// Seed of random weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Attention implementation: the kernels (cubecl on the GPU, host attention on the CPU) or the plain-burn reference.
    #[arg(long, value_enum, default_value_t = AttentionArg::Auto)]
    pub attention: AttentionArg,
    /// How decode rows sharing a prefix (prefix caching) attend it: each over its own blocks, once per group (cascade), or cascade where it pays.
    #[arg(long, value_enum, default_value_t = AttentionMode::Paged)]
    pub attention_mode: AttentionMode,
    /// A MoE model's experts per layer kept on the device (`all`, a count, or bytes for all
    /// layers such as `24GB`); the rest stay in host memory and load as the router asks.
    #[arg(long, default_value = "all", value_parser = crate::model::offload::ExpertBudget::parse)]
    pub expert_budget: crate::model::offload::ExpertBudget,
    /// Ranks the model is split over (tensor parallelism); ranks on one device run as threads.
    #[arg(long, default_value_t = 1)]
    pub tensor_parallel_size: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum WeightsArg {
    File,
    Random,
}

impl From<WeightsArg> for WeightsKind {
    fn from(w: WeightsArg) -> Self {
        match w {
            WeightsArg::File => WeightsKind::File,
            WeightsArg::Random => WeightsKind::Random,
        }
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Prompt text (repeatable).
    #[arg(long, default_value = "def read_config(path):")]
    pub prompt: Vec<String>,
    /// Each prompt is a user message rendered by the model's chat template (as vLLM's `LLM.chat`).
    #[arg(long, conflicts_with = "random_prompt_len")]
    pub chat: bool,
    /// With `--chat`, a system message before each prompt.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long)]
    pub ignore_eos: bool,
    /// Random prompts of this many token ids instead of text (benchmarking; `--num-prompts` of them).
    #[arg(long, value_parser = at_least_one)]
    pub random_prompt_len: Option<usize>,
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    pub num_prompts: usize,
}

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// JSON file with `val_ids` (default: <model>/heldout.json).
    #[arg(long)]
    pub ids: Option<PathBuf>,
    #[arg(long, default_value_t = 512, value_parser = at_least_two)]
    pub window: usize,
    /// Score only the first N windows.
    #[arg(long, value_parser = at_least_one)]
    pub max_windows: Option<usize>,
}

#[derive(Args, Debug)]
pub struct StepBenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decode rows of each step (comma-separated list: one measurement per value).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub decodes: Vec<usize>,
    /// Tokens in each decode row's context.
    #[arg(long, default_value_t = 2048)]
    pub decode_ctx: usize,
    /// Prefill chunk sizes (comma-separated list).
    #[arg(long, value_delimiter = ',', default_value = "256,512,2048")]
    pub chunks: Vec<usize>,
    /// Position where each chunk ends (its prompt's tokens before the chunk are cached).
    #[arg(long, default_value_t = 4096)]
    pub chunk_end: usize,
    /// Timed rounds (each runs the three steps once).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Folder for mixed_step.csv.
    #[arg(long, default_value = "results/step_bench")]
    pub out: PathBuf,
}

/// A count flag that must be at least 1.
fn at_least_one(s: &str) -> Result<usize, String> {
    at_least(s, 1)
}

/// A scoring window: at least one token and the one it predicts.
fn at_least_two(s: &str) -> Result<usize, String> {
    at_least(s, 2)
}

fn at_least(s: &str, min: usize) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if n < min {
        return Err(format!("must be at least {min}"));
    }
    Ok(n)
}
