//! How `out = x @ w` on strided row-major tensors maps onto one column-major BLAS call,
//! `out^T = w^T @ x^T`: the sizes, whether `w` is transposed, and leading dimensions taken from
//! the strides (cubecl's optimized layout can pad rows: a 192-wide output came with a longer
//! row pitch). Pure, so every case is tested without a GPU; `cublas.rs` runs it.

/// The arguments of a column-major `gemm(op_w, N, n, m, k, w, ld_w, x, ld_x, out, ld_out)`,
/// in BLAS's integer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmLayout {
    /// Rows of `x` and `out`.
    pub m: i32,
    /// Columns of `w` and `out`.
    pub n: i32,
    /// The shared dimension.
    pub k: i32,
    /// `w` is a transposed view of `[n, k]` rows (BLAS's `op = T`), else contiguous `[k, n]`.
    pub transpose_w: bool,
    pub ld_w: i32,
    pub ld_x: i32,
    pub ld_out: i32,
}

impl GemmLayout {
    /// `None` when a layout is not one BLAS call can read: `x` and `out` need unit stride along
    /// their rows, `w` unit stride along one of its dimensions, and every size must fit an `i32`.
    pub fn new(
        x_shape: [usize; 2],
        x_strides: &[usize],
        w_shape: [usize; 2],
        w_strides: &[usize],
        out_strides: &[usize],
    ) -> Option<Self> {
        let ([m, k], [k_w, n]) = (x_shape, w_shape);
        // With a dimension of 1 both strides can read as 1, and the layout is ambiguous.
        if k != k_w || m == 0 || k < 2 || n < 2 {
            return None;
        }
        let rows_of = |s: &[usize], len: usize| (s[1] == 1 && s[0] >= len).then_some(s[0]);
        let (ld_x, ld_out) = (rows_of(x_strides, k)?, rows_of(out_strides, n)?);
        let (transpose_w, ld_w) = match (w_strides[0], w_strides[1]) {
            (1, s) if s >= k => (true, s),
            (s, 1) if s >= n => (false, s),
            _ => return None,
        };
        let int = |v: usize| i32::try_from(v).ok();
        Some(Self {
            m: int(m)?,
            n: int(n)?,
            k: int(k)?,
            transpose_w,
            ld_w: int(ld_w)?,
            ld_x: int(ld_x)?,
            ld_out: int(ld_out)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a column-major BLAS computes with `layout` on flat buffers: the oracle for the mapping.
    fn blas(layout: GemmLayout, w: &[f32], x: &[f32], out: &mut [f32]) {
        let size = |v: i32| v as usize;
        let (m, n, k) = (size(layout.m), size(layout.n), size(layout.k));
        let (ld_w, ld_x, ld_out) = (size(layout.ld_w), size(layout.ld_x), size(layout.ld_out));
        // Column-major A = op(w) is n x k, B = x^T is k x m, C = out^T is n x m.
        let a = |i: usize, l: usize| match layout.transpose_w {
            true => w[l + i * ld_w],
            false => w[i + l * ld_w],
        };
        for j in 0..m {
            for i in 0..n {
                out[i + j * ld_out] = (0..k).map(|l| a(i, l) * x[l + j * ld_x]).sum();
            }
        }
    }

    fn value(seed: usize) -> f32 {
        ((seed * 7919 + 13) % 97) as f32 / 97.0 - 0.5
    }

    /// Builds `x` `[m, k]` with row pitch `x_pitch`, a weight of the given layout and an output
    /// with row pitch `out_pitch`; runs the mapped call and checks every element of `x @ w`.
    fn check(m: usize, k: usize, n: usize, transposed: bool, x_pitch: usize, out_pitch: usize) {
        let x: Vec<f32> = (0..m * x_pitch).map(value).collect();
        let w: Vec<f32> = (0..n * k).map(|i| value(i + 1000)).collect();
        let w_at = |l: usize, j: usize| match transposed {
            true => w[j * k + l],
            false => w[l * n + j],
        };
        let w_strides = if transposed { [1, k] } else { [n, 1] };
        let layout =
            GemmLayout::new([m, k], &[x_pitch, 1], [k, n], &w_strides, &[out_pitch, 1]).unwrap();
        assert_eq!(layout.transpose_w, transposed);
        let mut out = vec![f32::NAN; m * out_pitch];
        blas(layout, &w, &x, &mut out);
        for r in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| x[r * x_pitch + l] * w_at(l, j)).sum();
                let got = out[r * out_pitch + j];
                assert!((got - want).abs() < 1e-4, "[{r}, {j}]: {got} vs {want}");
            }
        }
    }

    #[test]
    fn both_weight_layouts_give_x_times_w() {
        check(3, 5, 4, true, 5, 4);
        check(3, 5, 4, false, 5, 4);
        check(1, 64, 192, true, 64, 192);
    }

    #[test]
    fn padded_rows_use_their_pitch() {
        // The golden llama2 fixture's qkv: 192 columns in rows of 256.
        check(40, 64, 192, true, 64, 256);
        check(7, 6, 5, false, 8, 9);
    }

    #[test]
    fn layouts_one_call_cannot_read_are_refused() {
        let refuse = |x: &[usize], w: &[usize], out: &[usize]| {
            GemmLayout::new([4, 8], x, [8, 6], w, out).is_none()
        };
        assert!(refuse(&[1, 4], &[1, 8], &[6, 1]), "x column-major");
        assert!(refuse(&[8, 1], &[12, 2], &[6, 1]), "w strided both ways");
        assert!(
            refuse(&[8, 1], &[1, 8], &[5, 1]),
            "out pitch below its width"
        );
        assert!(GemmLayout::new([4, 8], &[8, 1], [7, 6], &[1, 8], &[6, 1]).is_none());
        assert!(GemmLayout::new([4, 8], &[8, 1], [8, 6], &[1, 8], &[6, 1]).is_some());
    }
}
