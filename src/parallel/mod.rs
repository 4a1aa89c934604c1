//! Tensor parallelism (`[engine] tensor_parallel_size`): which slice of each weight a rank
//! holds ([`shard`]) and how the ranks' partial results are combined ([`collective`]).
//!
//! Megatron's split, as vLLM's: q/k/v and gate/up column-parallel (each rank a range of heads
//! or of the MLP width), o and down row-parallel with an all-reduce after them; the embedding
//! and LM head vocab-parallel (a range of token rows each: the embedding's rows summed, the
//! logits gathered); KV heads split across ranks, replicated where there are fewer than ranks;
//! MoE experts split by shard (every rank holds every expert's slice of the MLP width, the
//! router replicated). Ranks on one device run as threads ([`collective::ThreadGroup`]): the
//! CPU tests' simulated ranks, and the reduction order a multi-GPU group must match.
pub mod collective;
pub mod shard;

pub use collective::{Collective, ThreadGroup};

/// `devices` each once, in first-seen order (rank 0's first): where a group's ranks are.
pub fn distinct_devices<'a, D: PartialEq + Clone + 'a>(
    devices: impl IntoIterator<Item = &'a D>,
) -> Vec<D> {
    let mut seen: Vec<D> = Vec::new();
    for d in devices {
        if !seen.contains(d) {
            seen.push(d.clone());
        }
    }
    seen
}
pub use shard::{Cut, TensorParallel};
