//! Rotary position embedding (HF's `rotate_half` layout), with Llama 3 frequency scaling.
//! The cos/sin tables are built once in f64 on the host and kept on the device in f32.
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};

use super::arch::{ArchSpec, RopeScaling};

pub struct Rope<B: Backend> {
    /// `[max_positions, head_dim / 2]`, f32.
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

/// Inverse frequencies `theta^(-2i/d)`, rescaled per `scaling` (HF `_compute_llama3_parameters`).
pub fn inv_freq(head_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f64> {
    let base: Vec<f64> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f64 / head_dim as f64))
        .collect();
    match *scaling {
        RopeScaling::None => base,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old_len = original_max_position_embeddings as f64;
            let (low_wavelen, high_wavelen) =
                (old_len / low_freq_factor, old_len / high_freq_factor);
            base.into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old_len / wavelen - low_freq_factor)
                            / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

impl<B: Backend> Rope<B> {
    pub fn new(spec: &ArchSpec, max_positions: usize, device: &B::Device) -> Self {
        let freqs = inv_freq(spec.head_dim, spec.rope_theta, &spec.rope_scaling);
        let half = freqs.len();
        // HF computes inv_freq in f32 and the angles in f32; round the frequencies the same way.
        let angles: Vec<f64> = (0..max_positions)
            .flat_map(|p| freqs.iter().map(move |&f| p as f64 * (f as f32) as f64))
            .collect();
        let table = |f: fn(f64) -> f64| {
            let vals: Vec<f32> = angles.iter().map(|&a| f(a) as f32).collect();
            Tensor::from_data(
                TensorData::new(vals, [max_positions, half]),
                (device, DType::F32),
            )
        };
        Self {
            cos: table(f64::cos),
            sin: table(f64::sin),
        }
    }

    /// The f32 `cos` and `sin` tables, `[positions, head_dim / 2]` (for the fused kernel).
    pub fn tables(&self) -> (&Tensor<B, 2>, &Tensor<B, 2>) {
        (&self.cos, &self.sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_scaling_keeps_high_and_divides_low_frequencies() {
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let plain = inv_freq(128, 500000.0, &RopeScaling::None);
        let scaled = inv_freq(128, 500000.0, &scaling);
        assert_eq!(scaled[0], plain[0]); // wavelength 2*pi: high frequency, kept
        assert!((scaled[63] - plain[63] / 8.0).abs() < 1e-18); // longest wavelength: divided by factor
        let medium = (0..64)
            .filter(|&i| scaled[i] != plain[i] && (scaled[i] - plain[i] / 8.0).abs() > 1e-18)
            .count();
        assert!(medium > 0, "some frequencies are smoothly interpolated");
    }
}
