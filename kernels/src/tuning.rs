//! [`KernelTuning`]: the kernels' measured defaults as one typed value. An experiment's
//! `[kernels]` section sets it per variant, the engine installs it for its device, and the
//! results record it (`config.resolved.toml`). The `NANOVLLM_*` variables of earlier builds
//! remain as overrides for quick A/B runs; [`KernelTuning::with_env_overrides`] applies them and
//! says which, so the results record those too. Why each default is what it is: docs/kernels.md.
use std::sync::RwLock;

use cubecl::device::DeviceId;

use serde::{Deserialize, Serialize};

/// Which kernel runs prefill and chunk tiles where the device has tensor cores for the dtype.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefillMma {
    /// Scores and output in registers, manual `m16n8k16` MMA (where the device has it).
    #[default]
    Flash,
    /// cubecl's fragment API (16x16x16).
    Fragment,
    /// No tensor cores: the scalar tile kernel.
    Scalar,
}

/// The knobs of the GPU kernels. Each default is a measurement (docs/kernels.md); the CPU engine
/// reads none of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KernelTuning {
    /// Keys per lane group in one chunk of a decode plane (a power of two up to 16).
    pub decode_unroll: usize,
    /// The prefill tile kernel on tensor cores.
    pub prefill_mma: PrefillMma,
    /// Decode contexts are cut into work items of at most this many keys (then merged); at
    /// least the plan's shortest split (512).
    pub decode_max_keys: usize,
    /// Decode-only steps of up to this many sequences run q/k norm + rotary and the K/V write
    /// inside the decode attention launch (0: never).
    pub decode_qkv_max_rows: usize,
    /// From this many rows a projection runs on cuBLAS where it can (CUDA).
    pub cublas_min_rows: usize,
    /// Projections of up to this many rows run the fused gemv (0: never; at most
    /// [`GEMV_MAX_ROWS`](crate::matmul::gemv::GEMV_MAX_ROWS)).
    pub fused_gemv_max_rows: usize,
    /// MoE blocks whose routed rows average at most this many per expert run the gemv-class
    /// expert kernels; more, cuBLAS (a padded batch or the grouped GEMM; 0: never the kernels).
    /// On the H200 the kernels won at 1 row per expert (2.2× at Mixtral-8x7B batch 4) and lost
    /// at 4 (1.36× Mixtral batch 16, 1.2× Qwen3-30B-A3B batch 64) to the grouped GEMM.
    pub moe_kernel_max_rows: usize,
    /// Cascade attention's prefix tiles: query rows per cube (a multiple of 16 up to 256, on the
    /// flash kernel; each key tile is loaded once for them all). On the H200 at 64 requests × 4k
    /// keys 128 rows gave 3.7x (Qwen3-0.6B heads) and 4.5x (Llama-3.1-8B) over paged against
    /// 3.6x and 4.4x at 64 and 2.0x and 2.8x at 256 (with 512-key pieces; docs/perf-log.md).
    pub prefix_rows: usize,
    /// A shared prefix is cut into pieces of at least this many keys (or half the prefix) ...
    /// 512 against 256: fewer pieces to merge (Llama heads at 64 × 4k: 4.5x against 3.4x).
    pub prefix_min_keys: usize,
    /// ... as many as bring its launch to this many cubes per compute unit.
    pub prefix_cubes_per_unit: usize,
}

impl Default for KernelTuning {
    fn default() -> Self {
        Self {
            decode_unroll: 4,
            prefill_mma: PrefillMma::Flash,
            decode_max_keys: 512,
            decode_qkv_max_rows: 64,
            cublas_min_rows: crate::matmul::gemv::GEMV_MAX_ROWS + 1,
            fused_gemv_max_rows: crate::matmul::gemv::GEMV_MAX_ROWS,
            moe_kernel_max_rows: 2,
            prefix_rows: 128,
            prefix_min_keys: 512,
            prefix_cubes_per_unit: 2,
        }
    }
}

/// One knob's environment variable, its TOML key, and how to parse and apply it.
struct EnvKnob {
    var: &'static str,
    key: &'static str,
    apply: fn(&mut KernelTuning, &str) -> Result<(), String>,
}

fn parse<T: std::str::FromStr>(raw: &str) -> Result<T, String> {
    raw.trim()
        .parse()
        .map_err(|_| format!("{raw:?} does not parse"))
}

const ENV_KNOBS: [EnvKnob; 10] = [
    EnvKnob {
        var: "NANOVLLM_DECODE_UNROLL",
        key: "decode_unroll",
        apply: |t, v| parse(v).map(|x| t.decode_unroll = x),
    },
    EnvKnob {
        var: "NANOVLLM_PREFILL_MMA",
        key: "prefill_mma",
        // The variable's historic values: 2 flash, 1 fragment, 0 scalar.
        apply: |t, v| {
            t.prefill_mma = match v.trim() {
                "2" | "flash" => PrefillMma::Flash,
                "1" | "fragment" => PrefillMma::Fragment,
                "0" | "scalar" => PrefillMma::Scalar,
                _ => {
                    return Err(format!(
                        "{v:?}: expected flash (2), fragment (1) or scalar (0)"
                    ))
                }
            };
            Ok(())
        },
    },
    EnvKnob {
        var: "NANOVLLM_DECODE_MAX_KEYS",
        key: "decode_max_keys",
        apply: |t, v| parse(v).map(|x| t.decode_max_keys = x),
    },
    EnvKnob {
        var: "NANOVLLM_DECODE_QKV_ROWS",
        key: "decode_qkv_max_rows",
        apply: |t, v| parse(v).map(|x| t.decode_qkv_max_rows = x),
    },
    EnvKnob {
        var: "NANOVLLM_CUBLAS_MIN_ROWS",
        key: "cublas_min_rows",
        apply: |t, v| parse(v).map(|x| t.cublas_min_rows = x),
    },
    EnvKnob {
        var: "NANOVLLM_FUSED_GEMV_ROWS",
        key: "fused_gemv_max_rows",
        apply: |t, v| parse(v).map(|x| t.fused_gemv_max_rows = x),
    },
    EnvKnob {
        var: "NANOVLLM_MOE_KERNEL_ROWS",
        key: "moe_kernel_max_rows",
        apply: |t, v| parse(v).map(|x| t.moe_kernel_max_rows = x),
    },
    EnvKnob {
        var: "NANOVLLM_PREFIX_ROWS",
        key: "prefix_rows",
        apply: |t, v| parse(v).map(|x| t.prefix_rows = x),
    },
    EnvKnob {
        var: "NANOVLLM_PREFIX_MIN_KEYS",
        key: "prefix_min_keys",
        apply: |t, v| parse(v).map(|x| t.prefix_min_keys = x),
    },
    EnvKnob {
        var: "NANOVLLM_PREFIX_CUBES",
        key: "prefix_cubes_per_unit",
        apply: |t, v| parse(v).map(|x| t.prefix_cubes_per_unit = x),
    },
];

/// An environment variable that overrode a knob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvOverride {
    pub var: &'static str,
    pub key: &'static str,
    pub value: String,
}

impl KernelTuning {
    /// An error naming the knob when a value is out of its range.
    pub fn validate(&self) -> Result<(), String> {
        let max_gemv = crate::matmul::gemv::GEMV_MAX_ROWS;
        if !(self.decode_unroll.is_power_of_two() && self.decode_unroll <= 16) {
            return Err(format!(
                "decode_unroll = {}: expected a power of two up to 16",
                self.decode_unroll
            ));
        }
        let min_split = crate::attention::plan::MIN_SPLIT;
        if self.decode_max_keys < min_split {
            return Err(format!(
                "decode_max_keys = {}: expected at least {min_split} (the shortest context \
                 range the plan splits off)",
                self.decode_max_keys
            ));
        }
        if !(self.prefix_rows.is_multiple_of(16) && (16..=256).contains(&self.prefix_rows)) {
            return Err(format!(
                "prefix_rows = {}: expected a multiple of 16 from 16 to 256",
                self.prefix_rows
            ));
        }
        if self.prefix_min_keys == 0 || self.prefix_cubes_per_unit == 0 {
            return Err(format!(
                "prefix_min_keys = {}, prefix_cubes_per_unit = {}: expected at least 1",
                self.prefix_min_keys, self.prefix_cubes_per_unit
            ));
        }
        if self.fused_gemv_max_rows > max_gemv {
            return Err(format!(
                "fused_gemv_max_rows = {}: expected at most {max_gemv}",
                self.fused_gemv_max_rows
            ));
        }
        Ok(())
    }

    /// This tuning with the `NANOVLLM_*` variables set in `env` applied, and which they were;
    /// an error names the variable.
    pub fn with_overrides_from(
        mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, Vec<EnvOverride>), String> {
        let mut applied = Vec::new();
        for knob in &ENV_KNOBS {
            let Some(value) = env(knob.var) else {
                continue;
            };
            (knob.apply)(&mut self, &value).map_err(|e| format!("{}: {e}", knob.var))?;
            applied.push(EnvOverride {
                var: knob.var,
                key: knob.key,
                value,
            });
        }
        self.validate().map_err(|e| {
            let vars: Vec<_> = applied.iter().map(|o| o.var).collect();
            format!("{e} (after the overrides {})", vars.join(", "))
        })?;
        Ok((self, applied))
    }

    /// `key=value` pairs, as the results' `variants.csv` and report show them.
    pub fn describe(&self) -> String {
        let prefill = match self.prefill_mma {
            PrefillMma::Flash => "flash",
            PrefillMma::Fragment => "fragment",
            PrefillMma::Scalar => "scalar",
        };
        format!(
            "decode_unroll={} prefill_mma={prefill} decode_max_keys={} decode_qkv_max_rows={} \
             cublas_min_rows={} fused_gemv_max_rows={} moe_kernel_max_rows={} prefix_rows={} \
             prefix_min_keys={} prefix_cubes_per_unit={}",
            self.decode_unroll,
            self.decode_max_keys,
            self.decode_qkv_max_rows,
            self.cublas_min_rows,
            self.fused_gemv_max_rows,
            self.moe_kernel_max_rows,
            self.prefix_rows,
            self.prefix_min_keys,
            self.prefix_cubes_per_unit
        )
    }

    /// [`with_overrides_from`](Self::with_overrides_from) the process environment.
    pub fn with_env_overrides(self) -> Result<(Self, Vec<EnvOverride>), String> {
        self.with_overrides_from(|var| std::env::var(var).ok())
    }
}

/// The tuning installed per device. The projection ops read it from their tensors' device on
/// every call (burn calls them without any context of ours), so a lookup is a read lock and a
/// scan of a few entries, no allocation.
static INSTALLED: RwLock<Vec<(DeviceId, KernelTuning)>> = RwLock::new(Vec::new());

/// Makes `tuning` the one the kernels on `device` run with (an engine does this when built).
pub fn install(device: DeviceId, tuning: KernelTuning) {
    let mut installed = INSTALLED.write().expect("tuning registry");
    installed.retain(|(d, _)| *d != device);
    installed.push((device, tuning));
}

/// The tuning installed for `device`, or the defaults.
pub fn tuning_for(device: DeviceId) -> KernelTuning {
    let installed = INSTALLED.read().expect("tuning registry");
    installed
        .iter()
        .find(|(d, _)| *d == device)
        .map(|(_, t)| *t)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |var| {
            pairs
                .iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_are_valid_and_overrides_are_recorded() {
        KernelTuning::default().validate().unwrap();
        let (t, applied) = KernelTuning::default()
            .with_overrides_from(env(&[
                ("NANOVLLM_DECODE_UNROLL", "8"),
                ("NANOVLLM_PREFILL_MMA", "1"),
            ]))
            .unwrap();
        assert_eq!(t.decode_unroll, 8);
        assert_eq!(t.prefill_mma, PrefillMma::Fragment);
        assert_eq!(applied.len(), 2);
        assert_eq!(applied[0].key, "decode_unroll");
        assert_eq!(applied[1].value, "1");
    }

    #[test]
    fn bad_overrides_name_the_variable() {
        let err = KernelTuning::default()
            .with_overrides_from(env(&[("NANOVLLM_DECODE_UNROLL", "6")]))
            .unwrap_err();
        assert!(err.contains("decode_unroll = 6") && err.contains("NANOVLLM_DECODE_UNROLL"));
        let err = KernelTuning::default()
            .with_overrides_from(env(&[("NANOVLLM_DECODE_MAX_KEYS", "many")]))
            .unwrap_err();
        assert!(err.starts_with("NANOVLLM_DECODE_MAX_KEYS"), "{err}");
        let err = KernelTuning::default()
            .with_overrides_from(env(&[("NANOVLLM_PREFILL_MMA", "3")]))
            .unwrap_err();
        assert!(err.contains("flash"), "{err}");
    }

    #[test]
    fn installed_tuning_is_per_device() {
        let tuned = KernelTuning {
            decode_unroll: 2,
            ..Default::default()
        };
        let (a, b) = (DeviceId::new(900, 0), DeviceId::new(900, 1));
        install(a, tuned);
        assert_eq!(tuning_for(a), tuned);
        assert_eq!(tuning_for(b), KernelTuning::default());
    }
}
