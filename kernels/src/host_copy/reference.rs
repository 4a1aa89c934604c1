//! The plain-burn upload: the slot rewritten by `slice_assign` from pieces of at most
//! `chunk_bytes` (cubecl stages uploads under 100 MB through pinned buffers and copies larger
//! ones from pageable memory, both at about 0.7 GB/s on the H200).
use burn::tensor::{backend::Backend, Tensor, TensorData};

/// `slots` `[n, rows, cols]` with slot `slot` replaced by `bytes` (`rows * cols` elements of
/// `slots`' dtype).
pub fn upload_slot<B: Backend>(
    slots: Tensor<B, 3>,
    slot: usize,
    bytes: &[u8],
    chunk_bytes: usize,
) -> Tensor<B, 3> {
    let [_, rows, cols] = slots.dims();
    let dtype = slots.dtype();
    let device = slots.device();
    let row_bytes = cols * dtype.size();
    assert_eq!(
        bytes.len(),
        rows * row_bytes,
        "an upload fills exactly one slot"
    );
    let rows_per_chunk = (chunk_bytes / row_bytes).max(1);
    (0..rows).step_by(rows_per_chunk).fold(slots, |slots, r0| {
        let r1 = (r0 + rows_per_chunk).min(rows);
        let piece = TensorData::from_bytes_vec(
            bytes[r0 * row_bytes..r1 * row_bytes].to_vec(),
            [1, r1 - r0, cols],
            dtype,
        );
        let piece = Tensor::<B, 3>::from_data(piece, (&device, dtype));
        slots.slice_assign([slot..slot + 1, r0..r1, 0..cols], piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::DType;

    type Cpu = burn::backend::NdArray<f32>;

    /// Pieces of one row put exactly the bytes in the slot and leave the other slots alone.
    #[test]
    fn an_upload_in_row_pieces_fills_exactly_its_slot() {
        let (rows, cols) = (3, 4);
        let device = Default::default();
        let slots = Tensor::<Cpu, 3>::ones([3, rows, cols], &device);
        let values: Vec<f32> = (0..rows * cols).map(|i| i as f32 / 3.0).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let out = upload_slot(slots, 1, &bytes, cols * DType::F32.size());
        let slot = |s: usize| {
            out.clone()
                .narrow(0, s, 1)
                .into_data()
                .to_vec::<f32>()
                .unwrap()
        };
        assert_eq!(slot(1), values);
        assert!(slot(0).iter().chain(&slot(2)).all(|&v| v == 1.0));
    }
}
