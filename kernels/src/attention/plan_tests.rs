//! Tests of the attention plan: tiles, splits, merges and item order.
use super::*;

const CAPS: DeviceCaps = DeviceCaps {
    compute_units: 132,
    max_shared_bytes: 48 * 1024,
    prefill_rows: PREFILL_ROWS,
    max_decode_keys: usize::MAX,
};

fn item(plan: &AttentionPlan, i: usize) -> &[i32] {
    &plan.items[i * ITEM_FIELDS..(i + 1) * ITEM_FIELDS]
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
    let rows: Vec<(i32, i32, i32)> = (0..plan.num_items())
        .map(|i| (item(&plan, i)[1], item(&plan, i)[2], item(&plan, i)[3]))
        .collect();
    // 40 queries at positions 60..100 in tiles of 16; the decode at position 6 goes to
    // the decode kernel, over its whole context.
    assert_eq!(rows, vec![(0, 16, 60), (16, 16, 76), (32, 8, 92)]);
    assert_eq!(plan.decode_items, vec![1, 40, 1, 6, 0, 7, 0]);
    assert_eq!(plan.decode_tile.tile_q, 1);
    // Keys end after each tile's last query (causal).
    assert_eq!(item(&plan, 0)[5], 76);
    assert_eq!(item(&plan, 2)[5], 100);
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
    let n = plan.num_items();
    assert!(n > 1, "one long sequence should be split");
    assert_eq!(plan.merges, vec![0, 0, n as i32]);
    // The splits tile [0, 2048) without gaps.
    let mut next = 0;
    for i in 0..n {
        assert_eq!(item(&plan, i)[4], next);
        assert_eq!(item(&plan, i)[6], 1);
        next = item(&plan, i)[5];
    }
    assert_eq!(next, 2048);
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
    assert_eq!(plan.num_items(), 1);
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
    assert_eq!(plan.num_items(), 256);
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
    let len = 600usize.next_multiple_of(plan.tile.kv_tile);
    let parts = 2000usize.div_ceil(len);
    assert_eq!(plan.num_items(), 255 + parts);
    assert_eq!(plan.merges, vec![7, 7, parts as i32]);
    assert_eq!(item(&plan, 7 + parts - 1)[5], 2000);
    assert_eq!(item(&plan, 7)[5], len as i32);
}

#[test]
fn tile_fits_the_shared_memory() {
    for max in [32 * 1024, 48 * 1024] {
        let t = AttentionPlan::tile_shape(4, 8, 128, max);
        assert!(t.shared_bytes() <= max, "{t:?} over {max}");
    }
}
