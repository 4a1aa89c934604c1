//! Tests of the attention plan: tiles, splits, merges and item order.
use super::*;

const CAPS: DeviceCaps = DeviceCaps {
    compute_units: 132,
    max_shared_bytes: 48 * 1024,
    prefill_rows: PREFILL_ROWS,
    max_decode_keys: usize::MAX,
    prefix: PrefixCaps::DEFAULT,
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
    assert_eq!(plan.decode_items, vec![1, 40, 1, 6, 0, 7, 0, 0]);
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
    assert_eq!(plan.merges, vec![0, 0, n as i32, 0, 0, 0]);
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
    assert_eq!(plan.merges, vec![7, 0, parts as i32, 0, 0, 0]);
    assert_eq!(decode(&plan, 7 + parts - 1)[5], 2000);
    assert_eq!(decode(&plan, 7)[5], len as i32);
}

/// The pieces of one split decode row, `items` of the decode array, cover `[0, ctx_len)` in
/// order without gaps, each marked partial, in consecutive partial slots.
fn assert_splits_cover(plan: &AttentionPlan, items: std::ops::Range<usize>, ctx_len: i32) {
    let mut next = 0;
    let items_start = items.start;
    for i in items {
        assert_eq!(
            decode(plan, i)[4],
            next,
            "item {i} starts where the last ended"
        );
        assert_eq!(decode(plan, i)[6], 1, "item {i} is partial");
        if i > items_start {
            assert_eq!(
                decode(plan, i)[7],
                decode(plan, i - 1)[7] + 1,
                "item {i}'s slot"
            );
        }
        next = decode(plan, i)[5];
    }
    assert_eq!(next, ctx_len);
}

/// A mixed step's decode rows split their long contexts as a decode-only step's would (the
/// chunk tiles run in their own launch), and the merges point at their partial slots; so does a
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
    assert_eq!(
        plan.merges,
        vec![0, 0, n as i32, 0, 0, 0, 49, n as i32, n as i32, 0, 0, 0]
    );
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

fn prefix_item(plan: &AttentionPlan, i: usize) -> &[i32] {
    &plan.prefix_items[i * ITEM_FIELDS..(i + 1) * ITEM_FIELDS]
}

/// Every partial slot a cascade plan's items write, with the packed row and key range it holds.
fn written_slots(plan: &AttentionPlan) -> Vec<(usize, i32, std::ops::Range<i32>)> {
    let mut slots = Vec::new();
    for i in 0..plan.num_prefix_items() {
        let it = prefix_item(plan, i);
        assert_eq!(it[6], 1, "prefix items write partial results");
        for q in 0..it[2] {
            slots.push(((it[7] + q) as usize, it[1] + q, it[4]..it[5]));
        }
    }
    for i in 0..plan.num_decode_items() {
        let it = decode(plan, i);
        if it[6] == 1 {
            slots.push((it[7] as usize, it[1], it[4]..it[5]));
        }
    }
    slots.sort_by_key(|s| s.0);
    slots
}

/// A shared prefix of 4,096 keys over 64 decode rows (one more row shares nothing): the prefix
/// splits into pieces, every member's row is in one prefix tile per piece, each partial slot is
/// written once, and each member's merge entry names exactly the slots holding its row, which
/// together cover its whole context once.
#[test]
fn cascade_covers_each_members_context_once_through_its_merge() {
    let shared: Vec<u32> = (0..256).collect();
    let tables: Vec<Vec<u32>> = (0..65u32)
        .map(|i| {
            let mut t = match i {
                64 => (1000..1256).collect(),
                _ => shared.clone(),
            };
            t.extend([300 + 2 * i, 301 + 2 * i]);
            t
        })
        .collect();
    let seqs: Vec<SeqAttn> = tables
        .iter()
        .enumerate()
        .map(|(i, t)| SeqAttn {
            q_len: 1,
            ctx_len: 4096 + 1 + i % 20,
            block_table: t,
        })
        .collect();
    let prefixes = [SharedPrefix {
        seqs: (0..64).collect(),
        tokens: 4096,
    }];
    let plan = AttentionPlan::with_prefixes(&seqs, 16, 2, 128, 8, CAPS, &prefixes);
    assert!(!plan.decode_only());
    assert_eq!(plan.cascaded_rows, 64);
    assert_eq!(plan.prefix_tile.tile_q, PREFILL_ROWS / 2);
    let written = written_slots(&plan);
    assert_eq!(
        written.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..plan.slots).collect::<Vec<_>>(),
        "each slot written once"
    );
    let pieces = written.iter().filter(|s| s.1 == 0).count() - 1;
    assert!(pieces > 1, "a 4k prefix over 64 rows splits");
    assert_eq!(plan.num_merges(), 64);
    for entry in plan.merges.chunks(MERGE_FIELDS) {
        let [row, first_a, count_a, first_b, count_b, stride_b] =
            <[i32; MERGE_FIELDS]>::try_from(entry).unwrap();
        assert_eq!((count_b, stride_b), (pieces as i32, 64));
        let named: Vec<i32> = (first_a..first_a + count_a)
            .chain((0..count_b).map(|j| first_b + j * stride_b))
            .collect();
        let mut ranges: Vec<_> = named
            .iter()
            .map(|&slot| {
                let (_, r, keys) = &written[slot as usize];
                assert_eq!(*r, row, "slot {slot} holds row {r}, merged into row {row}");
                keys.clone()
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        let mut next = 0;
        for r in ranges {
            assert_eq!(r.start, next, "row {row}: pieces meet");
            next = r.end;
        }
        assert_eq!(next as usize, seqs[row as usize].ctx_len);
    }
    // The row outside the prefix is one whole decode item.
    let lone: Vec<&[i32]> = (0..plan.num_decode_items())
        .map(|i| decode(&plan, i))
        .filter(|it| it[1] == 64)
        .collect();
    assert_eq!(lone.len(), 1);
    assert_eq!((lone[0][4], lone[0][5], lone[0][6]), (0, 4096 + 1 + 4, 0));
}

/// Prefix tiles take consecutive packed rows only: a group whose rows interleave with another
/// group's, or sit after a chunk, is cut into runs.
#[test]
fn prefix_tiles_hold_consecutive_rows_only() {
    let (a, b): (Vec<u32>, Vec<u32>) = ((0..8).collect(), (10..18).collect());
    let seqs: Vec<SeqAttn> = (0..6)
        .map(|i| SeqAttn {
            q_len: if i == 4 { 9 } else { 1 },
            ctx_len: 100,
            block_table: if i % 2 == 0 { &a } else { &b },
        })
        .collect();
    let prefixes = [
        SharedPrefix {
            seqs: vec![0, 2],
            tokens: 40,
        },
        SharedPrefix {
            seqs: vec![1, 3, 5],
            tokens: 72,
        },
    ];
    let plan = AttentionPlan::with_prefixes(&seqs, 16, 4, 64, 2, CAPS, &prefixes);
    // Rows: 0, 1, 2, 3, then the 9-token chunk (rows 4..13), then row 13.
    let items: Vec<(i32, i32, i32)> = (0..plan.num_prefix_items())
        .map(|i| {
            let it = prefix_item(&plan, i);
            (it[1], it[2], it[5])
        })
        .collect();
    // The 72-key prefix comes in two pieces (half the prefix, rounded up to the 64-key tile):
    // each piece's tiles, then the next piece's.
    assert_eq!(
        items,
        vec![
            (0, 1, 40),
            (2, 1, 40),
            (1, 1, 64),
            (3, 1, 64),
            (13, 1, 64),
            (1, 1, 72),
            (3, 1, 72),
            (13, 1, 72)
        ]
    );
    assert_eq!(plan.cascaded_rows, 5);
    // A prefix that ends mid-block: the suffix items start at key 40 and 72.
    assert!((0..plan.num_decode_items()).all(|i| matches!(decode(&plan, i)[4], 40 | 72)));
}
