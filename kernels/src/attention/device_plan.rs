//! [`KernelPlan`]: one step's [`AttentionPlan`] with its arrays on the device, built once and
//! read by every layer's attention launch.
use burn::tensor::{backend::Backend, Int, Tensor};

use crate::attention::plan::{AttentionPlan, ITEM_FIELDS, MERGE_FIELDS};
use crate::step_io::packed_ints::{PackedInts, Section};
use crate::KernelBackend;

/// One step's attention plan, with its arrays on the device (built once, used by every layer).
pub struct KernelPlan<B: Backend> {
    pub plan: AttentionPlan,
    pub(crate) block_tables: Tensor<B, 2, Int>,
    pub(crate) chunk_items: Option<Tensor<B, 2, Int>>,
    pub(crate) decode_items: Option<Tensor<B, 2, Int>>,
    pub(crate) prefix_items: Option<Tensor<B, 2, Int>>,
    pub(crate) merges: Option<Tensor<B, 2, Int>>,
}

impl<B: KernelBackend> KernelPlan<B> {
    pub fn new(plan: AttentionPlan, device: &B::Device) -> Self {
        Self::with_row_padding(plan, device, 0)
    }

    /// The same arrays with `pad` unused ints after each row: views with a row stride wider
    /// than the row, as CUDA's pitched allocations give, so tests on backends that do not pitch
    /// still check that the kernels read strides rather than assume widths. burn slices into a
    /// view only when the cut-off bytes keep the buffer's alignment (else it copies): 64 ints
    /// (256 bytes) do.
    /// All five arrays travel in one upload ([`PackedInts`]).
    pub fn with_row_padding(plan: AttentionPlan, device: &B::Device, pad: usize) -> Self {
        let mut packed = PackedInts::default();
        let mut push = |v: &[i32], cols: usize| {
            let padded = v
                .chunks(cols)
                .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(-7, pad)));
            (packed.push(padded), v.len() / cols, cols)
        };
        let block_tables = push(&plan.block_tables, plan.max_blocks);
        let chunk_items = push(&plan.chunk_items, ITEM_FIELDS);
        let decode_items = push(&plan.decode_items, ITEM_FIELDS);
        let prefix_items = push(&plan.prefix_items, ITEM_FIELDS);
        let merges = push(&plan.merges, MERGE_FIELDS);
        let uploaded = packed.upload::<B>(device);
        let rows = |(section, rows, cols): (Section, usize, usize)| {
            uploaded
                .get(section)
                .reshape([rows, cols + pad])
                .slice([0..rows, 0..cols])
        };
        Self {
            block_tables: rows(block_tables),
            chunk_items: (!plan.chunk_items.is_empty()).then(|| rows(chunk_items)),
            decode_items: (!plan.decode_items.is_empty()).then(|| rows(decode_items)),
            prefix_items: (!plan.prefix_items.is_empty()).then(|| rows(prefix_items)),
            merges: (!plan.merges.is_empty()).then(|| rows(merges)),
            plan,
        }
    }
}
