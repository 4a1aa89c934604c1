//! A sparse layer's experts read into host memory, one [`HostExpert`] each, for expert
//! offloading ([`super::offload`]): from the safetensors (either HF layout) or drawn at random
//! on the device and copied back (random presets: each expert drawn alone, so the values differ
//! from an all-resident run's; speed work only). Page-locked where the backend can
//! ([`KernelBackend::host_bytes`]).
use burn::tensor::{DType, Distribution, Tensor, TensorData};
use nanovllm_kernels::KernelBackend;

use super::arch::MoeSpec;
use super::error::ModelError;
use super::offload::HostExpert;
use super::weights::{names, WeightSource};

/// Layer `layer`'s experts in `dtype` (the device's float dtype). `fused`: transformers 5's
/// one tensor per projection for all experts.
pub fn load_host_experts<B: KernelBackend>(
    moe: &MoeSpec,
    layer: usize,
    hidden: usize,
    source: &WeightSource,
    fused: bool,
    dtype: DType,
    device: &B::Device,
) -> Result<Vec<HostExpert>, ModelError> {
    use names::moe as m;
    let n = |rest: &str| names::layer(layer, rest);
    let (e, inter) = (moe.num_experts, moe.expert_intermediate_size);
    let bytes = |data: TensorData| data.convert_dtype(dtype).into_bytes().to_vec();
    let expert = |gate_up: Vec<u8>, down: Vec<u8>| HostExpert {
        gate_up: B::host_bytes(gate_up, device),
        down: B::host_bytes(down, device),
    };
    match source {
        WeightSource::Files(files) if fused => {
            let gate_up = bytes(files.host_data(&n(m::FUSED_GATE_UP), &[e, 2 * inter, hidden])?);
            let down = bytes(files.host_data(&n(m::FUSED_DOWN), &[e, hidden, inter])?);
            Ok(gate_up
                .chunks_exact(gate_up.len() / e)
                .zip(down.chunks_exact(down.len() / e))
                .map(|(g, d)| expert(g.to_vec(), d.to_vec()))
                .collect())
        }
        WeightSource::Files(files) => (0..e)
            .map(|x| {
                let [g, u, d] = m::expert(moe.naming, x).map(|w| n(&w));
                let mut gate_up = bytes(files.host_data(&g, &[inter, hidden])?);
                gate_up.extend(bytes(files.host_data(&u, &[inter, hidden])?));
                Ok(expert(
                    gate_up,
                    bytes(files.host_data(&d, &[hidden, inter])?),
                ))
            })
            .collect(),
        WeightSource::Random => {
            let draw = |shape: [usize; 2]| {
                bytes(
                    Tensor::<B, 2>::random(shape, Distribution::Normal(0.0, 0.02), device)
                        .into_data(),
                )
            };
            Ok((0..e)
                .map(|_| expert(draw([2 * inter, hidden]), draw([hidden, inter])))
                .collect())
        }
    }
}
