//! The CPU backend (burn-ndarray, f32): no device kernels. Attention and the projections run on
//! the host arrays in place (`host_attention`, `host_matmul`); every other op is the plain-burn
//! default.
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::attention::plan::SeqAttn;
use crate::attention::prefix::SharedPrefix;
use crate::backends::host_attention::{host_attention, HostLayout};
use crate::backends::host_matmul::{few_rows_matmul, FEW_ROWS};
use crate::backends::{AttentionShape, KernelBackend};

impl KernelBackend for NdArray<f32> {
    type StepPlan = HostLayout;

    fn plan_attention(
        seqs: &[SeqAttn],
        shape: AttentionShape,
        prefixes: &[SharedPrefix],
        _: &Self::Device,
    ) -> HostLayout {
        HostLayout::new(seqs, shape.block_size, prefixes)
    }

    fn paged_attention(
        q: Tensor<Self, 3>,
        k_cache: &Tensor<Self, 3>,
        v_cache: &Tensor<Self, 3>,
        layout: &HostLayout,
        scale: f32,
    ) -> Tensor<Self, 3> {
        use burn_ndarray::NdArrayTensor;
        let primitive = |t: Tensor<Self, 3>| t.into_primitive().tensor();
        let (NdArrayTensor::F32(qs), NdArrayTensor::F32(ks), NdArrayTensor::F32(vs)) = (
            primitive(q),
            primitive(k_cache.clone()),
            primitive(v_cache.clone()),
        ) else {
            panic!("NdArray<f32> holds f32 tensors")
        };
        ndarray_tensor(host_attention(
            view3(qs.view()),
            view3(ks.view()),
            view3(vs.view()),
            layout,
            scale,
        ))
    }
    /// burn-ndarray 0.21's matmul copies both operands on every call, even contiguous ones
    /// (its reshape turns a view into an owned array): for a weight that is the whole weight,
    /// every step. ndarray's own `dot` reads them in place; a few rows (decodes) take
    /// [`few_rows_matmul`], which also skips matrixmultiply's packing of the weight.
    fn project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Tensor<Self, 2> {
        use burn_ndarray::NdArrayTensor;
        let primitive = |t: Tensor<Self, 2>| t.into_primitive().tensor();
        let (NdArrayTensor::F32(xs), NdArrayTensor::F32(ws)) =
            (primitive(x.clone()), primitive(w.clone()))
        else {
            return x.matmul(w.clone());
        };
        let (xv, wv) = (xs.view(), ws.view());
        let matrix = "project takes 2-D tensors";
        let xm = xv.into_dimensionality::<ndarray::Ix2>().expect(matrix);
        let wm = wv.into_dimensionality::<ndarray::Ix2>().expect(matrix);
        ndarray_tensor(match xm.nrows() <= FEW_ROWS {
            true => few_rows_matmul(xm, wm).unwrap_or_else(|| xm.dot(&wm)),
            false => xm.dot(&wm),
        })
    }
    /// `project` reads strided weights in place, but matrixmultiply packs a row-major weight
    /// from contiguous rows faster than from a transposed view: lay it out once at load.
    fn prepare_weight(w: Tensor<Self, 2>) -> Tensor<Self, 2> {
        let device = w.device();
        Tensor::from_data(w.into_data(), &device)
    }
}

/// An ndarray result as a tensor of the CPU backend, without a copy.
fn ndarray_tensor<D: ndarray::Dimension, const R: usize>(
    a: ndarray::Array<f32, D>,
) -> Tensor<NdArray<f32>, R> {
    Tensor::from_primitive(TensorPrimitive::Float(burn_ndarray::NdArrayTensor::from(
        a.into_dyn().into_shared(),
    )))
}

fn view3(v: ndarray::ArrayViewD<'_, f32>) -> ndarray::ArrayView3<'_, f32> {
    v.into_dimensionality()
        .expect("attention takes 3-D tensors")
}
