//! KV-cache blocks as plain integers: reference counts, a free list, and the prefix cache
//! (chained block hashes -> block). No tensors here.
//!
//! Invariants (checked by `check_invariants` in tests):
//! - a block is in the free list iff its ref count is 0;
//! - `hash_to_block[h] = b` implies block `b` holds hash `h`, and is full and written;
//! - a freed block keeps its hash (a later prompt may revive it) until it is reused for other tokens.
use std::collections::{HashMap, VecDeque};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::sequence::Sequence;

#[derive(Clone, Debug, Default)]
struct Block {
    ref_count: u32,
    hash: Option<u64>,
    /// The tokens behind `hash`, to rule out collisions.
    tokens: Vec<u32>,
}

pub struct BlockManager {
    block_size: usize,
    blocks: Vec<Block>,
    /// Free blocks, least recently freed first.
    free: VecDeque<u32>,
    hash_to_block: HashMap<u64, u32>,
    prefix_caching: bool,
}

/// Chained hash of one full block: depends on every token before it through `prev`.
pub fn block_hash(prev: Option<u64>, tokens: &[u32]) -> u64 {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
    xxh3_64_with_seed(&bytes, prev.unwrap_or(0x6e61_6e6f))
}

impl BlockManager {
    pub fn new(num_blocks: usize, block_size: usize, prefix_caching: bool) -> Self {
        Self {
            block_size,
            blocks: vec![Block::default(); num_blocks],
            free: (0..num_blocks as u32).collect(),
            hash_to_block: HashMap::new(),
            prefix_caching,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    pub fn num_used(&self) -> usize {
        self.blocks.len() - self.free.len()
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.block_size)
    }

    /// Leading blocks of `seq`'s tokens found in the prefix cache, with their hashes. Only full
    /// blocks before the last token count: that token is always computed, for its logits.
    fn match_prefix(&self, seq: &Sequence) -> Vec<(u32, u64)> {
        let mut hits = Vec::new();
        if !self.prefix_caching {
            return hits;
        }
        let mut prev = None;
        for chunk in seq.tokens[..seq.len() - 1].chunks_exact(self.block_size) {
            let h = block_hash(prev, chunk);
            match self.hash_to_block.get(&h) {
                Some(&b) if self.blocks[b as usize].tokens == chunk => hits.push((b, h)),
                _ => break,
            }
            prev = Some(h);
        }
        hits
    }

    /// Free blocks that admitting `seq` would take (revived cached blocks count too), and the
    /// number of its tokens the prefix cache would serve.
    pub fn admission_cost(&self, seq: &Sequence) -> (usize, usize) {
        let hits = self.match_prefix(seq);
        let revived = hits
            .iter()
            .filter(|(b, _)| self.blocks[*b as usize].ref_count == 0)
            .count();
        let fresh = self.blocks_for(seq.len()) - hits.len();
        (fresh + revived, hits.len() * self.block_size)
    }

    /// Gives `seq` blocks for all its tokens, reusing cached prefix blocks. Returns the number of
    /// tokens served from the cache, or `None` (and changes nothing) when blocks run short.
    pub fn allocate(&mut self, seq: &mut Sequence) -> Option<usize> {
        debug_assert!(seq.block_table.is_empty() && seq.num_computed == 0);
        let (needed, _) = self.admission_cost(seq);
        if needed > self.free.len() {
            return None;
        }
        let hits = self.match_prefix(seq);
        for &(b, h) in &hits {
            if self.blocks[b as usize].ref_count == 0 {
                self.free.retain(|&f| f != b);
            }
            self.blocks[b as usize].ref_count += 1;
            seq.block_table.push(b);
            seq.block_hashes.push(h);
        }
        for _ in hits.len()..self.blocks_for(seq.len()) {
            let b = self.take_free();
            seq.block_table.push(b);
        }
        seq.num_computed = hits.len() * self.block_size;
        Some(seq.num_computed)
    }

    /// Pops the least recently freed block, forgetting its old prefix-cache entry.
    fn take_free(&mut self) -> u32 {
        let b = self.free.pop_front().expect("caller checked free count");
        let block = &mut self.blocks[b as usize];
        if let Some(h) = block.hash.take() {
            if self.hash_to_block.get(&h) == Some(&b) {
                self.hash_to_block.remove(&h);
            }
        }
        block.tokens.clear();
        block.ref_count = 1;
        b
    }

    /// Whether `seq` can hold `extra` more tokens, counting blocks still to take.
    pub fn can_grow(&self, seq: &Sequence, extra: usize) -> bool {
        let needed = self
            .blocks_for(seq.num_computed + extra)
            .saturating_sub(seq.block_table.len());
        needed <= self.free.len()
    }

    /// Adds blocks so `seq` covers `num_computed + extra` tokens. Call after `can_grow`.
    pub fn grow(&mut self, seq: &mut Sequence, extra: usize) {
        while seq.block_table.len() * self.block_size < seq.num_computed + extra {
            let b = self.take_free();
            seq.block_table.push(b);
        }
    }

    /// Registers `seq`'s blocks that became full, with tokens known and K and V written (or
    /// queued to be, ahead of any step that could read them), so later prompts can reuse them.
    pub fn commit(&mut self, seq: &mut Sequence) {
        let full = seq.num_computed.min(seq.num_known()) / self.block_size;
        while seq.block_hashes.len() < full {
            let i = seq.block_hashes.len();
            let chunk = &seq.tokens[i * self.block_size..(i + 1) * self.block_size];
            let h = block_hash(seq.block_hashes.last().copied(), chunk);
            seq.block_hashes.push(h);
            let b = seq.block_table[i];
            if self.prefix_caching
                && self.blocks[b as usize].hash.is_none()
                && !self.hash_to_block.contains_key(&h)
            {
                self.blocks[b as usize].hash = Some(h);
                self.blocks[b as usize].tokens = chunk.to_vec();
                self.hash_to_block.insert(h, b);
            }
        }
    }

    /// Drops `seq`'s hold on its blocks (tail first, so prefixes stay cached longest).
    pub fn free(&mut self, seq: &mut Sequence) {
        for &b in seq.block_table.iter().rev() {
            let block = &mut self.blocks[b as usize];
            block.ref_count -= 1;
            if block.ref_count == 0 {
                self.free.push_back(b);
            }
        }
        seq.block_table.clear();
        seq.block_hashes.clear();
        seq.num_computed = 0;
    }

    /// Panics with a description when an invariant is broken; `holders` are every live sequence's tables.
    pub fn check_invariants<'a>(&self, holders: impl Iterator<Item = &'a [u32]>) {
        let mut counts = vec![0u32; self.blocks.len()];
        for table in holders {
            for &b in table {
                counts[b as usize] += 1;
            }
        }
        for (i, block) in self.blocks.iter().enumerate() {
            assert_eq!(
                block.ref_count, counts[i],
                "block {i}: ref count vs holders"
            );
            assert_eq!(
                block.ref_count == 0,
                self.free.contains(&(i as u32)),
                "block {i}: free list membership"
            );
        }
        assert_eq!(
            self.free.len() + counts.iter().filter(|&&c| c > 0).count(),
            self.blocks.len(),
            "no block leaked"
        );
        for (&h, &b) in &self.hash_to_block {
            assert_eq!(
                self.blocks[b as usize].hash,
                Some(h),
                "hash map points at block {b}"
            );
        }
    }
}

#[cfg(test)]
#[path = "block_manager_tests.rs"]
mod tests;
