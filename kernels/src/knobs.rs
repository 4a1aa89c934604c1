//! Environment overrides of the measured defaults (`NANOVLLM_*`), for measurements: a value
//! that does not parse, or is out of range, stops the program with the variable's name rather
//! than measuring the default unnoticed.
use std::str::FromStr;

/// `raw` (the value of `name`) as a `T` that `valid` accepts, or an error naming both.
pub fn parse_override<T: FromStr>(
    name: &str,
    raw: &str,
    expected: &str,
    valid: impl Fn(&T) -> bool,
) -> Result<T, String> {
    match raw.trim().parse::<T>() {
        Ok(v) if valid(&v) => Ok(v),
        _ => Err(format!("{name}={raw:?}: expected {expected}")),
    }
}

/// The override in the environment variable `name`, if set; panics on a bad value.
pub fn env_override<T: FromStr>(
    name: &str,
    expected: &str,
    valid: impl Fn(&T) -> bool,
) -> Option<T> {
    let raw = std::env::var(name).ok()?;
    Some(parse_override(name, &raw, expected, valid).unwrap_or_else(|e| panic!("{e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_the_variable() {
        let pow2 = |u: &usize| u.is_power_of_two();
        assert_eq!(parse_override("X", " 8", "a power of two", pow2), Ok(8));
        let err = parse_override("NANOVLLM_DECODE_UNROLL", "6", "a power of two", pow2);
        assert_eq!(
            err,
            Err("NANOVLLM_DECODE_UNROLL=\"6\": expected a power of two".to_string())
        );
        assert!(parse_override("X", "eight", "a power of two", pow2).is_err());
        assert!(parse_override::<usize>("X", "-1", "rows", |_| true).is_err());
    }
}
