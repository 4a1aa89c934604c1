//! Tests of the attention plan: tiles, splits, merges and item order.
use super::*;

const CAPS: DeviceCaps = DeviceCaps {
    compute_units: 132,
    max_shared_bytes: 48 * 1024,
    prefill_rows: PREFILL_ROWS,
    max_decode_keys: usize::MAX,
};

fn chunk(plan: &AttentionPlan, i: usize) -> &[i32] {
    &plan.chunk_items[i * ITEM_FIELDS..(i + 1) * ITEM_FIELDS]
}

fn decode(plan: &AttentionPlan, i: usize) -> &[i32] {
    &plan.decode_items[i * ITEM_FIELDS..(i + 1) * ITEM_FIELDS]
}

/// Prefill tiles take the device's 64 rows where the tile fits its shared memory, and
/// halve where it does not (32 KiB, head dim 128) rather than launch a tile that overflows.
#[test]
fn prefill_rows_shrink_to_fit_shared_memory() {
    let table: Vec<u32> = (0..2).collect();
    let seqs = [SeqAttn {
        q_len: 200,
        ctx_len: 200,
        block_table: &table,
    }];
    let rows_at = |max_shared_bytes, head_dim| {
        let caps = DeviceCaps {
            max_shared_bytes,
            prefill_rows: 64,
            ..CAPS
        };
        let plan = AttentionPlan::new(&seqs, 256, 2, head_dim, 8, caps);
        assert!(
            plan.tile.shared_bytes() <= max_shared_bytes,
            "{:?}",
            plan.tile
        );
        plan.tile.rows()
    };
    assert_eq!(rows_at(48 * 1024, 128), 64);
    assert_eq!(rows_at(32 * 1024, 128), 32);
    assert_eq!(rows_at(32 * 1024, 64), 64);
}

#[test]
fn prefill_tiles_cover_every_query_once_in_order() {
    let table: Vec<u32> = (0..8).collect();
    let seqs = [
        SeqAttn {
            q_len: 40,
            ctx_len: 100,
            block_table: &table,
        },
        SeqAttn {
            q_len: 1,
            ctx_len: 7,
            block_table: &table[..1],
        },
    ];
    let plan = AttentionPlan::new(&seqs, 16, 2, 64, 4, CAPS);
    assert_eq!(plan.tile.tile_q, 16);
    let rows: Vec<(i32, i32, i32)> = (0..plan.num_chunk_items())
        .map(|i| (chunk(&plan, i)[1], chunk(&plan, i)[2], chunk(&plan, i)[3]))
        .collect();
    // 40 queries at positions 60..100 in tiles of 16; the decode at position 6 goes to
    // the decode kernel, over its whole context.
    assert_eq!(rows, vec![(0, 16, 60), (16, 16, 76), (32, 8, 92)]);
    assert_eq!(plan.decode_items, vec![1, 40, 1, 6, 0, 7, 0]);
    assert_eq!(plan.decode_tile.tile_q, 1);
    // Keys end after each tile's last query (causal).
    assert_eq!(chunk(&plan, 0)[5], 76);
    assert_eq!(chunk(&plan, 2)[5], 100);
    assert!(!plan.decode_only());
    assert!(plan.merges.is_empty());
    assert_eq!(plan.max_blocks, 8);
    assert_eq!(&plan.block_tables[8..10], &[0, 0]);
}

#[test]
fn small_decode_batches_split_long_contexts_and_merge() {
    let table: Vec<u32> = (0..128).collect();
    let seqs = [SeqAttn {
        q_len: 1,
        ctx_len: 2048,
        block_table: &table,
    }];
    let plan = AttentionPlan::new(&seqs, 16, 4, 128, 8, CAPS);
    assert!(plan.decode_only());
    let n = plan.num_decode_items();
    assert!(n > 1, "one long sequence should be split");
    assert_eq!(plan.merges, vec![0, 0, n as i32]);
    assert_splits_cover(&plan, 0..n, 2048);
}

#[test]
fn contexts_up_to_min_split_are_not_split() {
    let table: Vec<u32> = (0..64).collect();
    let seqs = [SeqAttn {
        q_len: 1,
        ctx_len: MIN_SPLIT,
        block_table: &table,
    }];
    let plan = AttentionPlan::new(&seqs, 16, 2, 128, 8, CAPS);
    assert_eq!(plan.num_decode_items(), 1);
    assert!(plan.merges.is_empty());
}

#[test]
fn large_decode_batches_do_not_split() {
    let table: Vec<u32> = (0..64).collect();
    let seqs = vec![
        SeqAttn {
            q_len: 1,
            ctx_len: 1000,
            block_table: &table
        };
        256
    ];
    let plan = AttentionPlan::new(&seqs, 16, 2, 128, 8, CAPS);
    assert_eq!(plan.num_decode_items(), 256);
    assert_eq!(plan.num_chunk_items(), 0);
    assert!(plan.merges.is_empty());
}

/// With `max_decode_keys`, a full batch's long contexts are cut into items of about that
/// many keys (a multiple of the key tile, at least `MIN_SPLIT`) and merged; short ones not.
#[test]
fn capped_decode_items_split_full_batches() {
    let table: Vec<u32> = (0..64).collect();
    let mut seqs = vec![
        SeqAttn {
            q_len: 1,
            ctx_len: 300,
            block_table: &table
        };
        256
    ];
    seqs[7].ctx_len = 2000;
    let caps = DeviceCaps {
        max_decode_keys: 600,
        ..CAPS
    };
    let plan = AttentionPlan::new(&seqs, 32, 2, 128, 8, caps);
    let len = 600usize.next_multiple_of(plan.decode_tile.kv_tile);
    let parts = 2000usize.div_ceil(len);
    assert_eq!(plan.num_decode_items(), 255 + parts);
    assert_eq!(plan.merges, vec![7, 7, parts as i32]);
    assert_eq!(decode(&plan, 7 + parts - 1)[5], 2000);
    assert_eq!(decode(&plan, 7)[5], len as i32);
}

/// The pieces of one split decode row, `items` of the decode array, cover `[0, ctx_len)` in
/// order without gaps, each marked partial.
fn assert_splits_cover(plan: &AttentionPlan, items: std::ops::Range<usize>, ctx_len: i32) {
    let mut next = 0;
    for i in items {
        assert_eq!(
            decode(plan, i)[4],
            next,
            "item {i} starts where the last ended"
        );
        assert_eq!(decode(plan, i)[6], 1, "item {i} is partial");
        next = decode(plan, i)[5];
    }
    assert_eq!(next, ctx_len);
}

/// A mixed step's decode rows split their long contexts as a decode-only step's would (the
/// chunk tiles run in their own launch), and the merges point into the decode items; so does a
/// prompt whose prefix-cache hit left one token to compute.
#[test]
fn mixed_steps_split_long_decode_rows() {
    let table: Vec<u32> = (0..256).collect();
    let seqs = [
        SeqAttn {
            q_len: 1,
            ctx_len: 3000,
            block_table: &table,
        },
        SeqAttn {
            q_len: 48,
            ctx_len: 4000,
            block_table: &table,
        },
        // A prefix-cache hit: 2,999 cached tokens, the last prompt token to compute.
        SeqAttn {
            q_len: 1,
            ctx_len: 3000,
            block_table: &table,
        },
    ];
    let plan = AttentionPlan::new(&seqs, 16, 4, 128, 8, CAPS);
    let decode_only = AttentionPlan::new(&[seqs[0], seqs[2]], 16, 4, 128, 8, CAPS);
    assert!(!plan.decode_only());
    assert_eq!(plan.decode_items.len(), decode_only.decode_items.len());
    let n = plan.num_decode_items() / 2;
    assert!(n > 1, "a lone long decode row should split");
    assert_eq!(plan.merges, vec![0, 0, n as i32, 49, n as i32, n as i32]);
    assert_splits_cover(&plan, 0..n, 3000);
    assert_splits_cover(&plan, n..2 * n, 3000);
    assert!((0..n).all(|i| decode(&plan, i)[1] == 0 && decode(&plan, n + i)[1] == 49));
    // The chunk's tiles are whole, never partial, and cover its 48 rows from row 1.
    let tiles: Vec<&[i32]> = (0..plan.num_chunk_items())
        .map(|i| chunk(&plan, i))
        .collect();
    assert_eq!(tiles.iter().map(|t| t[2]).sum::<i32>(), 48);
    assert_eq!(tiles[0][1], 1);
    assert!(tiles.iter().all(|t| t[4] == 0 && t[6] == 0));
}

#[test]
fn tile_fits_the_shared_memory() {
    for max in [32 * 1024, 48 * 1024] {
        let t = AttentionPlan::tile_shape(4, 8, 128, max);
        assert!(t.shared_bytes() <= max, "{t:?} over {max}");
    }
}
