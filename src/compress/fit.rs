//! The fit of one layer's experts of one weight type to a shared basis and per-expert factors,
//! on the host in f64 (faer).
//!
//! Notation: `W_e` is expert `e`'s weight in HF's `[out, in]` layout, `y = W_e x`. The basis
//! `U` is shared by the layer's experts on one side of `W_e`:
//! - **input side** (gate, up: `W_e` is `[inter, hidden]`): `W_e ≈ A_e Uᵀ`, `U` `[hidden, r]`,
//!   `A_e` `[inter, r]`, so `y = A_e (Uᵀ x)` and `Uᵀ x` is computed once per token for all
//!   experts;
//! - **output side** (down: `W_e` is `[hidden, inter]`): `W_e ≈ U B_e`, `U` `[hidden, r]`, `B_e`
//!   `[r, inter]`, so `y = U (B_e h)` and the product by `U` runs once per token on the routed
//!   experts' weighted sum.
//!
//! Each expert's calibration inputs (`X_e`, rows `x`: the block's normed input for gate/up,
//! the expert's intermediate activation for down) enter as their second moment
//! `C_e = X_eᵀ X_e / n_e`.
use faer::linalg::solvers::Solve;
use faer::{Mat, MatRef, Side};

use super::config::CompressionMethod;

/// Which side of `W_e` the basis is on (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BasisSide {
    Input,
    Output,
}

/// One expert's weight and what calibration saw of its inputs.
pub struct ExpertFitInput<'a> {
    /// `W_e`, `[out, in]`.
    pub weight: MatRef<'a, f64>,
    /// `C_e = X_eᵀ X_e / n_e` `[in, in]`, and `n_e`; `None` when no calibration row reached the
    /// expert (or the method uses none).
    pub moment: Option<(MatRef<'a, f64>, usize)>,
}

/// A layer's fit of one weight type: `basis` `U` `[hidden, r]` and one factor per expert
/// (`A_e` `[inter, r]` on the input side, `B_e` `[r, inter]` on the output side).
pub struct Fit {
    pub basis: Mat<f64>,
    pub factors: Vec<Mat<f64>>,
    /// Experts whose factor fell back to the projection (no calibration rows).
    pub fallbacks: Vec<usize>,
}

/// Fits `experts` at rank `rank` by `method`; `lambda` is the ridge strength relative to the
/// mean eigenvalue of the regularised moment (so one value suits every layer's scale).
pub fn fit_layer(
    experts: &[ExpertFitInput<'_>],
    side: BasisSide,
    rank: usize,
    method: CompressionMethod,
    lambda: f64,
) -> anyhow::Result<Fit> {
    let hidden = match side {
        BasisSide::Input => experts[0].weight.ncols(),
        BasisSide::Output => experts[0].weight.nrows(),
    };
    anyhow::ensure!(
        (1..=hidden).contains(&rank),
        "rank {rank} is outside 1..={hidden}: the shared basis spans the hidden side ({hidden})"
    );
    let basis = match method {
        CompressionMethod::Whitened => whitened_basis(experts, side, rank)?,
        _ => projection_basis(experts, side, rank)?,
    };
    let mut factors = Vec::with_capacity(experts.len());
    let mut fallbacks = Vec::new();
    for (e, expert) in experts.iter().enumerate() {
        let factor = match (method, expert.moment) {
            (CompressionMethod::Pca, _) | (_, None) => {
                if method != CompressionMethod::Pca {
                    fallbacks.push(e);
                }
                project(expert.weight, basis.as_ref(), side)
            }
            (_, Some((moment, _))) => ridge(expert.weight, moment, basis.as_ref(), side, lambda)?,
        };
        factors.push(factor);
    }
    Ok(Fit {
        basis,
        factors,
        fallbacks,
    })
}

/// `pca`'s factor: the projection of `W_e` on the basis, `A_e = W_e U` (input side) or
/// `B_e = Uᵀ W_e` (output side), the least-squares factor for orthonormal `U` with no regard to
/// the inputs.
pub fn project(w: MatRef<'_, f64>, u: MatRef<'_, f64>, side: BasisSide) -> Mat<f64> {
    match side {
        BasisSide::Input => w * u,
        BasisSide::Output => u.transpose() * w,
    }
}

/// `pca`'s (and `ridge`'s) basis: the top-`rank` singular vectors of the layer's experts stacked
/// on the shared side. Input side: the right singular vectors of `[W_1; ...; W_E]`, i.e. the top
/// eigenvectors of `Σ_e W_eᵀ W_e`; output side: the left ones of `[W_1 ... W_E]`, the top
/// eigenvectors of `Σ_e W_e W_eᵀ`. Both Gram matrices are `[hidden, hidden]`, far smaller than
/// the stacks.
fn projection_basis(
    experts: &[ExpertFitInput<'_>],
    side: BasisSide,
    rank: usize,
) -> anyhow::Result<Mat<f64>> {
    let mut gram: Option<Mat<f64>> = None;
    for expert in experts {
        let g = gram_of(expert.weight, side);
        gram = Some(match gram {
            Some(total) => total + g,
            None => g,
        });
    }
    let gram = gram.ok_or_else(|| anyhow::anyhow!("a layer with no experts"))?;
    Ok(top_eigenvectors(gram.as_ref(), rank)?.0)
}

fn gram_of(w: MatRef<'_, f64>, side: BasisSide) -> Mat<f64> {
    match side {
        BasisSide::Input => w.transpose() * w,
        BasisSide::Output => w * w.transpose(),
    }
}

/// `whitened`'s basis, which uses the activations for `U` too (the idea of SVD-LLM's whitening).
///
/// Input side: with every expert's factor the least-squares one, the calibration error of the
/// layer is `Σ_e ‖(W_e − A_e Uᵀ) C^{1/2}‖²` for the layer's pooled input moment `C` (all routed
/// rows). Writing `M_e = W_e C^{1/2}` and `Q = C^{1/2} U`, the best `A_e` leaves
/// `M_e (I − P_Q)`, `P_Q` the projector on `Q`'s columns, so the best `Q` spans the top right
/// singular vectors of the stacked `M_e`: the top eigenvectors of `C^{1/2} (Σ_e W_eᵀ W_e)
/// C^{1/2}`. Then `U = C^{-1/2} Q`, orthonormalised (its span is what matters; the ridge
/// factors that follow absorb the rest).
///
/// Output side: `‖(W_e − U B_e) H_eᵀ‖²` with the best `B_e = Uᵀ W_e` leaves the part of `W_e H_eᵀ`
/// outside `U`, so `U` is the top eigenvectors of `Σ_e n_e W_e C_e W_eᵀ`: the directions the
/// experts' outputs actually take on the calibration data, rather than those of the weights.
///
/// Experts without calibration rows count with the identity moment.
fn whitened_basis(
    experts: &[ExpertFitInput<'_>],
    side: BasisSide,
    rank: usize,
) -> anyhow::Result<Mat<f64>> {
    match side {
        BasisSide::Input => {
            let hidden = experts[0].weight.ncols();
            let mut pooled = Mat::<f64>::zeros(hidden, hidden);
            let mut rows = 0usize;
            let mut gram = Mat::<f64>::zeros(hidden, hidden);
            for expert in experts {
                if let Some((moment, n)) = expert.moment {
                    pooled += moment * (n as f64);
                    rows += n;
                }
                gram += gram_of(expert.weight, side);
            }
            if rows == 0 {
                return projection_basis(experts, side, rank);
            }
            pooled *= faer::Scale(1.0 / rows as f64);
            let (half, inv_half) = sqrt_and_inverse_sqrt(pooled.as_ref())?;
            let whitened = &half * &gram * &half;
            let (q, _) = top_eigenvectors(whitened.as_ref(), rank)?;
            Ok(orthonormalise((&inv_half * &q).as_ref()))
        }
        BasisSide::Output => {
            let hidden = experts[0].weight.nrows();
            let mut outputs = Mat::<f64>::zeros(hidden, hidden);
            for expert in experts {
                let w = expert.weight;
                outputs += match expert.moment {
                    Some((moment, n)) => (w * moment * w.transpose()) * faer::Scale(n as f64),
                    None => w * w.transpose(),
                };
            }
            Ok(top_eigenvectors(outputs.as_ref(), rank)?.0)
        }
    }
}

/// `ridge`'s factor, the closed form of
/// `min ‖(approx(F) − W_e) X_eᵀ‖² / n_e + λ' ‖F‖²` for the fixed basis `U`.
///
/// Input side, `approx(A) = A Uᵀ`: the objective is `tr((A Uᵀ − W) C (A Uᵀ − W)ᵀ) + λ' tr(A Aᵀ)`;
/// its gradient `2 (A Uᵀ − W) C U + 2 λ' A` vanishes at `A (Uᵀ C U + λ' I) = W C U`, so
/// `A = W C U (Uᵀ C U + λ' I)⁻¹`. With `C = I` and `λ' = 0` that is the projection `W U`; the
/// calibration moment weights the error by the directions inputs actually take.
///
/// Output side, `approx(B) = U B`: the gradient `2 Uᵀ (U B − W) C + 2 λ' B` vanishes at
/// `B C + λ' B = Uᵀ W C` (`Uᵀ U = I`), so `B = Uᵀ W C (C + λ' I)⁻¹`. For an invertible `C` this
/// tends to the projection `Uᵀ W` as `λ' → 0`: on the output side the inputs cannot change
/// which `B` is best, only shrink it; the activations matter for the basis (`whitened`).
///
/// `λ' = lambda · mean eigenvalue` of the matrix it regularises (`Uᵀ C U` or `C`), so `lambda`
/// is scale-free; it also keeps the solve defined when an expert saw fewer rows than `r`.
fn ridge(
    w: MatRef<'_, f64>,
    moment: MatRef<'_, f64>,
    u: MatRef<'_, f64>,
    side: BasisSide,
    lambda: f64,
) -> anyhow::Result<Mat<f64>> {
    match side {
        BasisSide::Input => {
            let cu = moment * u;
            let mut m = u.transpose() * &cu;
            regularise(&mut m, lambda);
            // A M = W C U with M symmetric: M Aᵀ = (W C U)ᵀ.
            let rhs = (w * &cu).transpose().to_owned();
            Ok(solve_spd(m.as_ref(), rhs.as_ref())?.transpose().to_owned())
        }
        BasisSide::Output => {
            let mut m = moment.to_owned();
            regularise(&mut m, lambda);
            // B (C + λ'I) = Uᵀ W C: (C + λ'I) Bᵀ = (Uᵀ W C)ᵀ.
            let rhs = (u.transpose() * w * moment).transpose().to_owned();
            Ok(solve_spd(m.as_ref(), rhs.as_ref())?.transpose().to_owned())
        }
    }
}

/// `m += lambda · (tr(m) / n) · I`, with a floor so that a zero moment still solves.
fn regularise(m: &mut Mat<f64>, lambda: f64) {
    let n = m.nrows();
    let mean = (0..n).map(|i| m[(i, i)]).sum::<f64>() / n as f64;
    let shift = (lambda * mean).max(1e-12 * mean.abs().max(1e-30));
    for i in 0..n {
        m[(i, i)] += shift;
    }
}

/// `m⁻¹ rhs` for a symmetric positive definite `m` (Cholesky).
fn solve_spd(m: MatRef<'_, f64>, rhs: MatRef<'_, f64>) -> anyhow::Result<Mat<f64>> {
    let llt = m
        .llt(Side::Lower)
        .map_err(|e| anyhow::anyhow!("the ridge system is not positive definite: {e:?}"))?;
    Ok(llt.solve(rhs))
}

/// The eigenvectors of the `rank` largest eigenvalues of symmetric `m` (columns, largest
/// first), and those eigenvalues.
pub fn top_eigenvectors(m: MatRef<'_, f64>, rank: usize) -> anyhow::Result<(Mat<f64>, Vec<f64>)> {
    let evd = m
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| anyhow::anyhow!("eigendecomposition did not converge: {e:?}"))?;
    let (u, s) = (evd.U(), evd.S().column_vector());
    let n = m.nrows();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| s[b].total_cmp(&s[a]));
    let vectors = Mat::from_fn(n, rank, |i, j| u[(i, order[j])]);
    Ok((vectors, order[..rank].iter().map(|&j| s[j]).collect()))
}

/// `(m^{1/2}, m^{-1/2})` of a symmetric positive semi-definite `m`; eigenvalues below `1e-10`
/// of the largest are floored there (directions no input took).
fn sqrt_and_inverse_sqrt(m: MatRef<'_, f64>) -> anyhow::Result<(Mat<f64>, Mat<f64>)> {
    let n = m.nrows();
    let (v, s) = top_eigenvectors(m, n)?;
    let floor = s[0].max(0.0) * 1e-10 + f64::MIN_POSITIVE;
    let scaled = |f: &dyn Fn(f64) -> f64| {
        let vs = Mat::from_fn(n, n, |i, j| v[(i, j)] * f(s[j].max(floor)));
        &vs * v.transpose()
    };
    Ok((scaled(&f64::sqrt), scaled(&|x| 1.0 / x.sqrt())))
}

/// An orthonormal basis of `a`'s columns (thin QR's Q).
fn orthonormalise(a: MatRef<'_, f64>) -> Mat<f64> {
    a.qr().compute_thin_Q()
}

#[cfg(test)]
#[path = "fit_tests.rs"]
mod tests;
