use proptest::prelude::*;

use super::*;
use crate::engine::params::SamplingParams;

fn scheduler(
    policy: SchedulerPolicy,
    num_blocks: usize,
    block_size: usize,
    max_num_seqs: usize,
) -> Scheduler {
    let limits = SchedulerLimits {
        max_num_seqs,
        max_num_batched_tokens: 4096,
        max_model_len: 4096,
    };
    Scheduler::new(
        policy,
        limits,
        vec![0],
        BlockManager::new(num_blocks, block_size, true),
    )
}

fn add(s: &mut Scheduler, id: u64, prompt_len: usize, max_tokens: usize) {
    let prompt = (0..prompt_len as u32)
        .map(|t| 1 + (t * 7 + id as u32) % 50)
        .collect();
    s.add(Sequence::new(
        id,
        prompt,
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(max_tokens)
        },
    ));
}

/// Runs one step with a fake model that samples token 1 for everyone; checks invariants.
fn step(s: &mut Scheduler) -> (Batch, Vec<(Sequence, FinishReason)>) {
    let batch = s.schedule();
    s.blocks.check_invariants(s.block_tables());
    let placed = s.launched(&batch);
    let done = s.read_back(&placed, &vec![1; placed.len()]).finished;
    s.blocks.check_invariants(s.block_tables());
    (batch, done)
}

fn run_to_end(s: &mut Scheduler, max_steps: usize) -> Vec<(Sequence, FinishReason)> {
    let mut all = Vec::new();
    for _ in 0..max_steps {
        if !s.has_unfinished() {
            return all;
        }
        all.extend(step(s).1);
    }
    panic!("not finished after {max_steps} steps");
}

#[test]
fn policy_none_prefills_whole_prompts_then_decodes() {
    let mut s = scheduler(SchedulerPolicy::None, 64, 4, 8);
    add(&mut s, 1, 10, 3);
    add(&mut s, 2, 6, 3);
    let (b, _) = step(&mut s);
    assert_eq!(b.kind(), StepKind::Prefill);
    assert_eq!(
        b.seqs,
        vec![
            ScheduledSeq {
                id: 1,
                num_tokens: 10,
                samples: true
            },
            ScheduledSeq {
                id: 2,
                num_tokens: 6,
                samples: true
            }
        ]
    );
    let (b, _) = step(&mut s);
    assert_eq!(b.kind(), StepKind::Decode);
    assert_eq!(b.decode_tokens, 2);
    let done = run_to_end(&mut s, 10);
    assert_eq!(done.len(), 2);
    assert!(done
        .iter()
        .all(|(seq, r)| seq.num_output_tokens() == 3 && *r == FinishReason::Length));
    assert_eq!(s.blocks.num_free(), 64);
}

#[test]
fn chunked_splits_long_prompts_and_mixes_decodes() {
    let policy = SchedulerPolicy::Chunked {
        chunk_size: 8,
        order: ChunkOrder::DecodeFirst,
    };
    let mut s = scheduler(policy, 64, 4, 8);
    add(&mut s, 1, 3, 5);
    step(&mut s); // prompt 1 whole, samples
    add(&mut s, 2, 20, 2);
    let (b, _) = step(&mut s);
    assert_eq!(b.kind(), StepKind::Mixed);
    assert_eq!(
        b.seqs[0],
        ScheduledSeq {
            id: 1,
            num_tokens: 1,
            samples: true
        }
    );
    assert_eq!(
        b.seqs[1],
        ScheduledSeq {
            id: 2,
            num_tokens: 7,
            samples: false
        }
    );
    let (b, _) = step(&mut s);
    assert_eq!(
        b.seqs[1],
        ScheduledSeq {
            id: 2,
            num_tokens: 7,
            samples: false
        }
    );
    let (b, _) = step(&mut s);
    // 20 = 7 + 7 + 6: the last chunk samples; the prompt's last token is never fed twice.
    assert_eq!(
        b.seqs[1],
        ScheduledSeq {
            id: 2,
            num_tokens: 6,
            samples: true
        }
    );
    assert_eq!(s.seq(2).num_computed, 20);
    assert_eq!(s.seq(2).len(), 21);
    run_to_end(&mut s, 20);
}

#[test]
fn decode_first_never_blocks_decodes_behind_a_long_prefill() {
    let policy = SchedulerPolicy::Chunked {
        chunk_size: 16,
        order: ChunkOrder::DecodeFirst,
    };
    let mut s = scheduler(policy, 256, 4, 16);
    for id in 0..4 {
        add(&mut s, id, 4, 50);
    }
    step(&mut s);
    for id in 10..14 {
        add(&mut s, id, 200, 2);
    }
    for _ in 0..30 {
        let (b, _) = step(&mut s);
        assert!(b.prefill_tokens + b.decode_tokens <= 16);
        // Every decoding sequence gets its token in every step.
        let decoding: Vec<_> = (0..4).filter(|id| s.seqs.contains_key(id)).collect();
        for id in decoding {
            assert!(b.seqs.iter().any(|e| e.id == id), "decode of {id} skipped");
        }
    }
}

/// Under each order, a 200-token prompt in its chunks and three 6-token prompts arriving one
/// step later: the steps each order forms, as (id, tokens) per step until the short prompts
/// have sampled their first token.
fn steps_with_a_long_prompt_in_prefill(order: ChunkOrder) -> Vec<Vec<(RequestId, usize)>> {
    let policy = SchedulerPolicy::Chunked {
        chunk_size: 32,
        order,
    };
    let mut s = scheduler(policy, 256, 4, 16);
    add(&mut s, 1, 4, 40);
    step(&mut s); // request 1 now decodes
    add(&mut s, 2, 200, 2);
    let mut steps = vec![];
    let first = step(&mut s).0;
    steps.push(first.seqs.iter().map(|e| (e.id, e.num_tokens)).collect());
    for id in 10..13 {
        add(&mut s, id, 6, 2);
    }
    let mut sampled = std::collections::HashSet::new();
    while !(10..13).all(|id| sampled.contains(&id)) {
        assert!(steps.len() < 50, "short prompts never sampled: {steps:?}");
        let b = step(&mut s).0;
        sampled.extend(b.seqs.iter().filter(|e| e.samples).map(|e| e.id));
        assert!(b.prefill_tokens + b.decode_tokens <= 32);
        steps.push(b.seqs.iter().map(|e| (e.id, e.num_tokens)).collect());
    }
    steps
}

/// Decodes first, then the short prompts (fewest tokens left) before the long prompt's chunk,
/// which takes the rest of the budget; prefill-first stalls the decode until the long prompt
/// is done and decode-first makes the short prompts wait for its last chunk.
#[test]
fn short_first_serves_short_prompts_during_a_long_prefill() {
    let short = steps_with_a_long_prompt_in_prefill(ChunkOrder::ShortFirst);
    assert_eq!(short[0], vec![(1, 1), (2, 31)]);
    assert_eq!(short[1], vec![(1, 1), (10, 6), (11, 6), (12, 6), (2, 13)]);
    assert_eq!(
        short.len(),
        2,
        "the short prompts sample in the step after they arrive"
    );

    let decode_first = steps_with_a_long_prompt_in_prefill(ChunkOrder::DecodeFirst);
    assert_eq!(decode_first[1], vec![(1, 1), (2, 31)]);
    // 200 prompt tokens at 31 a step: the short prompts start with the long one's last chunk.
    assert_eq!(decode_first.len(), 8);

    let prefill_first = steps_with_a_long_prompt_in_prefill(ChunkOrder::PrefillFirst);
    assert_eq!(prefill_first[0], vec![(2, 32)], "the decode of 1 stalls");
    assert!(prefill_first[1..6].iter().all(|s| !s.contains(&(1, 1))));
}

/// A long prompt still finishes while short prompts keep arriving under short-first, as long
/// as they leave part of the budget.
#[test]
fn short_first_does_not_starve_a_long_prompt() {
    let policy = SchedulerPolicy::Chunked {
        chunk_size: 32,
        order: ChunkOrder::ShortFirst,
    };
    let mut s = scheduler(policy, 512, 4, 64);
    add(&mut s, 0, 300, 1);
    for t in 1..200u64 {
        add(&mut s, t, 5, 2);
        step(&mut s);
        if !s.seqs.contains_key(&0) {
            // 300 tokens at 32 - 5 - (up to 2 decodes) a step: about 12 steps.
            assert!(t <= 14, "the long prompt took {t} steps");
            return;
        }
    }
    panic!("the long prompt never finished");
}

#[test]
fn preemption_frees_blocks_and_the_victim_resumes_by_recomputing() {
    // 6 blocks of 4 tokens: two sequences of 8 prompt tokens fill 4; decoding to 12 needs 6.
    // Prefix caching off, so a resumed sequence recomputes everything.
    let limits = SchedulerLimits {
        max_num_seqs: 8,
        max_num_batched_tokens: 4096,
        max_model_len: 4096,
    };
    let mut s = Scheduler::new(
        SchedulerPolicy::None,
        limits,
        vec![0],
        BlockManager::new(6, 4, false),
    );
    add(&mut s, 1, 8, 8);
    add(&mut s, 2, 8, 8);
    let mut preempted = 0;
    let mut recompute_seen = false;
    let mut done = Vec::new();
    for _ in 0..100 {
        if !s.has_unfinished() {
            break;
        }
        let (b, d) = step(&mut s);
        preempted += b.preempted;
        recompute_seen |= b.seqs.iter().any(|e| e.num_tokens > 8);
        done.extend(d);
    }
    assert!(
        preempted > 0,
        "the cache was too small: someone must be preempted"
    );
    assert!(
        recompute_seen,
        "a resumed sequence recomputes prompt + outputs in one prefill"
    );
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|(seq, _)| seq.num_output_tokens() == 8));
}

#[test]
fn prefix_cache_hit_skips_the_cached_blocks() {
    let mut s = scheduler(SchedulerPolicy::None, 64, 4, 8);
    let prompt: Vec<u32> = (10..19).collect();
    s.add(Sequence::new(1, prompt.clone(), SamplingParams::greedy(2)));
    step(&mut s);
    s.add(Sequence::new(2, prompt, SamplingParams::greedy(2)));
    let (b, _) = step(&mut s);
    let entry = b.seqs.iter().find(|e| e.id == 2).unwrap();
    assert_eq!(b.prefix_hit_tokens, 8);
    assert_eq!(entry.num_tokens, 1);
}

fn policies() -> impl Strategy<Value = SchedulerPolicy> {
    prop_oneof![
        Just(SchedulerPolicy::None),
        (1usize..40, 0usize..3).prop_map(|(c, o)| SchedulerPolicy::Chunked {
            chunk_size: c,
            order: [
                ChunkOrder::PrefillFirst,
                ChunkOrder::DecodeFirst,
                ChunkOrder::ShortFirst
            ][o]
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random request mixes and arrival steps, steps read in turn or queued ahead (async
    /// scheduling): no block leaked, no request lost, budget kept.
    #[test]
    fn no_block_leaked_and_no_request_lost(
        policy in policies(),
        reqs in proptest::collection::vec((1usize..30, 1usize..12, 0usize..20), 1..12),
        num_blocks in 12usize..40,
        max_num_seqs in 1usize..6,
        depth in 1usize..=2,
    ) {
        let mut s = scheduler(policy.clone(), num_blocks, 4, max_num_seqs);
        let mut driver = Driver::new(depth, |_, _| 1);
        let mut finished = std::collections::HashMap::new();
        for t in 0..2000 {
            for (id, &(p, o, at)) in reqs.iter().enumerate() {
                if at == t {
                    add(&mut s, id as u64, p, o);
                }
            }
            let (batches, done) = driver.step(&mut s);
            for b in batches {
                if let SchedulerPolicy::Chunked { chunk_size, .. } = policy {
                    prop_assert!(b.prefill_tokens + b.decode_tokens <= chunk_size);
                }
                prop_assert!(b.seqs.len() <= max_num_seqs);
            }
            for (seq, _) in done {
                prop_assert!(!seq.tokens.contains(&PLACEHOLDER_TOKEN));
                finished.insert(seq.id, seq.num_output_tokens());
            }
            if t > 20 && !driver.busy(&s) {
                break;
            }
        }
        prop_assert_eq!(finished.len(), reqs.len());
        for (id, &(_, o, _)) in reqs.iter().enumerate() {
            prop_assert_eq!(finished[&(id as u64)], o);
        }
        prop_assert_eq!(s.blocks.num_free(), num_blocks);
    }
}

/// Under a steady stream (one new 6-token request per step, 4 output tokens each), every
/// request finishes within a bounded number of steps of its arrival, under every policy.
#[test]
fn no_request_starves_under_a_steady_stream() {
    let policies = [
        SchedulerPolicy::None,
        SchedulerPolicy::Chunked {
            chunk_size: 16,
            order: ChunkOrder::PrefillFirst,
        },
        SchedulerPolicy::Chunked {
            chunk_size: 16,
            order: ChunkOrder::DecodeFirst,
        },
        SchedulerPolicy::Chunked {
            chunk_size: 16,
            order: ChunkOrder::ShortFirst,
        },
    ];
    for policy in policies {
        let mut s = scheduler(policy.clone(), 256, 4, 16);
        let mut arrived = std::collections::HashMap::new();
        let mut worst = 0;
        for t in 0..300u64 {
            if t < 200 {
                add(&mut s, t, 6, 4);
                arrived.insert(t, t);
            }
            for (seq, _) in step(&mut s).1 {
                worst = worst.max(t - arrived[&seq.id]);
            }
        }
        assert!(!s.has_unfinished(), "{policy:?}: requests left over");
        // Policy none prefills whenever a prompt waits, so decodes run only once max_num_seqs
        // (16) sequences are running: its bound comes from that limit.
        let bound = if policy == SchedulerPolicy::None {
            24
        } else {
            12
        };
        assert!(worst <= bound, "{policy:?}: a request waited {worst} steps");
    }
}

/// Steps the scheduler as `LLM::step` does: with `depth` 2 (async scheduling) each step is
/// scheduled and launched before the previous step's tokens are read; with 1, in turn.
/// `model(id, pos)` is the token sampled for position `pos`. Checks invariants throughout.
struct Driver<M: Fn(RequestId, usize) -> u32> {
    depth: usize,
    model: M,
    queued: std::collections::VecDeque<Vec<Placeholder>>,
    preempted: usize,
}

impl<M: Fn(RequestId, usize) -> u32> Driver<M> {
    fn new(depth: usize, model: M) -> Self {
        Self {
            depth,
            model,
            queued: Default::default(),
            preempted: 0,
        }
    }

    fn busy(&self, s: &Scheduler) -> bool {
        s.has_unfinished() || !self.queued.is_empty()
    }

    /// The batches scheduled by this call, and the sequences that finished in it.
    fn step(&mut self, s: &mut Scheduler) -> (Vec<Batch>, Vec<(Sequence, FinishReason)>) {
        let mut batches = Vec::new();
        while self.queued.len() < self.depth {
            let batch = s.schedule();
            s.blocks.check_invariants(s.block_tables());
            self.preempted += batch.preempted;
            if batch.is_empty() {
                break;
            }
            for e in &batch.seqs {
                let seq = s.seq(e.id);
                // Only a sequence's newest token may still be unread when it is fed.
                assert!(seq.num_known() + 1 >= seq.num_computed + e.num_tokens);
                assert!(seq.unread <= 1);
                // Never a token past max_tokens, unread ones counted.
                assert!(!e.samples || seq.num_output_tokens() < seq.params.max_tokens);
            }
            self.queued.push_back(s.launched(&batch));
            batches.push(batch);
        }
        let mut finished = Vec::new();
        if let Some(placed) = self.queued.pop_front() {
            let tokens: Vec<u32> = placed.iter().map(|p| (self.model)(p.id, p.pos)).collect();
            finished = s.read_back(&placed, &tokens).finished;
            s.blocks.check_invariants(s.block_tables());
        }
        (batches, finished)
    }
}

/// Runs async scheduling's order to the end. Returns the finished sequences and the
/// preemptions.
fn run_pipelined(
    s: &mut Scheduler,
    model: impl Fn(RequestId, usize) -> u32,
    max_steps: usize,
) -> (Vec<(Sequence, FinishReason)>, usize) {
    let mut driver = Driver::new(2, model);
    let mut finished = Vec::new();
    for _ in 0..max_steps {
        if !driver.busy(s) {
            return (finished, driver.preempted);
        }
        finished.extend(driver.step(s).1);
    }
    panic!("not finished after {max_steps} steps");
}

/// With async scheduling and a cache small enough to preempt, every request still gets
/// exactly its tokens, no placeholder leaks into an output, and every block comes back.
#[test]
fn pipelined_steps_keep_outputs_and_blocks_under_preemption() {
    for policy in [
        SchedulerPolicy::None,
        SchedulerPolicy::Chunked {
            chunk_size: 32,
            order: ChunkOrder::DecodeFirst,
        },
    ] {
        let mut s = scheduler(policy.clone(), 12, 4, 8);
        for id in 0..6 {
            add(&mut s, id, 5 + id as usize, 6);
        }
        let model = |id: RequestId, pos: usize| 1 + (id as u32 * 13 + pos as u32) % 40;
        let (done, preempted) = run_pipelined(&mut s, model, 400);
        assert!(
            preempted > 0,
            "{policy:?}: the cache was meant to be too small"
        );
        assert_eq!(done.len(), 6);
        for (seq, reason) in done {
            assert_eq!(reason, FinishReason::Length);
            let expected: Vec<u32> = (seq.num_prompt_tokens..seq.num_prompt_tokens + 6)
                .map(|pos| model(seq.id, pos))
                .collect();
            assert_eq!(
                seq.tokens[seq.num_prompt_tokens..],
                expected[..],
                "{policy:?}"
            );
        }
        assert_eq!(s.blocks.num_free(), 12, "{policy:?}: blocks leaked");
    }
}

/// A sequence whose EOS is read while its next step is already queued stops at the EOS; the
/// queued step's token for it is dropped and the others are unaffected.
#[test]
fn eos_read_while_the_next_step_is_queued_stops_there() {
    let mut s = scheduler(SchedulerPolicy::None, 64, 4, 8);
    let params = SamplingParams::greedy(10); // eos honoured
    s.add(Sequence::new(1, vec![5, 6, 7], params.clone()));
    s.add(Sequence::new(2, vec![8, 9], params));
    // Sequence 1 samples EOS (0) as its third output token; sequence 2 never does.
    let model = |id: RequestId, pos: usize| if id == 1 && pos == 5 { 0 } else { 3 };
    let (done, _) = run_pipelined(&mut s, model, 100);
    let by_id: std::collections::HashMap<_, _> = done
        .into_iter()
        .map(|(seq, r)| (seq.id, (seq, r)))
        .collect();
    let (one, reason) = &by_id[&1];
    assert_eq!(*reason, FinishReason::Stop);
    assert_eq!(one.tokens, vec![5, 6, 7, 3, 3, 0]);
    let (two, reason) = &by_id[&2];
    assert_eq!(*reason, FinishReason::Length);
    assert_eq!(two.tokens[2..], [3; 10]);
    assert_eq!(s.blocks.num_free(), 64);
}
