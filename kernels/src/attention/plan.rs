//! Host side of paged attention: cuts one step's sequences into work items, one cube each
//! (per KV head), and picks the tile shape. Pure host code; the kernel reads the arrays built here.
//!
//! A work item is a tile of up to `tile_q` consecutive query tokens of one sequence, attending to
//! a range of its keys. A sequence that brings one query (a decode, or a prompt whose
//! prefix-cache hit left one token) is a decode item and runs on the decode kernel, in
//! decode-only and mixed steps alike, where a long context may split over several items
//! (flash-decoding) whose partial results a second kernel merges by log-sum-exp. A sequence that
//! brings more (a prompt, a chunk) runs in tiles of many queries on the prefill kernels.
//! Cascade attention adds prefix items: the decode rows of sequences that share leading blocks
//! attend those keys together in prefill tiles, their suffixes in decode items, and a merge
//! combines the partial results by log-sum-exp.
use super::prefix::SharedPrefix;

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
    /// How cascade attention cuts shared prefixes into work items.
    pub prefix: PrefixCaps,
}

/// Cascade attention's prefix items: `rows` query rows per tile, pieces of at least `min_keys`
/// keys (or half the prefix, if that is less), as many as bring the launch to `cubes_per_unit`
/// cubes per compute unit. Rows other than the prefill tile's need the flash kernel
/// (`device_caps` sets them equal elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixCaps {
    pub rows: usize,
    pub min_keys: usize,
    pub cubes_per_unit: usize,
}

impl PrefixCaps {
    /// Prefill-sized tiles, pieces of 512 keys or more, two cubes per compute unit.
    pub const DEFAULT: Self = Self {
        rows: PREFILL_ROWS,
        min_keys: 512,
        cubes_per_unit: 2,
    };
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

/// Fields of one work item in the plan's item arrays, in order (see [`WorkItem::encode`]).
pub const ITEM_FIELDS: usize = 8;

/// What a work item computes, which decides the kernel that runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// One query row (a decoding sequence): the decode kernel.
    Decode,
    /// A tile of query rows (a prefill, a chunk, the rest of a prefix-cache hit): the prefill
    /// tile kernels.
    Chunk,
    /// One query row each of several decoding sequences over the prefix they share (cascade
    /// attention): the prefill tile kernels, each key loaded once for the whole tile.
    Prefix,
}

/// One cube's work for one KV head: `queries` query rows of sequence `seq` from packed row
/// `first_row` (position `first_pos` on), over keys `kv_start..kv_end` of its context. A prefix
/// item's rows are consecutive decode rows of the sequences sharing `seq`'s leading blocks; its
/// `first_pos` is the prefix's last key, so no causal mask cuts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkItem {
    pub kind: ItemKind,
    pub seq: usize,
    pub first_row: usize,
    pub queries: usize,
    pub first_pos: usize,
    pub kv_start: usize,
    pub kv_end: usize,
    /// Writes partial results (a piece of a split context or of a cascade) for a merge: query
    /// `i` into partial slot `slot + i`. `None`: final results into the output.
    pub slot: Option<usize>,
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
            self.slot.is_some() as i32,
            self.slot.unwrap_or(0) as i32,
        ]
    }
}

/// Fields of one merge entry in [`AttentionPlan::merges`]: packed query row; its first decode
/// piece's slot and pieces (consecutive slots); its first shared-prefix piece's slot, prefix
/// pieces and the slot stride between them (0 pieces where the row has no shared prefix).
pub const MERGE_FIELDS: usize = 6;

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
/// one-query rows for the decode kernel, shared-prefix tiles (cascade), and the merges of
/// partial results.
#[derive(Debug, Clone)]
pub struct AttentionPlan {
    /// The tile of `chunk_items`.
    pub tile: TileShape,
    /// `[items, ITEM_FIELDS]` of kind [`ItemKind::Chunk`]: sequence, first packed query row,
    /// queries, position of the first query, first key, end key (exclusive), 0, 0 (never split).
    pub chunk_items: Vec<i32>,
    /// The items of sequences that bring one query ([`ItemKind::Decode`]: decodes, and prompts
    /// whose prefix-cache hit left one token), laid out as `chunk_items`, with 1 and the partial
    /// slot in the last two fields where the item is one piece of a merged row. In decode-only and
    /// mixed steps alike.
    pub decode_items: Vec<i32>,
    /// The tile of `decode_items`: one query per item.
    pub decode_tile: TileShape,
    /// `[items, ITEM_FIELDS]` of kind [`ItemKind::Prefix`]: cascade attention's shared-prefix
    /// tiles, each writing partial results from its slot on.
    pub prefix_items: Vec<i32>,
    /// The tile of `prefix_items`: the prefill tile.
    pub prefix_tile: TileShape,
    /// `[batch, max_blocks]` block tables, padded with 0.
    pub max_blocks: usize,
    pub block_tables: Vec<i32>,
    /// `[merges, MERGE_FIELDS]`: one entry per query row whose result comes in pieces.
    pub merges: Vec<i32>,
    /// Partial slots the items write (each `[kv_heads, group, head_dim]` sums and `[kv_heads,
    /// group, 2]` max and sum).
    pub slots: usize,
    /// Decode rows that attend a shared prefix once per group (cascade).
    pub cascaded_rows: usize,
    pub num_tokens: usize,
    pub block_size: usize,
}

/// A shared prefix as the plan lays it out: its members' packed rows, and where its pieces'
/// partial results go.
struct PrefixLayout {
    rows: Vec<usize>,
    tokens: usize,
    piece_len: usize,
    pieces: usize,
    first_slot: usize,
}

impl AttentionPlan {
    /// Paged attention: every sequence over its own block table.
    pub fn new(
        seqs: &[SeqAttn],
        block_size: usize,
        group: usize,
        head_dim: usize,
        kv_heads: usize,
        caps: DeviceCaps,
    ) -> Self {
        Self::with_prefixes(seqs, block_size, group, head_dim, kv_heads, caps, &[])
    }

    /// Cascade attention: the decode rows of each of `prefixes` attend its shared keys in
    /// prefix tiles (each key loaded once per tile of rows, not once per row), their own
    /// suffixes in decode items, and a merge combines the two.
    pub fn with_prefixes(
        seqs: &[SeqAttn],
        block_size: usize,
        group: usize,
        head_dim: usize,
        kv_heads: usize,
        caps: DeviceCaps,
        prefixes: &[SharedPrefix],
    ) -> Self {
        let prefill_tile_q = Self::prefill_tile_q(group, head_dim, caps);
        let tile_q = match seqs.iter().all(|s| s.q_len == 1) {
            true => 1,
            false => prefill_tile_q,
        };
        let tile = Self::tile_shape(group, tile_q, head_dim, caps.max_shared_bytes);
        let decode_tile = Self::tile_shape(group, 1, head_dim, caps.max_shared_bytes);
        // Prefix tiles of their own height run on the flash kernel, which keeps only key tiles
        // in shared memory and takes whole planes of 16 rows; else prefill tiles.
        let q = caps.prefix.rows / group;
        let own_rows =
            caps.prefix.rows != caps.prefill_rows && q >= 1 && (q * group).is_multiple_of(16);
        let prefix_tile_q = if own_rows { q } else { prefill_tile_q };
        let prefix_tile = Self::tile_shape(group, prefix_tile_q, head_dim, caps.max_shared_bytes);
        let rows_of: Vec<usize> = seqs
            .iter()
            .scan(0, |row, s| {
                let first = *row;
                *row += s.q_len;
                Some(first)
            })
            .collect();
        let mut prefix_of = vec![None; seqs.len()];
        for (g, p) in prefixes.iter().enumerate() {
            for (m, &b) in p.seqs.iter().enumerate() {
                let s = &seqs[b];
                assert!(
                    s.q_len == 1 && p.tokens >= 1 && p.tokens < s.ctx_len,
                    "sequence {b}: a cascade member brings one query and keeps keys past the prefix"
                );
                assert!(prefix_of[b].is_none(), "sequence {b} is in two prefixes");
                prefix_of[b] = Some((g, m));
            }
        }
        // The decode launch runs on its own (after the chunk launch, if any): its rows alone
        // decide how far their contexts split. A cascaded row's context there is its suffix.
        let decode_ctxs: Vec<usize> = seqs
            .iter()
            .zip(&prefix_of)
            .filter(|(s, _)| s.q_len == 1)
            .map(|(s, p)| s.ctx_len - p.map_or(0, |(g, _)| prefixes[g].tokens))
            .collect();
        let split_len = Self::split_len(&decode_ctxs, kv_heads, caps, decode_tile.kv_tile);
        let layouts = Self::prefix_layouts(prefixes, &rows_of, kv_heads, caps, prefix_tile);
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
            prefix_items: Vec::new(),
            prefix_tile,
            block_tables: vec![0; seqs.len() * max_blocks],
            max_blocks,
            merges: Vec::new(),
            slots: layouts
                .last()
                .map_or(0, |l| l.first_slot + l.pieces * l.rows.len()),
            cascaded_rows: prefix_of.iter().flatten().count(),
            num_tokens: seqs.iter().map(|s| s.q_len).sum(),
            block_size,
        };
        for (g, layout) in layouts.iter().enumerate() {
            plan.push_prefix(prefixes[g].seqs[0], layout);
        }
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
            let row = rows_of[b];
            let first_pos = s.ctx_len - s.q_len;
            let kind = match s.q_len {
                1 => ItemKind::Decode,
                _ => ItemKind::Chunk,
            };
            match (kind, prefix_of[b]) {
                (ItemKind::Decode, None) => plan.push_decode(b, row, 0, s.ctx_len, split_len, None),
                (ItemKind::Decode, Some((g, m))) => {
                    let layout = &layouts[g];
                    let prefix = [layout.first_slot + m, layout.pieces, layout.rows.len()];
                    plan.push_decode(b, row, layout.tokens, s.ctx_len, split_len, Some(prefix));
                }
                _ => {
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
                            slot: None,
                        });
                    }
                }
            }
        }
        plan
    }

    /// Each shared prefix's piece length and partial slots: pieces of at least
    /// `caps.prefix.min_keys` keys (half the prefix where that is less: a short prefix still
    /// spreads over two pieces), as many as bring the prefix launch to
    /// `caps.prefix.cubes_per_unit` cubes per compute unit; slot `first_slot + piece * members +
    /// member`.
    fn prefix_layouts(
        prefixes: &[SharedPrefix],
        rows_of: &[usize],
        kv_heads: usize,
        caps: DeviceCaps,
        tile: TileShape,
    ) -> Vec<PrefixLayout> {
        let tiles: usize = prefixes
            .iter()
            .map(|p| p.seqs.len().div_ceil(tile.tile_q))
            .sum();
        let parts =
            (caps.prefix.cubes_per_unit * caps.compute_units).div_ceil((tiles * kv_heads).max(1));
        let mut next_slot = 0;
        prefixes
            .iter()
            .map(|p| {
                let piece_len = p
                    .tokens
                    .div_ceil(parts)
                    .max(caps.prefix.min_keys.min(p.tokens / 2))
                    .next_multiple_of(tile.kv_tile);
                let pieces = p.tokens.div_ceil(piece_len);
                let layout = PrefixLayout {
                    rows: p.seqs.iter().map(|&b| rows_of[b]).collect(),
                    tokens: p.tokens,
                    piece_len,
                    pieces,
                    first_slot: next_slot,
                };
                next_slot += pieces * p.seqs.len();
                layout
            })
            .collect()
    }

    /// The prefix tiles of one shared prefix: for each piece of its keys, its members' rows in
    /// tiles of consecutive rows (`seq`'s block table holds the shared blocks).
    fn push_prefix(&mut self, seq: usize, layout: &PrefixLayout) {
        let members = layout.rows.len();
        for piece in 0..layout.pieces {
            let kv_start = piece * layout.piece_len;
            let kv_end = (kv_start + layout.piece_len).min(layout.tokens);
            let mut m = 0;
            while m < members {
                let mut count = 1;
                while m + count < members
                    && count < self.prefix_tile.tile_q
                    && layout.rows[m + count] == layout.rows[m] + count
                {
                    count += 1;
                }
                self.push(WorkItem {
                    kind: ItemKind::Prefix,
                    seq,
                    first_row: layout.rows[m],
                    queries: count,
                    first_pos: kv_end - 1,
                    kv_start,
                    kv_end,
                    slot: Some(layout.first_slot + piece * members + m),
                });
                m += count;
            }
        }
    }

    /// The decode items of the one query at packed row `row` over keys `kv_start..ctx_len`: one
    /// item, or `split_len`-key pieces, and the merge entry that combines its pieces with its
    /// shared-prefix pieces (`prefix`: first slot, pieces, slot stride) where it has them.
    fn push_decode(
        &mut self,
        seq: usize,
        row: usize,
        kv_start: usize,
        ctx_len: usize,
        split_len: usize,
        prefix: Option<[usize; 3]>,
    ) {
        let len = ctx_len - kv_start;
        let splits = len.div_ceil(split_len.min(len));
        let merged = splits > 1 || prefix.is_some();
        let first_slot = self.slots;
        if merged {
            let [first_b, count_b, stride_b] = prefix.unwrap_or([0; 3]);
            self.merges
                .extend([row, first_slot, splits, first_b, count_b, stride_b].map(|x| x as i32));
            self.slots += splits;
        }
        for split in 0..splits {
            self.push(WorkItem {
                kind: ItemKind::Decode,
                seq,
                first_row: row,
                queries: 1,
                first_pos: ctx_len - 1,
                kv_start: kv_start + split * split_len,
                kv_end: kv_start
                    .saturating_add((split + 1).saturating_mul(split_len))
                    .min(ctx_len),
                slot: merged.then_some(first_slot + split),
            });
        }
    }

    /// Files `item` under the launch that runs it: chunk and prefix tiles on the prefill
    /// kernels, decode rows on the decode kernel (a prefill tile would spend a cube's whole tile
    /// on one row).
    fn push(&mut self, item: WorkItem) {
        let items = match item.kind {
            ItemKind::Decode => &mut self.decode_items,
            ItemKind::Chunk => &mut self.chunk_items,
            ItemKind::Prefix => &mut self.prefix_items,
        };
        items.extend(item.encode());
    }

    /// Every sequence brings one query and none shares a prefix: one decode launch runs the
    /// whole step.
    pub fn decode_only(&self) -> bool {
        self.chunk_items.is_empty() && self.prefix_items.is_empty()
    }

    pub fn num_chunk_items(&self) -> usize {
        self.chunk_items.len() / ITEM_FIELDS
    }

    pub fn num_decode_items(&self) -> usize {
        self.decode_items.len() / ITEM_FIELDS
    }

    pub fn num_prefix_items(&self) -> usize {
        self.prefix_items.len() / ITEM_FIELDS
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
