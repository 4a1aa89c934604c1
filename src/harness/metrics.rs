//! Per-request latency metrics, with vLLM's benchmark definitions (DESIGN.md):
//! TTFT = first token - arrival; TPOT = (finish - first token) / (output tokens - 1);
//! ITL = gaps between consecutive tokens; E2E = finish - arrival. All in seconds.
//!
//! Aggregates (means and p50/p90/p99) are computed from the CSVs in `summary.rs`; the
//! percentile there is numpy's default "linear" method, mirrored by [`percentile`] here.

/// The latency metrics of one request; `None` where the request did not get that far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RequestMetrics {
    pub ttft_s: Option<f64>,
    /// `None` for a single output token (no inter-token interval exists) or an unfinished request.
    pub tpot_s: Option<f64>,
    pub e2e_s: Option<f64>,
    pub max_itl_s: Option<f64>,
}

/// Metrics of a request that arrived at `arrival_s`, produced tokens at `token_times`
/// (non-decreasing) and finished at `finish_s` after `output_tokens` tokens.
pub fn request_metrics(
    arrival_s: f64,
    token_times: &[f64],
    finish_s: Option<f64>,
    output_tokens: usize,
) -> RequestMetrics {
    let first = token_times.first().copied();
    let tpot_s = match (first, finish_s) {
        (Some(first), Some(finish)) if output_tokens >= 2 => {
            Some((finish - first) / (output_tokens - 1) as f64)
        }
        _ => None,
    };
    RequestMetrics {
        ttft_s: first.map(|t| t - arrival_s),
        tpot_s,
        e2e_s: finish_s.map(|t| t - arrival_s),
        max_itl_s: itls(token_times).reduce(f64::max),
    }
}

/// Gaps between consecutive token times.
pub fn itls(token_times: &[f64]) -> impl Iterator<Item = f64> + '_ {
    token_times.windows(2).map(|w| w[1] - w[0])
}

/// The `q` quantile (0..=1) of `values`, interpolating linearly between the two nearest ranks
/// (numpy's default: position `(n - 1) * q` in sorted order). `None` for no values.
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let pos = last as f64 * q.clamp(0.0, 1.0);
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(last);
    Some(sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn request_metrics_by_hand() {
        // Arrives at 1.0; tokens at 1.5, 1.6, 1.8, 2.1; finishes with the last token.
        let m = request_metrics(1.0, &[1.5, 1.6, 1.8, 2.1], Some(2.1), 4);
        assert!(close(m.ttft_s, 0.5));
        assert!(close(m.tpot_s, 0.2)); // (2.1 - 1.5) / 3
        assert!(close(m.e2e_s, 1.1));
        assert!(close(m.max_itl_s, 0.3));
        let itl: Vec<f64> = itls(&[1.5, 1.6, 1.8, 2.1]).collect();
        assert!(
            (itl[0] - 0.1).abs() < 1e-12
                && (itl[1] - 0.2).abs() < 1e-12
                && (itl[2] - 0.3).abs() < 1e-12
        );
    }

    #[test]
    fn one_token_and_unfinished_requests() {
        let m = request_metrics(0.0, &[0.25], Some(0.25), 1);
        assert_eq!(
            m,
            RequestMetrics {
                ttft_s: Some(0.25),
                tpot_s: None,
                e2e_s: Some(0.25),
                max_itl_s: None
            }
        );
        let m = request_metrics(0.0, &[0.25, 0.5], None, 2);
        assert_eq!((m.tpot_s, m.e2e_s), (None, None));
        assert_eq!(
            request_metrics(0.0, &[], None, 0),
            RequestMetrics::default()
        );
    }

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [50, 90, 99]) == [3.0, 7.6, 9.76]
        let v = [10.0, 1.0, 3.0, 2.0, 4.0];
        assert!(close(percentile(&v, 0.5), 3.0));
        assert!(close(percentile(&v, 0.9), 7.6));
        assert!(close(percentile(&v, 0.99), 9.76));
        assert!(close(percentile(&v, 0.0), 1.0));
        assert!(close(percentile(&v, 1.0), 10.0));
        assert!(close(percentile(&[7.0], 0.99), 7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
