//! Value checks of `[workload]`: counts and lengths >= 1, min <= max, token ranges, arrival
//! times and rates, class names, and requests that cannot fit in `engine.max_model_len`.
use super::validate::{bad, is_safe_name, Check};
use super::workload_spec::{
    ArrivalSpec, ClassesSpec, LenRange, PromptsSpec, RandomSpec, SharedPrefixSpec, WorkloadSpec,
};

fn check_len(key: &str, len: &LenRange) -> Check {
    if len.min == 0 {
        return bad(key, "lengths must be >= 1, got 0");
    }
    if len.min > len.max {
        return bad(
            key,
            format!("min ({}) is greater than max ({})", len.min, len.max),
        );
    }
    Ok(())
}

fn check_count(key: &str, n: usize) -> Check {
    if n == 0 {
        return bad(key, "must be >= 1");
    }
    Ok(())
}

fn check_token_range(key: &str, range: &Option<[u32; 2]>) -> Check {
    let Some(range) = range else { return Ok(()) };
    if range[0] >= range[1] {
        return bad(
            key,
            format!(
                "[lo, hi) must have lo < hi, got [{}, {}]",
                range[0], range[1]
            ),
        );
    }
    Ok(())
}

fn check_fits(
    key: &str,
    prompt_max: usize,
    output_max: usize,
    max_model_len: Option<usize>,
) -> Check {
    match max_model_len {
        Some(limit) if prompt_max + output_max > limit => {
            bad(key, format!("the longest request ({prompt_max} prompt + {output_max} output tokens) exceeds engine.max_model_len ({limit})"))
        }
        _ => Ok(()),
    }
}

fn check_time(key: &str, value: f64, positive: bool) -> Check {
    let ok = value.is_finite() && if positive { value > 0.0 } else { value >= 0.0 };
    if !ok {
        return bad(
            key,
            format!(
                "must be {} seconds, got {value}",
                if positive { "> 0" } else { ">= 0" }
            ),
        );
    }
    Ok(())
}

fn check_arrival(key: &str, arrival: &ArrivalSpec) -> Check {
    match *arrival {
        ArrivalSpec::AtStart => Ok(()),
        ArrivalSpec::Poisson { rate, start } => {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(
                    format!("{key}.rate"),
                    format!("must be > 0 requests per second, got {rate}"),
                );
            }
            check_time(&format!("{key}.start"), start, false)
        }
        ArrivalSpec::Interval { every, start } => {
            check_time(&format!("{key}.every"), every, true)?;
            check_time(&format!("{key}.start"), start, false)
        }
        ArrivalSpec::Burst { at } => check_time(&format!("{key}.at"), at, false),
    }
}

pub fn check_workload(w: &WorkloadSpec, max_model_len: Option<usize>) -> Check {
    match w {
        WorkloadSpec::Random(RandomSpec {
            num_requests,
            prompt_len,
            output_len,
            token_range,
            ..
        }) => {
            check_count("workload.num_requests", *num_requests)?;
            check_len("workload.prompt_len", prompt_len)?;
            check_len("workload.output_len", output_len)?;
            check_token_range("workload.token_range", token_range)?;
            check_fits("workload", prompt_len.max, output_len.max, max_model_len)
        }
        WorkloadSpec::Classes(ClassesSpec {
            classes,
            token_range,
            ..
        }) => {
            if classes.is_empty() {
                return bad("workload.classes", "is empty; add at least one class");
            }
            for (i, class) in classes.iter().enumerate() {
                let key = format!("workload.classes[{i}]");
                if !is_safe_name(&class.name) || class.name == "all" {
                    return bad(format!("{key}.name"), format!("\"{}\" must be letters, digits, `_`, `-` or `.` (and not \"all\", which the summary uses)", class.name));
                }
                if let Some(j) = classes[..i].iter().position(|c| c.name == class.name) {
                    return bad(
                        format!("{key}.name"),
                        format!(
                            "\"{}\" is already the name of workload.classes[{j}]",
                            class.name
                        ),
                    );
                }
                check_count(&format!("{key}.count"), class.count)?;
                check_len(&format!("{key}.prompt_len"), &class.prompt_len)?;
                check_len(&format!("{key}.output_len"), &class.output_len)?;
                check_arrival(&format!("{key}.arrival"), &class.arrival)?;
                check_fits(
                    &key,
                    class.prompt_len.max,
                    class.output_len.max,
                    max_model_len,
                )?;
            }
            check_token_range("workload.token_range", token_range)
        }
        WorkloadSpec::SharedPrefix(SharedPrefixSpec {
            num_requests,
            prefix_len,
            suffix_len,
            output_len,
            arrival,
            token_range,
            ..
        }) => {
            check_count("workload.num_requests", *num_requests)?;
            check_count("workload.prefix_len", *prefix_len)?;
            check_len("workload.suffix_len", suffix_len)?;
            check_len("workload.output_len", output_len)?;
            check_arrival("workload.arrival", arrival)?;
            check_token_range("workload.token_range", token_range)?;
            check_fits(
                "workload",
                prefix_len + suffix_len.max,
                output_len.max,
                max_model_len,
            )
        }
        WorkloadSpec::Prompts(PromptsSpec {
            path,
            output_len,
            arrival,
            ..
        }) => {
            if path.as_os_str().is_empty() {
                return bad("workload.path", "is empty");
            }
            if let Some(len) = output_len {
                check_len("workload.output_len", len)?;
            }
            check_arrival("workload.arrival", arrival)
        }
    }
}
