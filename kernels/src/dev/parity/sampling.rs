//! Device sampling against its host twin and softmax.
use burn::tensor::{Int, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::backends::KernelBackend;
use crate::dev::ops::DevOps;
use crate::sample::DeviceSampling;
use crate::sample::{key_from_seed, sample_row_host, RowSampling};

use super::upload;

/// How the device sampler agreed with its host twin.
#[derive(Debug, Clone)]
pub struct SamplingParity {
    pub greedy_rows: usize,
    pub greedy_mismatches: usize,
    pub sampled_rows: usize,
    /// Rows where device and host picked different tokens: only possible when two noised
    /// scores tie within the rounding of `ln` on the two sides.
    pub sampled_mismatches: usize,
    /// Frequency ratio of two tokens whose probabilities are 2:1 (should be near 2).
    pub two_to_one_ratio: f64,
}

/// Device sampling against [`sample_row_host`] on random logits (an odd vocabulary size), and
/// the frequencies of many draws against softmax.
pub fn run_sampling<B: DevOps>(seed: u64, dev: &B::Device) -> SamplingParity {
    let mut rng = StdRng::seed_from_u64(seed);
    let (rows, vocab) = (64, 4999);
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|_| rng.random_range(-6.0f32..6.0))
        .collect();
    let params: Vec<RowSampling> = (0..rows)
        .map(|r| RowSampling {
            temperature: if r % 2 == 0 {
                0.0
            } else {
                rng.random_range(0.3..1.5)
            },
            key: key_from_seed(rng.random()),
            step: rng.random_range(0..5000),
        })
        .collect();
    let (t, held) = upload::<B, 2>(logits, [rows, vocab], dev);
    let got = ids(B::sample_rows(t, &DeviceSampling::new(&params, dev)));
    let (mut greedy_mismatches, mut sampled_mismatches) = (0, 0);
    for (r, p) in params.iter().enumerate() {
        let want = sample_row_host(&held[r * vocab..(r + 1) * vocab], *p);
        if got[r] != want {
            match p.temperature == 0.0 {
                true => greedy_mismatches += 1,
                false => sampled_mismatches += 1,
            }
        }
    }
    // p(1) / p(0) = 2 at temperature 1; the other tokens are far below.
    let draws = 4000;
    let mut row = vec![-30.0f32; 8];
    row[0] = 0.0;
    row[1] = 2.0f32.ln();
    let many: Vec<f32> = (0..draws).flat_map(|_| row.clone()).collect();
    let params: Vec<RowSampling> = (0..draws)
        .map(|i| RowSampling {
            temperature: 1.0,
            key: 12345,
            step: i as u32,
        })
        .collect();
    let t = Tensor::<B, 2>::from_data(TensorData::new(many, [draws, 8]), dev);
    let picks = ids(B::sample_rows(t, &DeviceSampling::new(&params, dev)));
    let count = |tok| picks.iter().filter(|&&p| p == tok).count() as f64;
    SamplingParity {
        greedy_rows: rows / 2,
        greedy_mismatches,
        sampled_rows: rows / 2,
        sampled_mismatches,
        two_to_one_ratio: count(1) / count(0).max(1.0),
    }
}

fn ids<B: KernelBackend>(t: Tensor<B, 1, Int>) -> Vec<u32> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap()
        .into_iter()
        .map(|v| v as u32)
        .collect()
}
