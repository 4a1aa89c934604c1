//! Expert compression end to end on the trained tiny Mixtral (a copy in a temporary folder):
//! a full-rank fit written, loaded back and run reproduces the uncompressed model; at low rank
//! ridge beats the projection; bad folders, ranks and calibration files are clear errors.
use std::path::{Path, PathBuf};

use nanovllm::backend::Cpu;
use nanovllm::compress::build::build;
use nanovllm::compress::{
    resolve_experts, CalibrationConfig, CompressionConfig, CompressionMethod,
};
use nanovllm::engine::token_ids::{read_token_ids, windows};
use nanovllm::engine::{EngineConfig, LLM};
use nanovllm::model::offload::ExpertBudget;
use nanovllm::model::{load_model_with, ExpertsSource, ModelSource, WeightsKind};

fn model_copy(tmp: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny-moe-pystdlib");
    let dst = tmp.join("tiny-moe");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dst.join(path.file_name().unwrap())).unwrap();
        }
    }
    dst
}

fn engine(dir: &Path, experts: ExpertsSource) -> LLM<Cpu> {
    let device = Default::default();
    let model = load_model_with::<Cpu>(
        &ModelSource::Folder(dir.to_path_buf()),
        WeightsKind::File,
        experts,
        ExpertBudget::All,
        0,
        None,
        &device,
    )
    .unwrap();
    let config = EngineConfig {
        max_model_len: Some(513),
        enable_prefix_caching: false,
        ..Default::default()
    };
    LLM::new(model, config, &device).unwrap()
}

fn config(method: CompressionMethod, rank: usize) -> CompressionConfig {
    CompressionConfig {
        method,
        rank,
        ridge_lambda: 1e-3,
        calibration: CalibrationConfig {
            range: [0, 8192],
            tokens: 4096,
            window: 256,
            cap_per_group: 1024,
            ..Default::default()
        },
    }
}

/// Builds `c` for the model in `dir` and returns the held-out mean NLL of the model loaded
/// with it, on ids `[32768, 32768 + 1024)` (disjoint from the calibration's).
fn compressed_nll(dir: &Path, c: &CompressionConfig) -> f64 {
    let mut llm = engine(dir, ExpertsSource::Full);
    build(&mut llm, dir, c).unwrap();
    drop(llm);
    let source = ModelSource::Folder(dir.to_path_buf());
    let (experts, line) = resolve_experts(&source, WeightsKind::File, Some(c)).unwrap();
    assert!(line.contains(&format!("rank {}", c.rank)), "{line}");
    heldout_nll(dir, engine(dir, experts))
}

fn heldout_nll(dir: &Path, mut llm: LLM<Cpu>) -> f64 {
    let ids = read_token_ids(&dir.join("heldout.json"), false, None, 4096).unwrap();
    let w = windows(&ids, [32768, 65536], 256, 1024).unwrap();
    llm.score(&w, 4096).unwrap().mean()
}

#[test]
fn a_full_rank_fit_reproduces_the_model_and_ridge_beats_pca_at_low_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_copy(tmp.path());
    let full = heldout_nll(&dir, engine(&dir, ExpertsSource::Full));
    // Rank = hidden: the bases span everything, the factors only round to bf16.
    let exact = compressed_nll(&dir, &config(CompressionMethod::Pca, 192));
    assert!(
        (exact - full).abs() < 5e-3,
        "full-rank pca: mean NLL {exact} vs uncompressed {full}"
    );
    let pca = compressed_nll(&dir, &config(CompressionMethod::Pca, 48));
    let ridge = compressed_nll(&dir, &config(CompressionMethod::Ridge, 48));
    assert!(
        ridge < pca && pca > full,
        "rank 48: ridge {ridge} vs pca {pca} (uncompressed {full})"
    );
}

#[test]
fn bad_compressed_folders_and_calibration_files_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_copy(tmp.path());
    let source = ModelSource::Folder(dir.clone());
    let c = config(CompressionMethod::Pca, 16);
    // Not built yet: says how to build it.
    let err = resolve_experts(&source, WeightsKind::File, Some(&c))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nanovllm compress"), "{err}");
    let mut llm = engine(&dir, ExpertsSource::Full);
    // A rank past the hidden size.
    let err = build(&mut llm, &dir, &config(CompressionMethod::Pca, 193))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("rank = 193") && err.contains("1..=192"),
        "{err}"
    );
    build(&mut llm, &dir, &c).unwrap();
    let folder = dir.join(c.folder_name());
    let meta_path = folder.join("metadata.json");
    let meta = std::fs::read_to_string(&meta_path).unwrap();
    // Fitted to another model.
    std::fs::write(
        &meta_path,
        meta.replace("\"hidden_size\": 192", "\"hidden_size\": 256"),
    )
    .unwrap();
    let err = format!(
        "{:#}",
        resolve_experts(&source, WeightsKind::File, Some(&c))
            .err()
            .unwrap()
    );
    assert!(
        err.contains("metadata.json") && err.contains("another model"),
        "{err}"
    );
    // A rank that does not match the stored tensors: the file and tensor are named.
    std::fs::write(&meta_path, meta.replace("\"rank\": 16", "\"rank\": 20")).unwrap();
    let (experts, _) = resolve_experts(&source, WeightsKind::File, Some(&c)).unwrap();
    let err = load_model_with::<Cpu>(
        &source,
        WeightsKind::File,
        experts,
        ExpertBudget::All,
        0,
        None,
        &Default::default(),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        err.contains("bases.safetensors") && err.contains("basis"),
        "{err}"
    );
    // Calibration ids outside the vocabulary: the file and the position.
    let bad_ids = tmp.path().join("ids.json");
    std::fs::write(&bad_ids, "[1, 2, 4096, 3]").unwrap();
    let err = read_token_ids(&bad_ids, false, None, 4096)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("ids.json") && err.contains("id 2 is 4096"),
        "{err}"
    );
}

/// Compressed experts under an expert budget: they load where the budget holds all of them
/// (factored experts are not offloaded), and a smaller budget is an error that says how many
/// bytes they need.
#[test]
fn compressed_experts_load_under_a_budget_that_holds_them_and_not_under_a_smaller_one() {
    let source = ModelSource::Preset("tiny-mixtral".into());
    let (_, spec) = source.arch().unwrap();
    let rank = 8;
    let (held, _) = nanovllm::compress::expert_params(&spec, Some(rank));
    let needed = (held * 4) as u64; // f32 on the CPU
    let factored = || ExpertsSource::Factored { files: None, rank };
    let load = |budget| {
        load_model_with::<Cpu>(
            &source,
            WeightsKind::Random,
            factored(),
            budget,
            0,
            None,
            &Default::default(),
        )
    };
    let experts = spec.ffn.moe().unwrap().num_experts;
    for fits in [
        ExpertBudget::All,
        ExpertBudget::PerLayer(experts),
        ExpertBudget::Bytes(needed),
    ] {
        let model = load(fits).unwrap_or_else(|e| panic!("{fits}: {e}"));
        assert_eq!(model.factored_rank, Some(rank), "{fits}");
    }
    for short in [
        ExpertBudget::PerLayer(experts - 1),
        ExpertBudget::Bytes(needed - 1),
    ] {
        let err = load(short).err().unwrap().to_string();
        assert!(
            err.contains(&format!("they need {needed} bytes"))
                && err.contains("offloading factored experts is not built"),
            "{short}: {err}"
        );
    }
}
