//! Expert offloading: a sparse layer's experts live in host memory and `slots` of them on the
//! device ([`ExpertSlots`] decides which). Each forward reads the router's choice, loads the
//! missing experts into their slots (evicting the least recently used ones the step does not
//! need), and runs the layer's expert products over the slots with the routing renumbered to
//! slot ids. A step that needs more experts than there are slots runs in rounds, each over the
//! tokens with a choice among that round's experts (their other choices weighted zero), the
//! rounds' outputs added per token.
//!
//! Host experts are page-locked on CUDA and copied on a copy stream
//! ([`KernelBackend::upload_slot`]); a round's loads are waited for before its products, and
//! that wait is measured ([`OffloadStats`]).
use std::sync::Mutex;
use std::time::Instant;

use burn::tensor::{DType, IndexingUpdateOp, Int, Tensor, TensorData};
use nanovllm_kernels::moe::{ExpertWeights, MoeOutput, Routing};
use nanovllm_kernels::{HostBytes, KernelBackend};

use super::expert_slots::{EvictionPolicy, ExpertSlots, Load};

/// One expert's weights in host memory, in the device's float dtype.
pub struct HostExpert {
    /// `[2 * inter, hidden]`: gate rows, then up rows.
    pub gate_up: HostBytes,
    /// `[hidden, inter]`.
    pub down: HostBytes,
}

/// What the expert caches did, summed over layers (a step's, or a run's).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OffloadStats {
    /// Experts a step's tokens chose that were already on the device.
    pub hits: u64,
    /// Experts loaded from host memory.
    pub misses: u64,
    pub bytes_copied: u64,
    /// Time the step waited for loads.
    pub wait_s: f64,
}

impl OffloadStats {
    pub fn add(&mut self, o: &OffloadStats) {
        self.hits += o.hits;
        self.misses += o.misses;
        self.bytes_copied += o.bytes_copied;
        self.wait_s += o.wait_s;
    }

    /// Hits over lookups (`None` before any).
    pub fn hit_rate(&self) -> Option<f64> {
        let lookups = self.hits + self.misses;
        (lookups > 0).then(|| self.hits as f64 / lookups as f64)
    }
}

/// One round's output: every token's, or those of the rows that took part (ids, outputs).
enum RoundOutput<B: KernelBackend> {
    All(Tensor<B, 2>),
    Rows(Tensor<B, 1, Int>, Tensor<B, 2>),
}

/// A sparse layer's experts: all of them in host memory, `slots` on the device.
pub struct OffloadedExperts<B: KernelBackend> {
    host: Vec<HostExpert>,
    /// `(inter, hidden)` of every expert.
    dims: (usize, usize),
    device: B::Device,
    state: Mutex<SlotState<B>>,
}

struct SlotState<B: KernelBackend> {
    slots: ExpertSlots,
    /// `[slots, 2 * inter, hidden]` and `[slots, hidden, inter]`.
    weights: ExpertWeights<B>,
    /// Since the last [`OffloadedExperts::take_stats`].
    stats: OffloadStats,
}

impl<B: KernelBackend> OffloadedExperts<B> {
    /// `host` (every expert of the layer, in `dtype`, the device's float dtype), with experts
    /// `0..slots` loaded into the device's slots.
    pub fn new(
        host: Vec<HostExpert>,
        dtype: DType,
        (inter, hidden): (usize, usize),
        slots: usize,
        device: &B::Device,
    ) -> Self {
        let slots = slots.min(host.len());
        let weights = ExpertWeights {
            gate_up: Tensor::<B, 3>::zeros([slots, 2 * inter, hidden], (device, dtype)),
            down: Tensor::<B, 3>::zeros([slots, hidden, inter], (device, dtype)),
        };
        let experts = Self {
            state: Mutex::new(SlotState {
                slots: ExpertSlots::new(host.len(), slots, EvictionPolicy::Lru),
                weights,
                stats: OffloadStats::default(),
            }),
            host,
            dims: (inter, hidden),
            device: device.clone(),
        };
        {
            let mut state = experts.lock();
            for slot in 0..slots {
                experts.upload(&mut state, Load { expert: slot, slot });
            }
        }
        experts
    }

    pub fn num_experts(&self) -> usize {
        self.host.len()
    }

    pub fn num_slots(&self) -> usize {
        self.lock().slots.num_slots()
    }

    /// Bytes of one expert's weights.
    pub fn expert_bytes(&self) -> usize {
        self.host
            .first()
            .map_or(0, |h| h.gate_up.len() + h.down.len())
    }

    /// What the cache did since the last call.
    pub fn take_stats(&self) -> OffloadStats {
        std::mem::take(&mut self.lock().stats)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState<B>> {
        // A panic mid-load leaves the slot table ahead of the slots: the model is not reused
        // after a failed step (the harness builds a new one per variant).
        self.state
            .lock()
            .expect("an expert load panicked earlier in this model")
    }

    /// The routed experts' gated MLPs of `x` `[tokens, hidden]`, summed per token with the
    /// routing weights, and the tokens routed to each expert (`[experts]`).
    pub fn forward(&self, x: Tensor<B, 2>, routing: &Routing<B>) -> MoeOutput<B> {
        let [tokens, top_k] = routing.experts.dims();
        let ids: Vec<usize> = routing
            .experts
            .clone()
            .into_data()
            .convert::<i64>()
            .to_vec::<i64>()
            .expect("routing ids as i64")
            .into_iter()
            .map(|e| e as usize)
            .collect();
        let mut counts = vec![0i32; self.num_experts()];
        for &e in &ids {
            counts[e] += 1;
        }
        let needed: Vec<usize> = (0..counts.len()).filter(|&e| counts[e] > 0).collect();
        let mut state = self.lock();
        let rounds = state.slots.rounds(&needed);
        let mut out: Option<Tensor<B, 2>> = None;
        for round in &rounds {
            let plan = state.slots.assign(round);
            if !plan.loads.is_empty() {
                // The earlier rounds' products are not the loads' to wait for.
                let _ = B::sync(&self.device);
                let start = Instant::now();
                for &load in &plan.loads {
                    self.upload(&mut state, load);
                }
                B::await_uploads(&state.weights.gate_up);
                // The copies are the step's to wait for: time them to the end.
                let _ = B::sync(&self.device);
                state.stats.wait_s += start.elapsed().as_secs_f64();
            }
            state.stats.hits += plan.hits as u64;
            state.stats.misses += plan.misses() as u64;
            state.stats.bytes_copied += (plan.misses() * self.expert_bytes()) as u64;
            let y = self.run_round(&x, routing, &ids, top_k, round, &plan.slots, &state.weights);
            // Rounds add up in f32, as the resident kernels sum a token's experts.
            let f32 = |t: Tensor<B, 2>| t.cast(DType::F32);
            out = Some(match (out, y) {
                (None, RoundOutput::All(y)) if rounds.len() == 1 => y,
                (None, RoundOutput::All(y)) => f32(y),
                (Some(acc), RoundOutput::All(y)) => acc + f32(y),
                (acc, RoundOutput::Rows(rows, y)) => {
                    let acc =
                        acc.unwrap_or_else(|| Tensor::zeros(x.dims(), (&self.device, DType::F32)));
                    acc.select_assign(0, rows, f32(y), IndexingUpdateOp::Add)
                }
            });
        }
        let out = out.map(|o| match rounds.len() {
            1 => o,
            _ => o.cast(x.dtype()),
        });
        let hidden = self.dims.1;
        let counts_len = counts.len();
        MoeOutput {
            out: out.unwrap_or_else(|| Tensor::zeros([tokens, hidden], &self.device)),
            counts: Tensor::from_data(TensorData::new(counts, [counts_len]), &self.device),
        }
    }

    /// One round of a layer's experts: the tokens with a choice among `round` (whose slots are
    /// `slots`), each choice as its slot; a token's other choices point at the round's slots in
    /// turn, weighted 0, so no slot's rows grow past its share. Every token's output when all
    /// take part, else the taking part rows' with their row ids.
    #[allow(clippy::too_many_arguments)]
    fn run_round(
        &self,
        x: &Tensor<B, 2>,
        routing: &Routing<B>,
        ids: &[usize],
        top_k: usize,
        round: &[usize],
        slots: &[usize],
        w: &ExpertWeights<B>,
    ) -> RoundOutput<B> {
        let tokens = ids.len() / top_k;
        let rows: Vec<usize> = (0..tokens)
            .filter(|&t| {
                ids[t * top_k..(t + 1) * top_k]
                    .iter()
                    .any(|e| round.contains(e))
            })
            .collect();
        let (mut slot_ids, mut keep) = (Vec::new(), Vec::new());
        let mut others = 0;
        for &t in &rows {
            for e in &ids[t * top_k..(t + 1) * top_k] {
                let (slot, k) = match round.iter().position(|r| r == e) {
                    Some(i) => (slots[i], 1.0f32),
                    None => {
                        others += 1;
                        (slots[others % slots.len()], 0.0)
                    }
                };
                slot_ids.push(slot as i32);
                keep.push(k);
            }
        }
        let n = rows.len();
        let slot_routing = |weights: Tensor<B, 2>| Routing {
            experts: Tensor::<B, 2, Int>::from_data(
                TensorData::new(slot_ids.clone(), [n, top_k]),
                &self.device,
            ),
            weights: match others {
                0 => weights,
                _ => {
                    let keep = TensorData::new(keep.clone(), [n, top_k]);
                    weights * Tensor::<B, 2>::from_data(keep, &self.device)
                }
            },
        };
        if n == tokens {
            let r = slot_routing(routing.weights.clone());
            return RoundOutput::All(B::moe_experts(x.clone(), &r, w).out);
        }
        let row_ids = Tensor::<B, 1, Int>::from_data(
            TensorData::new(rows.iter().map(|&r| r as i32).collect(), [n]),
            &self.device,
        );
        let r = slot_routing(routing.weights.clone().select(0, row_ids.clone()));
        let y = B::moe_experts(x.clone().select(0, row_ids.clone()), &r, w).out;
        RoundOutput::Rows(row_ids, y)
    }

    /// Queues the copy of `load.expert`'s weights from host memory into slot `load.slot`.
    fn upload(&self, state: &mut SlotState<B>, load: Load) {
        let host = &self.host[load.expert];
        B::upload_slot(&mut state.weights.gate_up, load.slot, &host.gate_up);
        B::upload_slot(&mut state.weights.down, load.slot, &host.down);
    }
}

/// How many of each sparse layer's experts stay on the device (`[engine] expert_budget`): all
/// (the default), a count per layer (`4`), or bytes for all layers' expert slots together
/// (`"24GB"`, `"20GiB"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExpertBudget {
    #[default]
    All,
    PerLayer(usize),
    Bytes(u64),
}

impl ExpertBudget {
    /// Device slots per sparse layer for `experts` experts of `expert_bytes` each over
    /// `moe_layers` sparse layers.
    pub fn slots(
        self,
        experts: usize,
        expert_bytes: usize,
        moe_layers: usize,
    ) -> Result<usize, String> {
        let slots = match self {
            ExpertBudget::All => experts,
            ExpertBudget::PerLayer(n) => n,
            ExpertBudget::Bytes(b) => {
                (b / (expert_bytes * moe_layers.max(1)).max(1) as u64) as usize
            }
        };
        match slots {
            0 => Err(format!(
                "expert_budget {self}: less than one expert per layer ({moe_layers} sparse layers of \
                 {experts} experts, {expert_bytes} bytes each)"
            )),
            n => Ok(n.min(experts)),
        }
    }

    /// Parses `all`, a count, or bytes with a unit (`B`, `KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`).
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(ExpertBudget::All);
        }
        if let Ok(n) = s.parse::<usize>() {
            return match n {
                0 => Err("expert_budget 0: expected at least 1 expert per layer".into()),
                n => Ok(ExpertBudget::PerLayer(n)),
            };
        }
        let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
        let (number, unit) = (s[..split].trim(), &s[split..]);
        let scale: f64 = match unit {
            "B" => 1.0,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            _ => return Err(format!(
                "expert_budget {s:?}: expected \"all\", experts per layer (4) or bytes (\"24GB\", \"20GiB\")"
            )),
        };
        match number.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(ExpertBudget::Bytes((x * scale) as u64)),
            _ => Err(format!(
                "expert_budget {s:?}: {number:?} is not a positive number"
            )),
        }
    }
}

impl std::fmt::Display for ExpertBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpertBudget::All => write!(f, "all"),
            ExpertBudget::PerLayer(n) => write!(f, "{n}"),
            ExpertBudget::Bytes(b) => write!(f, "{b}B"),
        }
    }
}

impl serde::Serialize for ExpertBudget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ExpertBudget::PerLayer(n) => s.serialize_u64(*n as u64),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for ExpertBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Count(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Count(n) if n >= 1 => Ok(ExpertBudget::PerLayer(n as usize)),
            Raw::Count(n) => Err(serde::de::Error::custom(format!(
                "expert_budget {n}: expected at least 1 expert per layer"
            ))),
            Raw::Text(t) => ExpertBudget::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Cpu = burn::backend::NdArray<f32>;

    fn host_expert(seed: usize, inter: usize, hidden: usize) -> HostExpert {
        let values = |n: usize, k: usize| -> HostBytes {
            (0..n)
                .flat_map(|i| (((seed * 1000 + k * 100 + i) % 97) as f32 / 7.0).to_le_bytes())
                .collect::<Vec<u8>>()
                .into()
        };
        HostExpert {
            gate_up: values(2 * inter * hidden, 0),
            down: values(hidden * inter, 1),
        }
    }

    /// A load puts exactly the host bytes in its slot, and leaves the other slot alone.
    #[test]
    fn a_load_fills_exactly_its_slot() {
        let (inter, hidden) = (3, 4);
        let device = Default::default();
        let host: Vec<HostExpert> = (0..3).map(|e| host_expert(e, inter, hidden)).collect();
        let experts = OffloadedExperts::<Cpu>::new(host, DType::F32, (inter, hidden), 2, &device);
        {
            let mut state = experts.lock();
            experts.upload(&mut state, Load { expert: 2, slot: 0 });
        }
        let state = experts.lock();
        let w = &state.weights;
        let slot = |t: &Tensor<Cpu, 3>, s: usize| {
            t.clone().narrow(0, s, 1).into_data().as_bytes().to_vec()
        };
        assert_eq!(slot(&w.gate_up, 0), experts.host[2].gate_up.as_slice());
        assert_eq!(slot(&w.down, 0), experts.host[2].down.as_slice());
        assert_eq!(slot(&w.gate_up, 1), experts.host[1].gate_up.as_slice());
        assert_eq!(slot(&w.down, 1), experts.host[1].down.as_slice());
    }

    #[test]
    fn budgets_parse_and_resolve_to_slots() {
        assert_eq!(ExpertBudget::parse("all"), Ok(ExpertBudget::All));
        assert_eq!(ExpertBudget::parse("4"), Ok(ExpertBudget::PerLayer(4)));
        assert_eq!(
            ExpertBudget::parse("2GB"),
            Ok(ExpertBudget::Bytes(2_000_000_000))
        );
        assert_eq!(ExpertBudget::parse("1 KiB"), Ok(ExpertBudget::Bytes(1024)));
        assert!(ExpertBudget::parse("4 experts").is_err());
        assert!(ExpertBudget::parse("0").is_err());
        assert!(ExpertBudget::parse("-1GB").is_err());
        // 8 experts of 100 bytes over 2 layers: 1,000 bytes hold 5 per layer.
        assert_eq!(ExpertBudget::Bytes(1000).slots(8, 100, 2), Ok(5));
        assert_eq!(ExpertBudget::PerLayer(20).slots(8, 100, 2), Ok(8));
        assert_eq!(ExpertBudget::All.slots(8, 100, 2), Ok(8));
        let err = ExpertBudget::Bytes(150).slots(8, 100, 2).unwrap_err();
        assert!(err.contains("less than one expert"), "{err}");
    }

    #[test]
    fn budgets_round_trip_through_toml() {
        #[derive(serde::Deserialize, serde::Serialize)]
        struct E {
            expert_budget: ExpertBudget,
        }
        for (text, want) in [
            ("expert_budget = 2", ExpertBudget::PerLayer(2)),
            ("expert_budget = \"all\"", ExpertBudget::All),
            (
                "expert_budget = \"3GB\"",
                ExpertBudget::Bytes(3_000_000_000),
            ),
        ] {
            let e: E = toml::from_str(text).unwrap();
            assert_eq!(e.expert_budget, want);
            let back: E = toml::from_str(&toml::to_string(&e).unwrap()).unwrap();
            assert_eq!(back.expert_budget, want);
        }
        assert!(toml::from_str::<E>("expert_budget = 0").is_err());
    }
}
