//! [`TensorParallel`]: one rank's place in the group, the ranges of heads, MLP width and
//! vocabulary it holds, and the [`Cut`] of each HF tensor that holds them.
use std::ops::Range;

use crate::model::ArchSpec;

/// Rank `rank` of `size` ranks; `size` 1 is the whole model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorParallel {
    pub rank: usize,
    pub size: usize,
}

/// A slice of a row-major tensor: `ranges` of dimension `dim`, back to back (empty: the
/// whole tensor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    pub dim: usize,
    pub ranges: Vec<Range<usize>>,
}

impl Cut {
    pub fn whole() -> Self {
        Cut {
            dim: 0,
            ranges: Vec::new(),
        }
    }

    pub fn along(dim: usize, range: Range<usize>) -> Self {
        Cut {
            dim,
            ranges: vec![range],
        }
    }

    /// `full` with the cut applied.
    pub fn shape(&self, full: &[usize]) -> Vec<usize> {
        let mut shape = full.to_vec();
        if !self.ranges.is_empty() {
            shape[self.dim] = self.ranges.iter().map(|r| r.len()).sum();
        }
        shape
    }

    /// The cut's bytes of a row-major tensor `bytes` of shape `full` and `elem` bytes per
    /// element.
    pub fn apply(&self, bytes: &[u8], full: &[usize], elem: usize) -> Vec<u8> {
        let keeps_all = |r: &Range<usize>| r.start == 0 && r.end == full[self.dim];
        if self.ranges.is_empty() || (self.ranges.len() == 1 && keeps_all(&self.ranges[0])) {
            return bytes.to_vec();
        }
        let outer: usize = full[..self.dim].iter().product();
        let inner = full[self.dim + 1..].iter().product::<usize>() * elem;
        let span = full[self.dim] * inner;
        let mut out = Vec::with_capacity(outer * self.shape(full)[self.dim] * inner);
        for o in 0..outer {
            for r in &self.ranges {
                out.extend_from_slice(&bytes[o * span + r.start * inner..o * span + r.end * inner]);
            }
        }
        out
    }
}

impl Default for TensorParallel {
    fn default() -> Self {
        Self::single()
    }
}

impl TensorParallel {
    pub fn single() -> Self {
        TensorParallel { rank: 0, size: 1 }
    }

    pub fn is_single(&self) -> bool {
        self.size == 1
    }

    /// Why `spec` cannot be split over `size` ranks, if it cannot.
    pub fn check(spec: &ArchSpec, size: usize) -> Result<(), String> {
        let mut widths = vec![("num_attention_heads", spec.num_heads)];
        match &spec.ffn {
            crate::model::arch::FfnSpec::Dense { intermediate_size } => {
                widths.push(("intermediate_size", *intermediate_size))
            }
            crate::model::arch::FfnSpec::Moe {
                moe,
                dense_layers,
                dense_intermediate_size,
            } => {
                widths.push(("moe_intermediate_size", moe.expert_intermediate_size));
                if let Some(s) = moe.shared_expert_intermediate_size {
                    widths.push(("shared_expert_intermediate_size", s));
                }
                if !dense_layers.is_empty() {
                    widths.push(("intermediate_size", *dense_intermediate_size));
                }
            }
        }
        if size == 0 {
            return Err("tensor_parallel_size 0: expected at least 1".into());
        }
        for (name, n) in widths {
            if !n.is_multiple_of(size) {
                return Err(format!(
                    "tensor_parallel_size {size} does not divide the model's {name} ({n})"
                ));
            }
        }
        let kv = spec.num_kv_heads;
        if !kv.is_multiple_of(size) && !size.is_multiple_of(kv) {
            return Err(format!(
                "tensor_parallel_size {size} and num_key_value_heads {kv}: one must divide the \
                 other (KV heads are split, or replicated when fewer than the ranks)"
            ));
        }
        Ok(())
    }

    /// This rank's even share of `n` (which `size` divides).
    pub fn share(&self, n: usize) -> Range<usize> {
        let each = n / self.size;
        self.rank * each..(self.rank + 1) * each
    }

    /// This rank's query heads.
    pub fn q_heads(&self, spec: &ArchSpec) -> Range<usize> {
        self.share(spec.num_heads)
    }

    /// This rank's KV heads: its share, or the one head its query heads use where there are
    /// fewer KV heads than ranks (replicated on `size / kv_heads` ranks).
    pub fn kv_heads(&self, spec: &ArchSpec) -> Range<usize> {
        let kv = spec.num_kv_heads;
        match kv >= self.size {
            true => self.share(kv),
            false => {
                let head = self.rank * kv / self.size;
                head..head + 1
            }
        }
    }

    /// This rank's rows of the vocabulary: `vocab` split as evenly as it goes, the first ranks
    /// one row more.
    pub fn vocab(&self, vocab: usize) -> Range<usize> {
        let (each, extra) = (vocab / self.size, vocab % self.size);
        let start = self.rank * each + self.rank.min(extra);
        start..start + each + usize::from(self.rank < extra)
    }

    /// Rows `heads` of `head_dim` each, of a `[heads * head_dim, ..]` projection.
    pub fn head_rows(heads: Range<usize>, head_dim: usize) -> Range<usize> {
        heads.start * head_dim..heads.end * head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cut_takes_its_ranges_of_one_dimension() {
        // [2, 3, 2] of one-byte elements 0..12.
        let bytes: Vec<u8> = (0..12).collect();
        let full = [2, 3, 2];
        let cut = Cut {
            dim: 1,
            ranges: vec![0..1, 2..3],
        };
        assert_eq!(cut.shape(&full), vec![2, 2, 2]);
        assert_eq!(cut.apply(&bytes, &full, 1), vec![0, 1, 4, 5, 6, 7, 10, 11]);
        let cols = Cut::along(2, 1..2);
        assert_eq!(cols.apply(&bytes, &full, 1), vec![1, 3, 5, 7, 9, 11]);
        assert_eq!(Cut::whole().apply(&bytes, &full, 1), bytes);
    }

    #[test]
    fn the_vocabulary_and_heads_split_over_ranks() {
        let ranks = |size| (0..size).map(move |rank| TensorParallel { rank, size });
        let vocab: Vec<_> = ranks(3).map(|t| t.vocab(10)).collect();
        assert_eq!(vocab, vec![0..4, 4..7, 7..10]);
        let mut spec = crate::model::presets::preset("tiny-llama").unwrap();
        assert_eq!(spec.num_heads, 4);
        // 4 query heads, 2 KV heads over 4 ranks: each KV head on two ranks.
        spec.num_kv_heads = 2;
        let kv: Vec<_> = ranks(4).map(|t| t.kv_heads(&spec)).collect();
        assert_eq!(kv, vec![0..1, 0..1, 1..2, 1..2]);
        let q: Vec<_> = ranks(4).map(|t| t.q_heads(&spec)).collect();
        assert_eq!(q, vec![0..1, 1..2, 2..3, 3..4]);
        assert!(TensorParallel::check(&spec, 2).is_ok());
        let err = TensorParallel::check(&spec, 3).unwrap_err();
        assert!(err.contains("num_attention_heads (4)"), "{err}");
    }
}
