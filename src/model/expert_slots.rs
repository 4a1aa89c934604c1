//! Which experts of one sparse layer sit in the GPU's expert slots (expert offloading): pure
//! bookkeeping, no tensors. A layer has `slots` places for experts on the device; the rest stay
//! in host memory. Each use asks for the experts a step's tokens chose; the cache answers with
//! the slot of each, the loads to issue first (evicting the least recently used experts the use
//! does not need) and whether each was a hit.
//!
//! Invariants: an expert is in at most one slot, a slot holds at most one expert, and a use
//! never evicts an expert it needs. A use needs at most `slots` experts: the caller splits a
//! larger set into rounds ([`ExpertSlots::rounds`]).

/// How a full cache picks the expert to evict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// The expert whose last use is oldest.
    #[default]
    Lru,
}

/// One layer's expert slots.
#[derive(Clone, Debug)]
pub struct ExpertSlots {
    /// Slot -> the expert in it.
    resident: Vec<Option<usize>>,
    /// Expert -> its slot, where it has one.
    slot_of: Vec<Option<usize>>,
    /// Slot -> the use that last needed it (0: never).
    last_use: Vec<u64>,
    uses: u64,
    policy: EvictionPolicy,
}

/// What one use of the cache does: every needed expert's slot, in the order asked, and the
/// loads (expert into slot) that must land before the experts run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotPlan {
    pub slots: Vec<usize>,
    pub loads: Vec<Load>,
    pub hits: usize,
}

/// Copy `expert`'s weights from host memory into `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Load {
    pub expert: usize,
    pub slot: usize,
}

impl SlotPlan {
    pub fn misses(&self) -> usize {
        self.loads.len()
    }
}

impl ExpertSlots {
    /// `slots` places for `experts` experts; experts `0..slots` start in slots `0..slots` (the
    /// load fills them at start-up).
    pub fn new(experts: usize, slots: usize, policy: EvictionPolicy) -> Self {
        assert!(
            (1..=experts).contains(&slots),
            "1 to {experts} slots, not {slots}"
        );
        Self {
            resident: (0..slots).map(Some).collect(),
            slot_of: (0..experts).map(|e| (e < slots).then_some(e)).collect(),
            last_use: vec![0; slots],
            uses: 0,
            policy,
        }
    }

    pub fn num_slots(&self) -> usize {
        self.resident.len()
    }

    pub fn num_experts(&self) -> usize {
        self.slot_of.len()
    }

    /// The expert in `slot`.
    pub fn expert_in(&self, slot: usize) -> Option<usize> {
        self.resident[slot]
    }

    /// `needed` (distinct experts) in groups of at most `slots`, the resident ones first so a
    /// round of hits runs before any eviction.
    pub fn rounds(&self, needed: &[usize]) -> Vec<Vec<usize>> {
        let (mut hit, miss): (Vec<usize>, Vec<usize>) =
            needed.iter().partition(|&&e| self.slot_of[e].is_some());
        hit.extend(miss);
        hit.chunks(self.num_slots()).map(<[_]>::to_vec).collect()
    }

    /// Places `needed` (distinct, at most `slots` of them): hits keep their slots, each miss
    /// takes a free slot or evicts an expert this use does not need.
    pub fn assign(&mut self, needed: &[usize]) -> SlotPlan {
        assert!(
            needed.len() <= self.num_slots(),
            "{} experts asked of {} slots: split them with `rounds`",
            needed.len(),
            self.num_slots()
        );
        self.uses += 1;
        let now = self.uses;
        // Mark the hits first, so no miss below evicts them.
        for &e in needed {
            if let Some(s) = self.slot_of[e] {
                self.last_use[s] = now;
            }
        }
        let mut plan = SlotPlan {
            slots: Vec::with_capacity(needed.len()),
            loads: Vec::new(),
            hits: 0,
        };
        for &e in needed {
            let slot = match self.slot_of[e] {
                Some(s) => {
                    plan.hits += 1;
                    s
                }
                None => {
                    let s = self.victim(now);
                    if let Some(old) = self.resident[s] {
                        self.slot_of[old] = None;
                    }
                    self.resident[s] = Some(e);
                    self.slot_of[e] = Some(s);
                    self.last_use[s] = now;
                    plan.loads.push(Load { expert: e, slot: s });
                    s
                }
            };
            plan.slots.push(slot);
        }
        plan
    }

    /// The slot a miss takes: a free one, else by the policy among slots this use has not
    /// marked.
    fn victim(&self, now: u64) -> usize {
        if let Some(free) = self.resident.iter().position(Option::is_none) {
            return free;
        }
        match self.policy {
            EvictionPolicy::Lru => (0..self.num_slots())
                .filter(|&s| self.last_use[s] < now)
                .min_by_key(|&s| self.last_use[s])
                .expect("a use needs at most `slots` experts"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(experts: usize, n: usize) -> ExpertSlots {
        ExpertSlots::new(experts, n, EvictionPolicy::Lru)
    }

    /// Every expert in at most one slot, and the two maps agree.
    fn check(c: &ExpertSlots) {
        for (s, e) in c.resident.iter().enumerate() {
            if let Some(e) = e {
                assert_eq!(c.slot_of[*e], Some(s));
            }
        }
        for (e, s) in c.slot_of.iter().enumerate() {
            if let Some(s) = s {
                assert_eq!(c.resident[*s], Some(e));
            }
        }
    }

    #[test]
    fn hits_keep_their_slots_and_misses_evict_the_least_recently_used() {
        let mut c = slots(8, 3);
        let p = c.assign(&[0, 1]);
        assert_eq!((p.slots.clone(), p.hits, p.misses()), (vec![0, 1], 2, 0));
        // Slot 2 (expert 2) is the oldest: never used since the start.
        let p = c.assign(&[5]);
        assert_eq!(p.loads, vec![Load { expert: 5, slot: 2 }]);
        // Expert 0 (last needed by the first use) is now the oldest; 1 is needed again.
        c.assign(&[1]);
        let p = c.assign(&[6, 1]);
        assert_eq!(p.loads, vec![Load { expert: 6, slot: 0 }]);
        assert_eq!(p.hits, 1);
        assert_eq!(c.expert_in(0), Some(6));
        assert_eq!(c.slot_of[0], None);
        check(&c);
    }

    #[test]
    fn a_use_never_evicts_an_expert_it_needs() {
        let mut c = slots(8, 2);
        // Expert 1 is the oldest resident, but this use needs it: the miss takes expert 0's slot.
        c.assign(&[0]);
        let p = c.assign(&[7, 1]);
        assert_eq!(p.loads, vec![Load { expert: 7, slot: 0 }]);
        assert_eq!(p.slots, vec![0, 1]);
        check(&c);
    }

    #[test]
    fn a_budget_of_top_k_turns_every_new_pair_over() {
        let mut c = slots(8, 2);
        let p = c.assign(&[3, 4]);
        assert_eq!((p.hits, p.misses()), (0, 2));
        let p = c.assign(&[4, 3]);
        assert_eq!((p.hits, p.misses()), (2, 0));
        assert_eq!(p.slots, vec![1, 0]);
        check(&c);
    }

    #[test]
    fn more_experts_than_slots_run_in_rounds_hits_first() {
        let c = slots(8, 3);
        let rounds = c.rounds(&[7, 0, 6, 2, 5]);
        assert_eq!(rounds, vec![vec![0, 2, 7], vec![6, 5]]);
        let mut c = c;
        let mut loaded = 0;
        for r in &rounds {
            let p = c.assign(r);
            loaded += p.misses();
            for (e, s) in r.iter().zip(&p.slots) {
                assert_eq!(c.expert_in(*s), Some(*e));
            }
        }
        assert_eq!(loaded, 3);
        check(&c);
    }

    #[test]
    fn all_experts_resident_never_miss() {
        let mut c = slots(4, 4);
        for step in 0..20 {
            let needed: Vec<usize> = (0..4).filter(|e| (step + e) % 3 != 0).collect();
            assert_eq!(c.assign(&needed).misses(), 0);
        }
    }

    #[test]
    #[should_panic(expected = "split them")]
    fn asking_more_than_the_slots_at_once_is_a_bug() {
        slots(8, 2).assign(&[0, 1, 2]);
    }
}
