//! How evenly a MoE variant's router spread its tokens, from `steps.csv` alone: per step kind
//! the mean of `expert_load_max / expert_load_mean` (1 is perfectly even), and over the whole
//! run the least and most used expert's share of the routed tokens. A dense variant (empty
//! `expert_tokens` on every step) has none. Pure: rows in, stats and markdown out.
use std::fmt::Write;

use super::csv_out::StepRow;

/// One MoE variant's routing imbalance.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingStats {
    pub variant: String,
    pub experts: usize,
    /// Steps that routed tokens.
    pub steps: usize,
    /// Mean over the `prefill` steps of `expert_load_max / expert_load_mean`; `None` without
    /// such steps.
    pub prefill_imbalance: Option<f64>,
    /// The same over the `decode` steps.
    pub decode_imbalance: Option<f64>,
    /// The same over the `mixed` steps (chunked prefill).
    pub mixed_imbalance: Option<f64>,
    /// The least and the most used expert's share of every routed token of the run, summed
    /// over the sparse layers (an even router gives each `1 / experts`).
    pub min_share: f64,
    pub max_share: f64,
}

impl RoutingStats {
    /// The stats of one variant's steps; `None` for a dense model.
    pub fn from_steps(variant: &str, steps: &[StepRow]) -> anyhow::Result<Option<Self>> {
        let mut totals: Vec<u64> = Vec::new();
        let mut ratios: [Vec<f64>; 3] = Default::default();
        let mut routed = 0;
        for s in steps {
            let counts = s.expert_counts()?;
            if counts.is_empty() {
                continue;
            }
            if totals.is_empty() {
                totals = vec![0; counts.len()];
            }
            anyhow::ensure!(
                counts.len() == totals.len(),
                "{variant} step {}: {} experts in expert_tokens, earlier steps have {}",
                s.step,
                counts.len(),
                totals.len()
            );
            for (t, &c) in totals.iter_mut().zip(&counts) {
                *t += u64::from(c);
            }
            routed += 1;
            let kind = match s.kind.as_str() {
                "prefill" => 0,
                "decode" => 1,
                _ => 2,
            };
            // A step that routed no token has no ratio (0 / 0).
            if let (Some(max), Some(mean)) = (s.expert_load_max, s.expert_load_mean) {
                if mean > 0.0 {
                    ratios[kind].push(f64::from(max) / mean);
                }
            }
        }
        let all: u64 = totals.iter().sum();
        if routed == 0 || all == 0 {
            return Ok(None);
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let share = |n: Option<&u64>| n.map_or(0.0, |&n| n as f64 / all as f64);
        let [prefill, decode, mixed] = &ratios;
        Ok(Some(RoutingStats {
            variant: variant.to_string(),
            experts: totals.len(),
            steps: routed,
            prefill_imbalance: mean(prefill),
            decode_imbalance: mean(decode),
            mixed_imbalance: mean(mixed),
            min_share: share(totals.iter().min()),
            max_share: share(totals.iter().max()),
        }))
    }
}

/// The report's routing section; nothing when no variant is a MoE model.
pub fn write_routing_table(md: &mut String, stats: &[RoutingStats]) {
    if stats.is_empty() {
        return;
    }
    md.push_str(
        "## Expert routing\n\n\
         Busiest expert over the mean (`expert_load_max / expert_load_mean` in `steps.csv`: \
         the busiest expert's tokens in the busiest sparse layer over the mean tokens per \
         expert; 1.00 is an even split), averaged over the steps of each kind; and the least \
         and most used expert's share of all tokens the run routed, summed over the sparse \
         layers.\n\n",
    );
    md.push_str("| Variant | Experts | Steps | max/mean prefill | max/mean decode | max/mean mixed | Expert share min | Expert share max | Even share |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let ratio = |r: Option<f64>| r.map_or("–".into(), |r| format!("{r:.2}"));
    let pct = |p: f64| format!("{:.1}%", p * 100.0);
    for s in stats {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.variant,
            s.experts,
            s.steps,
            ratio(s.prefill_imbalance),
            ratio(s.decode_imbalance),
            ratio(s.mixed_imbalance),
            pct(s.min_share),
            pct(s.max_share),
            pct(1.0 / s.experts as f64),
        );
    }
    md.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: usize, kind: &str, tokens: &str, max: u32, mean: f64) -> StepRow {
        StepRow {
            variant: "v".into(),
            step,
            kind: kind.into(),
            expert_tokens: tokens.into(),
            expert_load_max: (!tokens.is_empty()).then_some(max),
            expert_load_mean: (!tokens.is_empty()).then_some(mean),
            ..Default::default()
        }
    }

    #[test]
    fn imbalance_per_kind_and_shares_by_hand() {
        // Four experts, one sparse layer (mean = tokens / 4). max/mean: prefill 6/1.5 = 4 and
        // 2/2 = 1, decode 1/0.5 = 2, mixed 3/2 = 1.5.
        let steps = [
            step(0, "prefill", "6;0;0;0", 6, 1.5),
            step(1, "prefill", "2;2;2;2", 2, 2.0),
            step(2, "decode", "1;0;0;1", 1, 0.5),
            step(3, "mixed", "3;1;1;3", 3, 2.0),
        ];
        let s = RoutingStats::from_steps("v", &steps).unwrap().unwrap();
        assert_eq!((s.experts, s.steps), (4, 4));
        assert_eq!(s.prefill_imbalance, Some(2.5));
        assert_eq!(s.decode_imbalance, Some(2.0));
        assert_eq!(s.mixed_imbalance, Some(1.5));
        // Totals 12, 3, 3, 6 of 24.
        assert!((s.min_share - 0.125).abs() < 1e-12, "{s:?}");
        assert!((s.max_share - 0.5).abs() < 1e-12, "{s:?}");
        let mut md = String::new();
        write_routing_table(&mut md, &[s]);
        assert!(
            md.contains("| v | 4 | 4 | 2.50 | 2.00 | 1.50 | 12.5% | 50.0% | 25.0% |\n"),
            "{md}"
        );
    }

    #[test]
    fn dense_steps_have_no_stats_and_bad_rows_are_errors() {
        let dense = [
            step(0, "prefill", "", 0, 0.0),
            step(1, "decode", "", 0, 0.0),
        ];
        assert_eq!(RoutingStats::from_steps("v", &dense).unwrap(), None);
        let mut md = String::new();
        write_routing_table(&mut md, &[]);
        assert!(md.is_empty());
        let err = RoutingStats::from_steps("v", &[step(0, "decode", "1;x", 1, 0.5)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("expert_tokens \"1;x\""), "{err}");
        let err = RoutingStats::from_steps(
            "v",
            &[
                step(0, "decode", "1;1", 1, 1.0),
                step(1, "decode", "1;1;0", 1, 0.7),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("v step 1: 3 experts"), "{err}");
    }
}
