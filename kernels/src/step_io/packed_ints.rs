//! Several small int arrays in one upload. Each upload is a task of its own on cubecl's device
//! thread, about 10 µs apiece before a step's first kernel can run (GPU trace of the bench: a
//! step's seven uploads took 67 µs at batch 1), so a step's arrays travel together and are
//! handed out as views.
use burn::tensor::{Int, Tensor, TensorData};

use crate::KernelBackend;

/// Arrays start at multiples of this many ints (256 bytes), the alignment a view's start needs
/// ([`KernelBackend::int_section`]).
const ALIGN: usize = 64;

/// Where one array lies in a [`PackedInts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    start: usize,
    len: usize,
}

/// Int arrays gathered on the host for one upload.
#[derive(Debug, Default)]
pub struct PackedInts {
    data: Vec<i32>,
}

impl PackedInts {
    /// Appends `values`; the returned section names them in the upload.
    pub fn push(&mut self, values: impl IntoIterator<Item = i32>) -> Section {
        let start = self.data.len();
        self.data.extend(values);
        let len = self.data.len() - start;
        self.data.resize(start + len.next_multiple_of(ALIGN), 0);
        Section { start, len }
    }

    pub fn upload<B: KernelBackend>(self, device: &B::Device) -> UploadedInts<B> {
        let n = self.data.len();
        UploadedInts {
            all: (n > 0).then(|| Tensor::from_data(TensorData::new(self.data, [n]), device)),
            device: device.clone(),
        }
    }
}

/// The device copy of a [`PackedInts`].
pub struct UploadedInts<B: KernelBackend> {
    all: Option<Tensor<B, 1, Int>>,
    device: B::Device,
}

impl<B: KernelBackend> UploadedInts<B> {
    /// The section's array: a view into the upload (an empty array is a tensor of its own).
    pub fn get(&self, s: Section) -> Tensor<B, 1, Int> {
        match (&self.all, s.len) {
            (Some(all), len) if len > 0 => B::int_section(all, s.start, len),
            _ => Tensor::from_data(TensorData::new(Vec::<i32>::new(), [0]), &self.device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    /// Every section reads back as pushed, empty ones included, and starts aligned.
    #[test]
    fn sections_read_back_as_pushed() {
        let mut packed = PackedInts::default();
        let arrays: [Vec<i32>; 4] = [vec![3, 1, 4], vec![], (0..130).collect(), vec![-7]];
        let sections: Vec<Section> = arrays.iter().map(|a| packed.push(a.clone())).collect();
        assert!(sections.iter().all(|s| s.start % ALIGN == 0));
        let uploaded = packed.upload::<NdArray>(&Default::default());
        for (s, want) in sections.into_iter().zip(arrays) {
            let got: Vec<i64> = uploaded
                .get(s)
                .into_data()
                .convert::<i64>()
                .to_vec()
                .unwrap();
            assert_eq!(got, want.iter().map(|&v| v as i64).collect::<Vec<_>>());
        }
    }
}
