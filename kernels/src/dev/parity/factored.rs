//! Factored (compressed) experts against the dense experts they stand for: random bases and
//! factors, the dense weights they multiply out to computed on the host, and the backend's
//! `moe_factored_experts` compared with the host's f32 arithmetic on those dense weights.
use burn::tensor::{Int, Tensor, TensorData};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::dev::ops::DevOps;
use crate::moe::factored::FactoredExperts;
use crate::moe::Routing;

use super::{random, rel_err, to_host, upload};

/// `(tokens, experts, top_k, hidden, inter, rank)`: a decode row, a batch where some expert
/// gets no token, and more routed rows than a kernel chunk.
const CASES: [(usize, usize, usize, usize, usize, usize); 3] = [
    (1, 8, 2, 64, 48, 16),
    (5, 16, 4, 96, 64, 32),
    (40, 8, 2, 64, 96, 48),
];

/// The worst relative error over the cases, and each case's.
pub fn run_factored<B: DevOps>(seed: u64, dev: &B::Device) -> (f32, Vec<(String, f32)>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cases = Vec::new();
    for (tokens, experts, top_k, hidden, inter, r) in CASES {
        let scale = |v: Vec<f32>, s: f32| v.into_iter().map(|x| x * s).collect::<Vec<_>>();
        let (u_gu, held_u_gu) = upload::<B, 2>(
            scale(random(&mut rng, hidden * 2 * r), 0.3),
            [hidden, 2 * r],
            dev,
        );
        let (gate_up, held_gate_up) = upload::<B, 3>(
            scale(random(&mut rng, experts * 2 * inter * r), 0.3),
            [experts, 2 * inter, r],
            dev,
        );
        let (down, held_down) = upload::<B, 3>(
            scale(random(&mut rng, experts * r * inter), 0.3),
            [experts, r, inter],
            dev,
        );
        let (u_d, held_u_d) =
            upload::<B, 2>(scale(random(&mut rng, r * hidden), 0.3), [r, hidden], dev);
        let ids: Vec<i64> = (0..tokens)
            .flat_map(|_| {
                let mut picks = Vec::new();
                while picks.len() < top_k {
                    let e = rng.random_range(0..experts as i64);
                    if !picks.contains(&e) {
                        picks.push(e);
                    }
                }
                picks
            })
            .collect();
        let weights: Vec<f32> = (0..tokens * top_k)
            .map(|_| rng.random_range(0.1f32..1.0))
            .collect();
        let (weights, held_weights) = upload::<B, 2>(weights, [tokens, top_k], dev);
        let (x, held_x) = upload::<B, 2>(random(&mut rng, tokens * hidden), [tokens, hidden], dev);
        let routing = Routing {
            experts: Tensor::<B, 2, Int>::from_data(
                TensorData::new(ids.clone(), [tokens, top_k]),
                dev,
            ),
            weights,
        };
        let w = FactoredExperts {
            input_basis: u_gu,
            gate_up,
            down,
            output_basis: u_d,
        };
        let got = to_host(B::moe_factored_experts(x, &routing, &w).out);
        // The dense experts the factors stand for: gate_e = A_g,e U_gᵀ, up_e = A_u,e U_uᵀ
        // (`input_basis` is [U_g | U_u]), down_e = U_d B_e (`output_basis` is U_dᵀ).
        let mut dense_gate_up = vec![0.0f32; experts * 2 * inter * hidden];
        let mut dense_down = vec![0.0f32; experts * hidden * inter];
        for e in 0..experts {
            for row in 0..2 * inter {
                let half = row / inter;
                for h in 0..hidden {
                    let v: f32 = (0..r)
                        .map(|k| {
                            held_gate_up[(e * 2 * inter + row) * r + k]
                                * held_u_gu[h * 2 * r + half * r + k]
                        })
                        .sum();
                    dense_gate_up[(e * 2 * inter + row) * hidden + h] = v;
                }
            }
            for h in 0..hidden {
                for i in 0..inter {
                    let v: f32 = (0..r)
                        .map(|k| held_u_d[k * hidden + h] * held_down[(e * r + k) * inter + i])
                        .sum();
                    dense_down[(e * hidden + h) * inter + i] = v;
                }
            }
        }
        let want = super::moe::host_experts(
            &held_x,
            &ids,
            &held_weights,
            &dense_gate_up,
            &dense_down,
            [hidden, inter, top_k],
        );
        cases.push((
            format!("{tokens} tokens, {experts} experts, top {top_k}, {hidden}x{inter}, rank {r}"),
            rel_err(&got, &want),
        ));
    }
    let worst = super::worst(cases.iter().map(|c| c.1));
    (worst, cases)
}
