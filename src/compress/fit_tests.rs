use faer::Mat;
use rand::{rngs::StdRng, Rng, SeedableRng};

use super::*;

fn random(rng: &mut StdRng, rows: usize, cols: usize) -> Mat<f64> {
    Mat::from_fn(rows, cols, |_, _| rng.random_range(-1.0..1.0))
}

/// Rows with very different scales per input direction, as activations have.
fn anisotropic_rows(rng: &mut StdRng, n: usize, dim: usize) -> Mat<f64> {
    Mat::from_fn(n, dim, |_, j| {
        rng.random_range(-1.0..1.0) * (4.0 / (1.0 + j as f64))
    })
}

fn moment(x: &Mat<f64>) -> Mat<f64> {
    (x.transpose() * x) * faer::Scale(1.0 / x.nrows() as f64)
}

fn max_abs(m: &Mat<f64>) -> f64 {
    let mut worst = 0.0f64;
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            worst = worst.max(m[(i, j)].abs());
        }
    }
    worst
}

/// `‖(A Uᵀ − W) Xᵀ‖²` summed over the experts: the calibration error on the input side.
fn input_error(weights: &[Mat<f64>], xs: &[Mat<f64>], fit: &Fit) -> f64 {
    weights
        .iter()
        .zip(xs)
        .zip(&fit.factors)
        .map(|((w, x), a)| {
            let diff = a * fit.basis.transpose() - w;
            let e = &diff * x.transpose();
            e.squared_norm_l2()
        })
        .sum()
}

fn inputs<'a>(
    weights: &'a [Mat<f64>],
    moments: &'a [Mat<f64>],
    n: usize,
) -> Vec<ExpertFitInput<'a>> {
    weights
        .iter()
        .zip(moments)
        .map(|(w, c)| ExpertFitInput {
            weight: w.as_ref(),
            moment: Some((c.as_ref(), n)),
        })
        .collect()
}

#[test]
fn pca_recovers_experts_that_share_a_basis_of_the_rank() {
    let mut rng = StdRng::seed_from_u64(1);
    let (hidden, inter, rank) = (24, 16, 6);
    let basis = random(&mut rng, hidden, rank).qr().compute_thin_Q();
    let weights: Vec<Mat<f64>> = (0..4)
        .map(|_| random(&mut rng, inter, rank) * basis.transpose())
        .collect();
    let experts: Vec<_> = weights
        .iter()
        .map(|w| ExpertFitInput {
            weight: w.as_ref(),
            moment: None,
        })
        .collect();
    let fit = fit_layer(
        &experts,
        BasisSide::Input,
        rank,
        CompressionMethod::Pca,
        0.0,
    )
    .unwrap();
    for (w, a) in weights.iter().zip(&fit.factors) {
        let err = max_abs(&(a * fit.basis.transpose() - w));
        assert!(err < 1e-9, "reconstruction error {err}");
    }
    // The basis is orthonormal.
    let gram = fit.basis.transpose() * &fit.basis;
    assert!(max_abs(&(gram - Mat::<f64>::identity(rank, rank))) < 1e-9);
}

#[test]
fn ridge_solves_its_normal_equation_on_the_input_side() {
    let mut rng = StdRng::seed_from_u64(2);
    let (hidden, inter, rank, n, lambda) = (20, 12, 5, 64, 0.05);
    let weights: Vec<Mat<f64>> = (0..3).map(|_| random(&mut rng, inter, hidden)).collect();
    let moments: Vec<Mat<f64>> = (0..3)
        .map(|_| moment(&anisotropic_rows(&mut rng, n, hidden)))
        .collect();
    let fit = fit_layer(
        &inputs(&weights, &moments, n),
        BasisSide::Input,
        rank,
        CompressionMethod::Ridge,
        lambda,
    )
    .unwrap();
    // A (Uᵀ C U + λ' I) = W C U with λ' = λ · tr(Uᵀ C U) / r.
    let u = &fit.basis;
    for ((w, c), a) in weights.iter().zip(&moments).zip(&fit.factors) {
        let m = u.transpose() * c * u;
        let shift = lambda * (0..rank).map(|i| m[(i, i)]).sum::<f64>() / rank as f64;
        let lhs = a * (m + Mat::<f64>::identity(rank, rank) * faer::Scale(shift));
        let rhs = w * c * u;
        let err = max_abs(&(lhs - &rhs)) / max_abs(&rhs);
        assert!(err < 1e-9, "normal equation residual {err}");
    }
}

#[test]
fn ridge_with_identity_moments_and_no_shrinkage_is_the_projection() {
    let mut rng = StdRng::seed_from_u64(3);
    let (hidden, inter, rank) = (16, 10, 4);
    let weights: Vec<Mat<f64>> = (0..3).map(|_| random(&mut rng, inter, hidden)).collect();
    let moments: Vec<Mat<f64>> = (0..3).map(|_| Mat::identity(hidden, hidden)).collect();
    let ridge = fit_layer(
        &inputs(&weights, &moments, 100),
        BasisSide::Input,
        rank,
        CompressionMethod::Ridge,
        0.0,
    )
    .unwrap();
    for (w, a) in weights.iter().zip(&ridge.factors) {
        let err = max_abs(&(a - w * &ridge.basis));
        assert!(err < 1e-9, "ridge differs from W U by {err}");
    }
}

#[test]
fn ridge_and_whitened_beat_pca_on_the_calibration_error() {
    let mut rng = StdRng::seed_from_u64(4);
    let (hidden, inter, rank, n) = (24, 16, 6, 200);
    let weights: Vec<Mat<f64>> = (0..4).map(|_| random(&mut rng, inter, hidden)).collect();
    let xs: Vec<Mat<f64>> = (0..4)
        .map(|_| anisotropic_rows(&mut rng, n, hidden))
        .collect();
    let moments: Vec<Mat<f64>> = xs.iter().map(moment).collect();
    let error = |method| {
        let fit = fit_layer(
            &inputs(&weights, &moments, n),
            BasisSide::Input,
            rank,
            method,
            1e-6,
        )
        .unwrap();
        input_error(&weights, &xs, &fit)
    };
    let (pca, ridge, whitened) = (
        error(CompressionMethod::Pca),
        error(CompressionMethod::Ridge),
        error(CompressionMethod::Whitened),
    );
    assert!(ridge < pca, "ridge {ridge} vs pca {pca}");
    assert!(whitened < ridge, "whitened {whitened} vs ridge {ridge}");
}

#[test]
fn output_side_ridge_tends_to_the_projection() {
    let mut rng = StdRng::seed_from_u64(5);
    let (hidden, inter, rank, n) = (16, 24, 5, 300);
    let weights: Vec<Mat<f64>> = (0..3).map(|_| random(&mut rng, hidden, inter)).collect();
    let moments: Vec<Mat<f64>> = (0..3)
        .map(|_| moment(&anisotropic_rows(&mut rng, n, inter)))
        .collect();
    let fit = fit_layer(
        &inputs(&weights, &moments, n),
        BasisSide::Output,
        rank,
        CompressionMethod::Ridge,
        1e-9,
    )
    .unwrap();
    for (w, b) in weights.iter().zip(&fit.factors) {
        let err = max_abs(&(b - fit.basis.transpose() * w)) / max_abs(b);
        assert!(err < 1e-5, "B differs from Uᵀ W by {err}");
    }
}

#[test]
fn an_expert_without_calibration_rows_falls_back_to_the_projection() {
    let mut rng = StdRng::seed_from_u64(6);
    let (hidden, inter, rank, n) = (12, 8, 3, 50);
    let weights: Vec<Mat<f64>> = (0..2).map(|_| random(&mut rng, inter, hidden)).collect();
    let c = moment(&anisotropic_rows(&mut rng, n, hidden));
    let experts = vec![
        ExpertFitInput {
            weight: weights[0].as_ref(),
            moment: Some((c.as_ref(), n)),
        },
        ExpertFitInput {
            weight: weights[1].as_ref(),
            moment: None,
        },
    ];
    let fit = fit_layer(
        &experts,
        BasisSide::Input,
        rank,
        CompressionMethod::Ridge,
        1e-3,
    )
    .unwrap();
    assert_eq!(fit.fallbacks, vec![1]);
    assert!(max_abs(&(&fit.factors[1] - &weights[1] * &fit.basis)) < 1e-12);
}

#[test]
fn a_rank_past_the_hidden_size_is_an_error() {
    let w = Mat::<f64>::identity(8, 6);
    let experts = [ExpertFitInput {
        weight: w.as_ref(),
        moment: None,
    }];
    let err = fit_layer(&experts, BasisSide::Input, 7, CompressionMethod::Pca, 0.0)
        .err()
        .expect("rank 7 > hidden 6");
    assert!(err.to_string().contains("rank 7"), "{err}");
}
