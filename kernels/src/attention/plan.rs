//! Host side of paged attention: cuts one step's sequences into work items, one cube each
//! (per KV head), and picks the tile shape. Pure host code; the kernel reads the arrays built here.
//!
//! A work item is a tile of up to `tile_q` consecutive query tokens of one sequence, attending to
//! a range of its keys. A sequence that brings one query (a decode, or a prompt whose
//! prefix-cache hit left one token) is a decode item and runs on the decode kernel, in
//! decode-only and mixed steps alike, where a long context may split over several items
//! (flash-decoding) whose partial results a second kernel merges by log-sum-exp. A sequence that
//! brings more (a prompt, a chunk) runs in tiles of many queries on the prefill kernels.

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy)]
pub struct SeqAttn<'a> {
    /// New query tokens this step (their K and V are already stored).
    pub q_len: usize,
    /// Tokens in the cache for this sequence, the new ones included.
    pub ctx_len: usize,
    /// Cache block of each `block_size` run of positions.
    pub block_table: &'a [u32],
}

/// What the device offers, for choosing tiles.
#[derive(Debug, Clone, Copy)]
pub struct DeviceCaps {
    /// Streaming multiprocessors (or the equivalent): how many cubes run at once, roughly.
    pub compute_units: usize,
    pub max_shared_bytes: usize,
    /// Query rows per prefill tile (every head of the group for `rows / group` queries).
    pub prefill_rows: usize,
    /// Longest context range of one decode item even when the batch fills the device
    /// (`usize::MAX`: whole contexts): shorter items balance the GPU's last wave at the cost of
    /// a merge launch.
    pub max_decode_keys: usize,
}

/// Compile-time shape of the attention kernel (each distinct one is one compiled kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileShape {
    /// Query heads per KV head.
    pub group: usize,
    /// Query tokens per item.
    pub tile_q: usize,
    pub head_dim: usize,
    /// Keys loaded into shared memory at a time.
    pub kv_tile: usize,
    /// Threads per cube.
    pub threads: usize,
}

impl TileShape {
    /// Query rows one cube computes: every head of the group for every query of the tile.
    pub fn rows(&self) -> usize {
        self.group * self.tile_q
    }

    /// Output accumulators each thread keeps in registers.
    pub fn acc_per_thread(&self) -> usize {
        (self.rows() * self.head_dim).div_ceil(self.threads)
    }

    /// Shared memory the kernel allocates, in bytes (f32 throughout).
    pub fn shared_bytes(&self) -> usize {
        let rows = self.rows();
        4 * (rows * self.head_dim
            + self.kv_tile * (self.head_dim + 1)
            + rows * (self.kv_tile + 1)
            + 3 * rows)
    }
}

/// Fields of one work item in [`AttentionPlan::items`], in order (see [`WorkItem::encode`]).
pub const ITEM_FIELDS: usize = 7;

/// What a work item computes, which decides the kernel that runs it. A new kind (a shared
/// prefix attended once for a group of sequences) gets its own arm and array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// One query row (a decoding sequence): the decode kernel.
    Decode,
    /// A tile of query rows (a prefill, a chunk, the rest of a prefix-cache hit): the prefill
    /// tile kernels.
    Chunk,
}

/// One cube's work for one KV head: `queries` query rows of sequence `seq` from packed row
/// `first_row` (position `first_pos` on), over keys `kv_start..kv_end` of its context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub kind: ItemKind,
    pub seq: usize,
    pub first_row: usize,
    pub queries: usize,
    pub first_pos: usize,
    pub kv_start: usize,
    pub kv_end: usize,
    /// Writes a partial result (its context is split; a merge combines the parts).
    pub partial: bool,
}

impl WorkItem {
    /// The item as the kernels read it: [`ITEM_FIELDS`] ints.
    pub fn encode(&self) -> [i32; ITEM_FIELDS] {
        [
            self.seq as i32,
            self.first_row as i32,
            self.queries as i32,
            self.first_pos as i32,
            self.kv_start as i32,
            self.kv_end as i32,
            self.partial as i32,
        ]
    }
}
/// Fields of one merge entry in [`AttentionPlan::merges`]: packed query row, first item, items.
pub const MERGE_FIELDS: usize = 3;

const THREADS: usize = 128;
/// The shortest key tile the tiled kernels take.
const MIN_KV_TILE: usize = 8;
/// Query rows per cube in prefill tiles: enough to reuse each loaded key many times.
pub const PREFILL_ROWS: usize = 32;
/// Shortest context range worth its own decode item. Splitting buys GPU parallelism with a
/// merge launch per layer. Measured on the H100 (`results/reference/min_split_ab-h100`): from
/// 256 to 1,024, batch-1 steps over 100–356 keys got faster (no merges), but steps of 1–8
/// sequences over 1,000–2,000 keys slower (the GPU waits on few long cubes).
pub const MIN_SPLIT: usize = 512;

/// The arrays and tile shapes for one step's attention: chunk tiles for the prefill kernels,
/// one-query rows for the decode kernel, and the merges of split decode contexts.
#[derive(Debug, Clone)]
pub struct AttentionPlan {
    /// The tile of `chunk_items`.
    pub tile: TileShape,
    /// `[items, ITEM_FIELDS]` of kind [`ItemKind::Chunk`]: sequence, first packed query row,
    /// queries, position of the first query, first key, end key (exclusive), 0 (never split).
    pub chunk_items: Vec<i32>,
    /// The items of sequences that bring one query ([`ItemKind::Decode`]: decodes, and prompts
    /// whose prefix-cache hit left one token), laid out as `chunk_items`, 1 in the last field
    /// where the item is one piece of a split context. In decode-only and mixed steps alike.
    pub decode_items: Vec<i32>,
    /// The tile of `decode_items`: one query per item.
    pub decode_tile: TileShape,
    /// `[batch, max_blocks]` block tables, padded with 0.
    pub block_tables: Vec<i32>,
    pub max_blocks: usize,
    /// `[merges, MERGE_FIELDS]`: packed query row, first decode item, decode items, for each
    /// decode row whose context was split.
    pub merges: Vec<i32>,
    pub num_tokens: usize,
    pub block_size: usize,
}

impl AttentionPlan {
    pub fn new(
        seqs: &[SeqAttn],
        block_size: usize,
        group: usize,
        head_dim: usize,
        kv_heads: usize,
        caps: DeviceCaps,
    ) -> Self {
        let tile_q = match seqs.iter().all(|s| s.q_len == 1) {
            true => 1,
            false => Self::prefill_tile_q(group, head_dim, caps),
        };
        let tile = Self::tile_shape(group, tile_q, head_dim, caps.max_shared_bytes);
        let decode_tile = Self::tile_shape(group, 1, head_dim, caps.max_shared_bytes);
        // The decode launch runs on its own (after the chunk launch, if any): its rows alone
        // decide how far their contexts split.
        let decode_ctxs: Vec<usize> = seqs
            .iter()
            .filter(|s| s.q_len == 1)
            .map(|s| s.ctx_len)
            .collect();
        let split_len = Self::split_len(&decode_ctxs, kv_heads, caps, decode_tile.kv_tile);
        let max_blocks = seqs
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let mut plan = Self {
            tile,
            chunk_items: Vec::new(),
            decode_items: Vec::new(),
            decode_tile,
            block_tables: vec![0; seqs.len() * max_blocks],
            max_blocks,
            merges: Vec::new(),
            num_tokens: seqs.iter().map(|s| s.q_len).sum(),
            block_size,
        };
        let mut row = 0;
        for (b, s) in seqs.iter().enumerate() {
            assert!(
                s.q_len >= 1 && s.q_len <= s.ctx_len,
                "sequence {b}: {} queries over {} cached tokens",
                s.q_len,
                s.ctx_len
            );
            assert!(
                s.ctx_len <= s.block_table.len() * block_size,
                "sequence {b}: block table too short"
            );
            for (j, &blk) in s.block_table.iter().enumerate() {
                plan.block_tables[b * max_blocks + j] = blk as i32;
            }
            let first_pos = s.ctx_len - s.q_len;
            let kind = match s.q_len {
                1 => ItemKind::Decode,
                _ => ItemKind::Chunk,
            };
            match kind {
                ItemKind::Decode => plan.push_decode(b, row, s.ctx_len, split_len),
                ItemKind::Chunk => {
                    for start in (0..s.q_len).step_by(tile_q) {
                        let count = tile_q.min(s.q_len - start);
                        plan.push(WorkItem {
                            kind,
                            seq: b,
                            first_row: row + start,
                            queries: count,
                            first_pos: first_pos + start,
                            kv_start: 0,
                            kv_end: first_pos + start + count,
                            partial: false,
                        });
                    }
                }
            }
            row += s.q_len;
        }
        plan
    }

    /// The decode items of the one query at packed row `row` over `ctx_len` keys: one item, or
    /// `split_len`-key pieces and the merge entry that combines them.
    fn push_decode(&mut self, seq: usize, row: usize, ctx_len: usize, split_len: usize) {
        let splits = ctx_len.div_ceil(split_len.min(ctx_len));
        if splits > 1 {
            self.merges
                .extend([row as i32, self.num_decode_items() as i32, splits as i32]);
        }
        for split in 0..splits {
            self.push(WorkItem {
                kind: ItemKind::Decode,
                seq,
                first_row: row,
                queries: 1,
                first_pos: ctx_len - 1,
                kv_start: split * split_len,
                kv_end: ((split + 1).saturating_mul(split_len)).min(ctx_len),
                partial: splits > 1,
            });
        }
    }

    /// Files `item` under the launch that runs it: chunk tiles on the prefill kernels, decode
    /// rows on the decode kernel (a prefill tile would spend a cube's whole tile on one row).
    fn push(&mut self, item: WorkItem) {
        let items = match item.kind {
            ItemKind::Decode => &mut self.decode_items,
            ItemKind::Chunk => &mut self.chunk_items,
        };
        items.extend(item.encode());
    }

    /// Every sequence brings one query: one decode launch runs the whole step.
    pub fn decode_only(&self) -> bool {
        self.chunk_items.is_empty()
    }

    pub fn num_chunk_items(&self) -> usize {
        self.chunk_items.len() / ITEM_FIELDS
    }

    pub fn num_decode_items(&self) -> usize {
        self.decode_items.len() / ITEM_FIELDS
    }

    pub fn num_merges(&self) -> usize {
        self.merges.len() / MERGE_FIELDS
    }

    /// Queries per prefill tile: the device's `prefill_rows` of them, halved until the tile's
    /// shared memory fits with the shortest key tile (64 rows of head dim 128 do not fit
    /// lavapipe's 32 KiB, and a tile that does not fit computes garbage without an error).
    fn prefill_tile_q(group: usize, head_dim: usize, caps: DeviceCaps) -> usize {
        let mut rows = caps.prefill_rows.max(group);
        loop {
            let tile_q = (rows / group).max(1);
            let shortest = TileShape {
                group,
                tile_q,
                head_dim,
                kv_tile: MIN_KV_TILE,
                threads: THREADS,
            };
            if tile_q == 1 || shortest.shared_bytes() <= caps.max_shared_bytes {
                return tile_q;
            }
            rows /= 2;
        }
    }

    /// The largest key tile whose shared memory fits the device.
    fn tile_shape(group: usize, tile_q: usize, head_dim: usize, max_shared: usize) -> TileShape {
        let shape = |kv_tile| TileShape {
            group,
            tile_q,
            head_dim,
            kv_tile,
            threads: THREADS,
        };
        [64, 32, 16, MIN_KV_TILE]
            .into_iter()
            .map(shape)
            .find(|t| t.shared_bytes() <= max_shared)
            .unwrap_or_else(|| shape(MIN_KV_TILE))
    }

    /// Context length per decode item: whole contexts (or `max_decode_keys`) when the decode
    /// rows already fill the device, else split so about two cubes per compute unit run.
    fn split_len(ctxs: &[usize], kv_heads: usize, caps: DeviceCaps, kv_tile: usize) -> usize {
        let cubes = ctxs.len() * kv_heads;
        let target = 2 * caps.compute_units;
        let capped = match caps.max_decode_keys {
            usize::MAX => usize::MAX,
            keys => keys.max(MIN_SPLIT).next_multiple_of(kv_tile),
        };
        if cubes >= target {
            return capped;
        }
        let longest = ctxs.iter().copied().max().unwrap_or(1);
        let parts = target.div_ceil(cubes.max(1));
        longest
            .div_ceil(parts)
            .max(MIN_SPLIT)
            .next_multiple_of(kv_tile)
            .min(capped)
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
