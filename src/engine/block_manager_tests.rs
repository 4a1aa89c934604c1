use super::*;
use crate::engine::params::SamplingParams;

fn seq(id: u64, tokens: Vec<u32>) -> Sequence {
    Sequence::new(id, tokens, SamplingParams::greedy(4))
}

fn check(bm: &BlockManager, seqs: &[&Sequence]) {
    bm.check_invariants(seqs.iter().map(|s| s.block_table.as_slice()));
}

#[test]
fn allocate_and_free_account_for_every_block() {
    let mut bm = BlockManager::new(8, 4, true);
    let mut a = seq(1, (0..10).collect());
    assert_eq!(bm.allocate(&mut a), Some(0));
    assert_eq!(a.block_table.len(), 3);
    assert_eq!(bm.num_free(), 5);
    check(&bm, &[&a]);
    bm.free(&mut a);
    assert_eq!(bm.num_free(), 8);
    assert!(a.block_table.is_empty());
    check(&bm, &[]);
}

#[test]
fn allocation_that_does_not_fit_changes_nothing() {
    let mut bm = BlockManager::new(2, 4, true);
    let mut a = seq(1, (0..9).collect());
    assert_eq!(bm.allocate(&mut a), None);
    assert_eq!(bm.num_free(), 2);
    assert!(a.block_table.is_empty());
}

#[test]
fn prefix_hit_reuses_committed_blocks_and_counts_refs() {
    let mut bm = BlockManager::new(10, 4, true);
    let prompt: Vec<u32> = (100..111).collect(); // 11 tokens: 2 full blocks + 3
    let mut a = seq(1, prompt.clone());
    bm.allocate(&mut a).unwrap();
    // Not yet written: nothing may match (nano-vllm #208).
    let mut early = seq(2, prompt.clone());
    assert_eq!(bm.admission_cost(&early).1, 0);
    a.num_computed = 11;
    bm.commit(&mut a);
    assert_eq!(a.block_hashes.len(), 2);
    assert_eq!(bm.allocate(&mut early), Some(8));
    assert_eq!(early.block_table[..2], a.block_table[..2]);
    assert_ne!(early.block_table[2], a.block_table[2]);
    assert_eq!(bm.num_free(), 10 - 3 - 1);
    check(&bm, &[&a, &early]);
    bm.free(&mut a);
    check(&bm, &[&early]);
    bm.free(&mut early);
    check(&bm, &[]);
}

#[test]
fn whole_prompt_cached_still_leaves_the_last_token_to_compute() {
    let mut bm = BlockManager::new(10, 4, true);
    let prompt: Vec<u32> = (0..8).collect(); // exactly 2 blocks
    let mut a = seq(1, prompt.clone());
    bm.allocate(&mut a).unwrap();
    a.num_computed = 8;
    bm.commit(&mut a);
    let mut b = seq(2, prompt);
    // Only the first block may match: the last token must be computed for its logits.
    assert_eq!(bm.allocate(&mut b), Some(4));
    assert!(b.num_remaining() >= 1);
    check(&bm, &[&a, &b]);
}

#[test]
fn freed_blocks_stay_cached_until_reused_for_other_tokens() {
    let mut bm = BlockManager::new(3, 4, true);
    let prompt: Vec<u32> = (0..5).collect();
    let mut a = seq(1, prompt.clone());
    bm.allocate(&mut a).unwrap();
    a.num_computed = 5;
    bm.commit(&mut a);
    bm.free(&mut a);
    // Revived from the free list.
    let mut b = seq(2, prompt.clone());
    assert_eq!(bm.allocate(&mut b), Some(4));
    check(&bm, &[&b]);
    bm.free(&mut b);
    // Other tokens take every block: the stale hash must be forgotten (nano-vllm #207).
    let mut c = seq(3, (50..62).collect());
    bm.allocate(&mut c).unwrap();
    let d = seq(4, prompt);
    assert_eq!(bm.admission_cost(&d).1, 0);
    check(&bm, &[&c]);
}

#[test]
fn grow_appends_only_on_block_boundaries() {
    let mut bm = BlockManager::new(4, 4, true);
    let mut a = seq(1, (0..4).collect());
    bm.allocate(&mut a).unwrap();
    assert_eq!(a.block_table.len(), 1);
    a.num_computed = 3;
    assert!(bm.can_grow(&a, 1));
    bm.grow(&mut a, 1);
    assert_eq!(a.block_table.len(), 1, "token 4 fits in block 0");
    a.num_computed = 4;
    a.tokens.push(9);
    bm.grow(&mut a, 1);
    assert_eq!(a.block_table.len(), 2, "token 5 opens block 1");
    check(&bm, &[&a]);
}

#[test]
fn prefix_caching_off_never_matches() {
    let mut bm = BlockManager::new(10, 4, false);
    let mut a = seq(1, (0..9).collect());
    bm.allocate(&mut a).unwrap();
    a.num_computed = 9;
    bm.commit(&mut a);
    let mut b = seq(2, (0..9).collect());
    assert_eq!(bm.allocate(&mut b), Some(0));
}
