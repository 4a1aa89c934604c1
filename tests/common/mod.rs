//! Helpers shared by the golden tests.

/// The largest `|a - b|`, NaN if any element is NaN: `fold(0.0, f32::max)` would skip a NaN
/// and report 0, so a NaN logit would pass `err <= TOL`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |m, d| {
            if m.is_nan() || d.is_nan() {
                f32::NAN
            } else {
                m.max(d)
            }
        })
}
