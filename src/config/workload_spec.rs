//! `[workload]`: which requests an experiment sends and when. Only the description lives here;
//! `harness::workload` turns it into requests. Value checks (lengths >= 1, min <= max, rates > 0)
//! are in `validate`, so the errors can name the full key path.
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The requests of one experiment. Each kind's fields are a struct of their own, so `load`
/// can deserialize a section straight from the file and keep the line of a bad value (serde's
/// internally tagged enums buffer their fields and lose it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WorkloadSpec {
    Random(RandomSpec),
    Classes(ClassesSpec),
    SharedPrefix(SharedPrefixSpec),
    Prompts(PromptsSpec),
}

/// `kind = "random"`: nano-vllm's `bench.py`: `num_requests` prompts of random token ids, all
/// sent at t = 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomSpec {
    pub num_requests: usize,
    pub prompt_len: LenRange,
    pub output_len: LenRange,
    /// Token ids are drawn uniformly from `[lo, hi)`; by default `[0, 10000)` as nano-vllm's
    /// `randint(0, 10000)`, cut to the model's vocabulary.
    #[serde(default)]
    pub token_range: Option<[u32; 2]>,
    #[serde(default = "default_warmup")]
    pub warmup_requests: usize,
}

/// `kind = "classes"`: named request classes (e.g. short and long flows), each with its own
/// arrival pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassesSpec {
    pub classes: Vec<ClassSpec>,
    #[serde(default)]
    pub token_range: Option<[u32; 2]>,
    #[serde(default = "default_warmup")]
    pub warmup_requests: usize,
}

/// `kind = "shared_prefix"`: `num_requests` prompts that share their first `prefix_len` tokens,
/// then differ for `suffix_len` tokens (a system prompt or few-shot header).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedPrefixSpec {
    pub num_requests: usize,
    pub prefix_len: usize,
    pub suffix_len: LenRange,
    pub output_len: LenRange,
    #[serde(default)]
    pub arrival: ArrivalSpec,
    #[serde(default)]
    pub token_range: Option<[u32; 2]>,
    #[serde(default = "default_warmup")]
    pub warmup_requests: usize,
}

/// `kind = "prompts"`: text prompts from a file: one per line, or `{"prompt": ...}` per line
/// for a `.jsonl` file; with `chat = true`, conversations for the model's chat template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsSpec {
    /// Relative to the current directory, like `model.source`.
    pub path: PathBuf,
    /// Output tokens per request; `sampling.max_tokens` when left out.
    #[serde(default)]
    pub output_len: Option<LenRange>,
    #[serde(default)]
    pub arrival: ArrivalSpec,
    #[serde(default = "default_warmup")]
    pub warmup_requests: usize,
    /// Each prompt is a user message rendered by the model's chat template (a `.jsonl` line may
    /// hold a whole `"messages"` conversation instead).
    #[serde(default)]
    pub chat: bool,
}

fn default_warmup() -> usize {
    1
}

impl WorkloadSpec {
    /// Untimed requests run before the measured ones (compile kernels, fault in memory).
    pub fn warmup_requests(&self) -> usize {
        match self {
            WorkloadSpec::Random(s) => s.warmup_requests,
            WorkloadSpec::Classes(s) => s.warmup_requests,
            WorkloadSpec::SharedPrefix(s) => s.warmup_requests,
            WorkloadSpec::Prompts(s) => s.warmup_requests,
        }
    }

    /// The explicit `token_range`, if this kind has one and it is set.
    pub fn token_range(&self) -> Option<[u32; 2]> {
        match self {
            WorkloadSpec::Random(s) => s.token_range,
            WorkloadSpec::Classes(s) => s.token_range,
            WorkloadSpec::SharedPrefix(s) => s.token_range,
            WorkloadSpec::Prompts(_) => None,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            WorkloadSpec::Random(_) => "random",
            WorkloadSpec::Classes(_) => "classes",
            WorkloadSpec::SharedPrefix(_) => "shared_prefix",
            WorkloadSpec::Prompts(_) => "prompts",
        }
    }
}

/// One class of the `classes` workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    /// Appears in the `class` column of the CSVs and in the report.
    pub name: String,
    pub count: usize,
    pub prompt_len: LenRange,
    pub output_len: LenRange,
    #[serde(default)]
    pub arrival: ArrivalSpec,
}

/// When the requests of one class arrive, in seconds from the start of the timed run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "pattern", rename_all = "snake_case", deny_unknown_fields)]
pub enum ArrivalSpec {
    /// All at t = 0.
    #[default]
    AtStart,
    /// A Poisson process of `rate` requests per second, from `start`.
    Poisson {
        rate: f64,
        #[serde(default)]
        start: f64,
    },
    /// One request every `every` seconds, the first at `start`.
    Interval {
        every: f64,
        #[serde(default)]
        start: f64,
    },
    /// All at once at `at` seconds.
    Burst { at: f64 },
}

/// A token count: a fixed `n`, or `[min, max]` drawn uniformly, both ends included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LenRange {
    pub min: usize,
    pub max: usize,
}

impl LenRange {
    pub fn fixed(n: usize) -> Self {
        Self { min: n, max: n }
    }
}

impl Serialize for LenRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.min == self.max {
            s.serialize_u64(self.min as u64)
        } else {
            [self.min as u64, self.max as u64].serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for LenRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenRangeVisitor)
    }
}

struct LenRangeVisitor;

const LEN_EXPECTED: &str = "a token count n >= 1 or a range [min, max]";

fn to_len<E: de::Error>(v: i64) -> Result<usize, E> {
    usize::try_from(v).map_err(|_| E::custom(format!("length must be >= 1, got {v}")))
}

impl<'de> Visitor<'de> for LenRangeVisitor {
    type Value = LenRange;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(LEN_EXPECTED)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<LenRange, E> {
        Ok(LenRange::fixed(to_len(v)?))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<LenRange, E> {
        let n = usize::try_from(v).map_err(|_| E::custom(format!("length {v} is too large")))?;
        Ok(LenRange::fixed(n))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenRange, A::Error> {
        let min: i64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom(format!("expected {LEN_EXPECTED}, got []")))?;
        let max: i64 = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom(format!("expected {LEN_EXPECTED}, got [{min}]")))?;
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::custom(format!(
                "expected {LEN_EXPECTED}, got more than two numbers"
            )));
        }
        Ok(LenRange {
            min: to_len(min)?,
            max: to_len(max)?,
        })
    }
}
