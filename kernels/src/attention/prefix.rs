//! Shared prefixes for cascade attention, found from the block tables alone: sequences that
//! share leading cache blocks (through prefix caching) hold the same keys there, so a cascade
//! step can attend their queries to those keys once per group instead of once per sequence.
use super::plan::SeqAttn;

/// Leading keys that every sequence in `seqs` holds in the same cache slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedPrefix {
    /// Indices into the step's sequences, in order.
    pub seqs: Vec<usize>,
    /// Keys `0..tokens` of each (whole blocks where found from the block tables).
    pub tokens: usize,
}

/// When a step's decode rows attend the prefixes they share once per group (cascade) rather than
/// once per row (paged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CascadeRule {
    /// Paged attention only.
    #[default]
    Off,
    /// Every group of two or more decode rows that share a block.
    Always,
    /// Groups of at least `min_seqs` decode rows sharing at least `min_tokens` keys, where the
    /// cascade spares at least `min_saved_keys` key reads: `(rows - 1) × shared keys`, what
    /// paged attention reads of the prefix beyond the once cascade reads it.
    Auto {
        min_seqs: usize,
        min_tokens: usize,
        min_saved_keys: usize,
    },
}

impl CascadeRule {
    /// The groups this rule cascades in a step of `seqs`.
    pub fn prefixes(self, seqs: &[SeqAttn], block_size: usize) -> Vec<SharedPrefix> {
        let (min_seqs, min_tokens, min_saved) = match self {
            CascadeRule::Off => return Vec::new(),
            CascadeRule::Always => (2, 1, 0),
            CascadeRule::Auto {
                min_seqs,
                min_tokens,
                min_saved_keys,
            } => (min_seqs, min_tokens, min_saved_keys),
        };
        let mut groups =
            shared_prefixes(seqs, block_size, min_seqs, min_tokens.div_ceil(block_size));
        groups.retain(|g| (g.seqs.len() - 1) * g.tokens >= min_saved);
        groups
    }
}

/// Groups of at least `min_seqs` decode rows (one query) of `seqs` with at least `min_blocks`
/// leading blocks in common, grouped by their first block. A prefix stops one key short of each member's last:
/// every sequence keeps a suffix (its newest key at least) for the paged kernels, and only full
/// blocks are shared, so a prefix never ends mid-block. A sequence is in one group at most.
pub fn shared_prefixes(
    seqs: &[SeqAttn],
    block_size: usize,
    min_seqs: usize,
    min_blocks: usize,
) -> Vec<SharedPrefix> {
    let mut by_first: Vec<(u32, Vec<usize>)> = Vec::new();
    for (i, s) in seqs.iter().enumerate().filter(|(_, s)| s.q_len == 1) {
        // Full blocks before the sequence's last key.
        let full = (s.ctx_len.saturating_sub(1) / block_size).min(s.block_table.len());
        if full == 0 {
            continue;
        }
        let first = s.block_table[0];
        match by_first.iter_mut().find(|(b, _)| *b == first) {
            Some((_, members)) => members.push(i),
            None => by_first.push((first, vec![i])),
        }
    }
    by_first
        .into_iter()
        .filter(|(_, members)| members.len() >= min_seqs.max(1))
        .filter_map(|(_, members)| {
            let blocks = members
                .iter()
                .map(|&i| common_blocks(&seqs[members[0]], &seqs[i], block_size))
                .min()
                .unwrap_or(0);
            (blocks >= min_blocks.max(1)).then_some(SharedPrefix {
                seqs: members,
                tokens: blocks * block_size,
            })
        })
        .collect()
}

/// Leading blocks `a` and `b` share, each limited to its full blocks before its last key.
fn common_blocks(a: &SeqAttn, b: &SeqAttn, block_size: usize) -> usize {
    let full = |s: &SeqAttn| (s.ctx_len.saturating_sub(1) / block_size).min(s.block_table.len());
    a.block_table[..full(a)]
        .iter()
        .zip(&b.block_table[..full(b)])
        .take_while(|(x, y)| x == y)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(ctx_len: usize, block_table: &[u32]) -> SeqAttn<'_> {
        SeqAttn {
            q_len: 1,
            ctx_len,
            block_table,
        }
    }

    #[test]
    fn one_prefix_shared_by_all_stops_where_the_tables_part() {
        let (a, b, c) = ([7, 8, 9, 1], [7, 8, 9, 2], [7, 8, 3, 4]);
        let seqs = [seq(60, &a), seq(60, &b), seq(60, &c)];
        let found = shared_prefixes(&seqs, 16, 2, 1);
        assert_eq!(
            found,
            vec![SharedPrefix {
                seqs: vec![0, 1, 2],
                tokens: 32
            }]
        );
    }

    #[test]
    fn every_member_keeps_its_last_key_outside_the_prefix() {
        // Both hold exactly two full blocks: the second holds their last key, so one is shared.
        let t = [5, 6];
        let seqs = [seq(32, &t), seq(32, &t)];
        assert_eq!(shared_prefixes(&seqs, 16, 2, 1)[0].tokens, 16);
        // A context ending mid-block shares only the full blocks before it.
        let u = [5, 6, 7];
        let seqs = [seq(40, &u), seq(40, &u)];
        assert_eq!(shared_prefixes(&seqs, 16, 2, 1)[0].tokens, 32);
    }

    #[test]
    fn groups_by_first_block_and_drops_small_ones() {
        let (a, b, c, d) = ([1, 2, 3], [1, 2, 4], [9, 8, 7], [6, 5, 4]);
        let seqs = [seq(48, &a), seq(48, &b), seq(48, &c), seq(48, &d)];
        let found = shared_prefixes(&seqs, 16, 2, 1);
        assert_eq!(
            found,
            vec![SharedPrefix {
                seqs: vec![0, 1],
                tokens: 32
            }]
        );
        // A lone sequence is a group only where one sequence is enough; too short a prefix is none.
        assert_eq!(shared_prefixes(&seqs, 16, 1, 1).len(), 3);
        assert!(shared_prefixes(&seqs, 16, 2, 3).is_empty());
    }

    #[test]
    fn rules_pick_groups_by_size_and_prefix_length_and_skip_prompts() {
        let t = [1, 2, 3, 4];
        let mut seqs = vec![seq(60, &t); 4];
        seqs[3].q_len = 5; // a chunk over the same blocks is not a decode row
        assert!(CascadeRule::Off.prefixes(&seqs, 16).is_empty());
        let all = CascadeRule::Always.prefixes(&seqs, 16);
        assert_eq!(all[0].seqs, vec![0, 1, 2]);
        assert_eq!(all[0].tokens, 48);
        let auto = |min_seqs, min_tokens, min_saved_keys| CascadeRule::Auto {
            min_seqs,
            min_tokens,
            min_saved_keys,
        };
        assert_eq!(auto(3, 48, 0).prefixes(&seqs, 16), all);
        assert!(auto(4, 16, 0).prefixes(&seqs, 16).is_empty());
        assert!(auto(2, 49, 0).prefixes(&seqs, 16).is_empty());
        // Three rows over 48 shared keys spare 2 × 48 reads.
        assert_eq!(auto(2, 16, 96).prefixes(&seqs, 16), all);
        assert!(auto(2, 16, 97).prefixes(&seqs, 16).is_empty());
    }

    #[test]
    fn a_sequence_within_its_first_block_shares_nothing() {
        let t = [3];
        let seqs = [seq(10, &t), seq(16, &t)];
        assert!(shared_prefixes(&seqs, 16, 2, 1).is_empty());
    }
}
