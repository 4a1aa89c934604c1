//! `x @ w` for a few rows on the CPU: the decode step's projections. matrixmultiply packs the
//! whole weight into its panel layout on every call, which at a few rows costs more than the
//! product itself (perf on a 10-sequence decode: 37% of the time packing, 20% multiplying).
//! Here each weight row is read once, in place, and added into every output row: one pass
//! over the weight, the bound at this size.
use std::ops::Range;

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

/// Up to this many rows take [`few_rows_matmul`]; more take matrixmultiply, whose packing
/// pays off once it is shared by enough rows.
pub const FEW_ROWS: usize = 16;

/// Output columns per task: `rows × COLUMNS` partial sums stay in L1/L2 while the weight
/// streams through.
const COLUMNS: usize = 512;

/// `x` `[rows, k]` times a row-major `w` `[k, n]`; `None` when `w` is not row-major contiguous.
pub fn few_rows_matmul(x: ArrayView2<f32>, w: ArrayView2<f32>) -> Option<Array2<f32>> {
    let (rows, k) = x.dim();
    let n = w.dim().1;
    let w = w.to_slice()?;
    let x = x.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let tiles: Vec<Vec<f32>> = (0..n.div_ceil(COLUMNS))
        .into_par_iter()
        .map(|tile| {
            let columns = tile * COLUMNS..(tile * COLUMNS + COLUMNS).min(n);
            let mut sums = vec![0.0f32; rows * columns.len()];
            accumulate_tile(x, w, rows, k, n, columns, &mut sums);
            sums
        })
        .collect();
    let mut out = Array2::zeros((rows, n));
    for (tile, sums) in tiles.iter().enumerate() {
        let start = tile * COLUMNS;
        let width = sums.len() / rows;
        for r in 0..rows {
            out.row_mut(r).as_slice_mut().expect("row-major")[start..start + width]
                .copy_from_slice(&sums[r * width..(r + 1) * width]);
        }
    }
    Some(out)
}

fn accumulate_tile(
    x: &[f32],
    w: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    columns: Range<usize>,
    sums: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { accumulate_tile_avx2(x, w, rows, k, n, columns, sums) };
    }
    accumulate_tile_portable(x, w, rows, k, n, columns, sums)
}

/// The portable loop, compiled for AVX2 and FMA (the build's baseline is SSE2).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_tile_avx2(
    x: &[f32],
    w: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    columns: Range<usize>,
    sums: &mut [f32],
) {
    accumulate_tile_portable(x, w, rows, k, n, columns, sums)
}

#[inline(always)]
fn accumulate_tile_portable(
    x: &[f32],
    w: &[f32],
    rows: usize,
    k: usize,
    n: usize,
    columns: Range<usize>,
    sums: &mut [f32],
) {
    let width = columns.len();
    for kk in 0..k {
        let w_row = &w[kk * n + columns.start..kk * n + columns.end];
        for r in 0..rows {
            let a = x[r * k + kk];
            let out = &mut sums[r * width..(r + 1) * width];
            for (o, &b) in out.iter_mut().zip(w_row) {
                *o = a.mul_add(b, *o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::few_rows_matmul;

    /// Odd sizes (a last partial column tile) against ndarray's dot, a column-major `x`, and a
    /// strided weight declined.
    #[test]
    fn few_rows_matmul_matches_dot() {
        let (rows, k, n) = (3, 37, 1100);
        let x = Array2::from_shape_fn((rows, k), |(i, j)| ((i * 7 + j * 3) % 11) as f32 - 5.0);
        let w = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 13) % 17) as f32 * 0.1);
        let out = few_rows_matmul(x.view(), w.view()).expect("row-major weight");
        let expected = x.dot(&w);
        assert!(out.iter().all(|v| v.is_finite()), "non-finite output");
        let diff = (&out - &expected)
            .mapv(f32::abs)
            .fold(0.0f32, |m, &d| m.max(d));
        assert!(diff < 1e-3, "differs from dot by {diff}");
        let x_columns = x.t().to_owned();
        let strided_x = few_rows_matmul(x_columns.t(), w.view()).expect("row-major weight");
        assert_eq!(strided_x, out);
        let wide = Array2::<f32>::zeros((n, k));
        assert!(few_rows_matmul(x.view(), wide.t()).is_none());
    }
}
