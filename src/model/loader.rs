//! Turns a model source (HF folder or preset name) and a weights choice into a [`LoadedModel`].
use nanovllm_kernels::KernelBackend;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use super::arch::{load_arch, ArchSpec};
use super::chat_template::ChatTemplate;
use super::decoder::Decoder;
use super::error::ModelError;
use super::ffn::ExpertsSource;
use super::offload::ExpertBudget;
use super::presets::preset;
use super::safetensor_files::SafetensorFiles;
use super::weights::WeightSource;
use crate::parallel::{Collective, TensorParallel};

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSource {
    /// A HF folder with `config.json`, `*.safetensors` and optionally `tokenizer.json`.
    Folder(PathBuf),
    /// A named architecture from [`super::presets`].
    Preset(String),
}

impl ModelSource {
    /// A preset name if it is one, else a folder path.
    pub fn parse(s: &str) -> Self {
        match preset(s) {
            Some(_) => ModelSource::Preset(s.to_string()),
            None => ModelSource::Folder(PathBuf::from(s)),
        }
    }

    /// The model's name (a preset's, or the folder's last component) and its resolved spec,
    /// without touching weights.
    pub fn arch(&self) -> Result<(String, ArchSpec), ModelError> {
        match self {
            ModelSource::Preset(name) => Ok((
                name.clone(),
                preset(name).ok_or_else(|| ModelError::UnknownPreset(name.clone()))?,
            )),
            ModelSource::Folder(dir) => {
                if !dir.is_dir() {
                    return Err(ModelError::Io {
                        path: dir.clone(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "model folder not found",
                        ),
                    });
                }
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| dir.display().to_string());
                Ok((name, load_arch(dir)?))
            }
        }
    }
}

/// Where parameter values come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsKind {
    /// The folder's safetensors.
    #[default]
    File,
    /// Seeded random values (benchmarks): outputs are meaningless, speed is real.
    Random,
}

pub struct LoadedModel<B: KernelBackend> {
    pub name: String,
    /// Rank 0's decoder (the whole model without tensor parallelism).
    pub decoder: Decoder<B>,
    /// Ranks 1.. of a tensor-parallel group, each run on a thread of its own beside rank 0.
    pub peers: Vec<Decoder<B>>,
    pub tokenizer: Option<Tokenizer>,
    /// The folder's chat template, where it has one (`Prompt::Chat` renders it).
    pub chat_template: Option<ChatTemplate>,
    pub random_weights: bool,
    /// Factored (compressed) experts' rank, where the MoE layers hold them.
    pub factored_rank: Option<usize>,
}

impl<B: KernelBackend> LoadedModel<B> {
    pub fn spec(&self) -> &ArchSpec {
        &self.decoder.spec
    }

    /// How many distinct devices the ranks are on.
    pub fn rank_devices(&self) -> usize {
        let peers = self.peers.iter().map(|p| &p.device);
        crate::parallel::distinct_devices(std::iter::once(&self.decoder.device).chain(peers)).len()
    }
}

/// Loads a model with each expert's own weights. `max_positions` bounds the rotary table (the
/// engine's `max_model_len`); `None` takes the model's `max_position_embeddings`. `seed` seeds
/// random weights.
pub fn load_model<B: KernelBackend>(
    source: &ModelSource,
    weights: WeightsKind,
    seed: u64,
    max_positions: Option<usize>,
    device: &B::Device,
) -> Result<LoadedModel<B>, ModelError> {
    load_model_with(
        source,
        weights,
        ExpertsSource::Full,
        ExpertBudget::All,
        seed,
        max_positions,
        device,
    )
}

/// [`load_model`] with the MoE layers' experts from `experts` (`compress::resolve_experts`
/// picks a compressed folder), `budget` of them per layer on the device (the rest in host
/// memory).
pub fn load_model_with<B: KernelBackend>(
    source: &ModelSource,
    weights: WeightsKind,
    experts: ExpertsSource,
    budget: ExpertBudget,
    seed: u64,
    max_positions: Option<usize>,
    device: &B::Device,
) -> Result<LoadedModel<B>, ModelError> {
    let placement = WeightPlacement {
        expert_budget: budget,
        tensor_parallel_size: 1,
    };
    load_model_placed(
        source,
        weights,
        experts,
        placement,
        seed,
        max_positions,
        device,
    )
}

/// Where a model's weights go: how many experts stay on the device, over how many ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WeightPlacement {
    pub expert_budget: ExpertBudget,
    pub tensor_parallel_size: usize,
}

/// [`load_model_with`] split over `placement.tensor_parallel_size` ranks, each reading only
/// its shard of every weight ([`crate::parallel`]): rank 0 on `device`, the others on the
/// devices after it where the backend sums across devices and there are enough
/// (`KernelBackend::rank_devices`), else all on `device`.
pub fn load_model_placed<B: KernelBackend>(
    source: &ModelSource,
    weights: WeightsKind,
    experts: ExpertsSource,
    placement: WeightPlacement,
    seed: u64,
    max_positions: Option<usize>,
    device: &B::Device,
) -> Result<LoadedModel<B>, ModelError> {
    let devices = B::rank_devices(device, placement.tensor_parallel_size.max(1));
    let budget = placement.expert_budget;
    load_model_on(
        source,
        weights,
        experts,
        budget,
        seed,
        max_positions,
        &devices,
    )
}

/// [`load_model_with`] split over `devices.len()` ranks, rank `r` on `devices[r]` (a device
/// may hold several ranks).
pub fn load_model_on<B: KernelBackend>(
    source: &ModelSource,
    weights: WeightsKind,
    experts: ExpertsSource,
    budget: ExpertBudget,
    seed: u64,
    max_positions: Option<usize>,
    devices: &[B::Device],
) -> Result<LoadedModel<B>, ModelError> {
    let tp = devices.len();
    let device = devices.first().expect("at least one rank");
    let (name, spec) = source.arch()?;
    let unsupported = |msg: String| ModelError::Unsupported {
        model: name.clone(),
        msg,
    };
    TensorParallel::check(&spec, tp).map_err(unsupported)?;
    // Refused, not run wrong (see `KernelBackend::runs_moe`).
    if !spec.moe_layers().is_empty() && !B::runs_moe() {
        return Err(ModelError::Unsupported {
            model: name,
            msg: format!(
                "MoE models do not run on the fused backend {} yet: use `cuda-unfused`",
                B::name(device)
            ),
        });
    }
    let dir = match source {
        ModelSource::Preset(_) => None,
        ModelSource::Folder(dir) => Some(dir.as_path()),
    };
    let source = match (weights, dir) {
        (WeightsKind::File, Some(dir)) => WeightSource::Files(SafetensorFiles::open(dir)?),
        (WeightsKind::File, None) => {
            return Err(ModelError::BadWeights {
                path: PathBuf::from(&name),
                msg: "a preset has no weight files: use weights = \"random\"".into(),
            });
        }
        (WeightsKind::Random, _) => {
            devices.iter().for_each(|d| B::seed(d, seed));
            WeightSource::Random
        }
    };
    // A too-long request is refused by the engine; the table only needs to cover what runs.
    let positions = spec
        .resolve_max_model_len(max_positions)
        .unwrap_or(spec.max_position_embeddings);
    let factored_rank = match &experts {
        ExpertsSource::Factored { rank, .. } => Some(*rank),
        ExpertsSource::Full | ExpertsSource::Offloaded { .. } => None,
    };
    let experts = offload_experts::<B>(&name, &spec, experts, budget, device)?;
    if tp > 1 && !matches!(experts, ExpertsSource::Full) {
        return Err(unsupported(format!(
            "tensor_parallel_size {tp} with offloaded or compressed experts is not built"
        )));
    }
    let mut decoders = Collective::<B>::for_devices(devices)
        .into_iter()
        .zip(devices)
        .enumerate()
        .map(|(rank, (collective, device))| {
            let shard = TensorParallel { rank, size: tp };
            Decoder::load(
                &spec,
                &source,
                &experts,
                positions,
                (shard, collective),
                device,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let decoder = decoders.remove(0);
    let tokenizer = match dir {
        Some(dir) => load_tokenizer(dir)?,
        None => None,
    };
    let chat_template = match dir {
        Some(dir) => ChatTemplate::from_folder(dir)?,
        None => None,
    };
    Ok(LoadedModel {
        name,
        decoder,
        peers: decoders,
        tokenizer,
        chat_template,
        random_weights: weights == WeightsKind::Random,
        factored_rank,
    })
}

/// `experts` with `budget` applied: every expert resident where the budget holds them all.
fn offload_experts<B: KernelBackend>(
    name: &str,
    spec: &ArchSpec,
    experts: ExpertsSource,
    budget: ExpertBudget,
    device: &B::Device,
) -> Result<ExpertsSource, ModelError> {
    let Some(moe) = spec.ffn.moe() else {
        return Ok(experts);
    };
    if budget == ExpertBudget::All {
        return Ok(experts);
    }
    let unsupported = |msg: String| ModelError::Unsupported {
        model: name.to_string(),
        msg,
    };
    let dtype_bytes = burn::tensor::Tensor::<B, 1>::zeros([1], device)
        .dtype()
        .size();
    let expert_bytes = 3 * moe.expert_intermediate_size * spec.hidden_size * dtype_bytes;
    let slots = || {
        budget
            .slots(moe.num_experts, expert_bytes, spec.moe_layers().len())
            .map_err(unsupported)
    };
    match experts {
        ExpertsSource::Factored { rank, .. } => {
            // Factored experts stay resident where the budget holds them all (they are smaller,
            // so a byte budget that offloads full experts may not need to).
            let (held, _) = crate::compress::expert_params(spec, Some(rank));
            let needed = (held * dtype_bytes) as u64;
            let fits = match budget {
                ExpertBudget::All => true,
                ExpertBudget::PerLayer(n) => n >= moe.num_experts,
                ExpertBudget::Bytes(b) => b >= needed,
            };
            match fits {
                true => Ok(experts),
                false => Err(unsupported(format!(
                    "expert_budget {budget} with compressed experts at rank {rank}: they need \
                     {needed} bytes to stay resident, and offloading factored experts is not built"
                ))),
            }
        }
        ExpertsSource::Full | ExpertsSource::Offloaded { .. } => match slots()? {
            n if n == moe.num_experts => Ok(ExpertsSource::Full),
            slots => Ok(ExpertsSource::Offloaded { slots }),
        },
    }
}

/// `<dir>/tokenizer.json` when present.
fn load_tokenizer(dir: &Path) -> Result<Option<Tokenizer>, ModelError> {
    let path = dir.join("tokenizer.json");
    if !path.exists() {
        return Ok(None);
    }
    Tokenizer::from_file(&path)
        .map(Some)
        .map_err(|e| ModelError::Tokenizer {
            path,
            msg: e.to_string(),
        })
}
