//! Tokens grouped by expert (cubecl), once per MoE layer for both expert products: one cube
//! counts each expert's routed slots, lays them out expert by expert, and cuts each expert's
//! run into chunks of at most `rows_per_chunk` rows, the expert kernels' work items.
use cubecl::prelude::*;

/// `ids` `[slots]` (slot = token × top_k + j) -> `counts[e]` (the expert load), `sorted`
/// (the slots of expert 0, then expert 1, ..., each in slot order) and `chunks` `[max_chunks,
/// 3]`: `(expert, first index into sorted, rows)`, rows 0 past the last chunk. `slots` must
/// fit the comptime `max_slots` staged in shared memory.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn group_kernel<I: Int>(
    ids: &Array<I>,
    counts: &mut Array<I>,
    sorted: &mut Array<I>,
    chunks: &mut Array<I>,
    slots: u32,
    max_chunks: u32,
    #[comptime] experts: usize,
    #[comptime] rows_per_chunk: usize,
    #[comptime] max_slots: usize,
) {
    let tid = UNIT_POS_X as usize;
    let threads = CUBE_DIM_X as usize;
    let slots = slots as usize;
    let mut staged = SharedMemory::<u32>::new(max_slots);
    let mut count = SharedMemory::<u32>::new(experts);
    let mut offset = SharedMemory::<u32>::new(experts);
    let mut s = tid;
    while s < slots {
        staged[s] = u32::cast_from(ids[s]);
        s += threads;
    }
    sync_cube();
    let mut e = tid;
    while e < experts {
        let mut n = 0u32;
        for s in 0..slots {
            if staged[s] == e as u32 {
                n += 1;
            }
        }
        count[e] = n;
        counts[e] = I::cast_from(n);
        e += threads;
    }
    sync_cube();
    if tid == 0 {
        let mut start = 0u32;
        let mut c = 0usize;
        for e in 0..experts {
            offset[e] = start;
            let n = count[e];
            let mut r = 0u32;
            while r < n {
                chunks[c * 3] = I::cast_from(e);
                chunks[c * 3 + 1] = I::cast_from(start + r);
                chunks[c * 3 + 2] = I::cast_from(u32::min(rows_per_chunk as u32, n - r));
                c += 1;
                r += rows_per_chunk as u32;
            }
            start += n;
        }
        while c < max_chunks as usize {
            chunks[c * 3] = I::cast_from(0u32);
            chunks[c * 3 + 1] = I::cast_from(0u32);
            chunks[c * 3 + 2] = I::cast_from(0u32);
            c += 1;
        }
    }
    sync_cube();
    let mut e = tid;
    while e < experts {
        let mut at = offset[e] as usize;
        for s in 0..slots {
            if staged[s] == e as u32 {
                sorted[at] = I::cast_from(s);
                at += 1;
            }
        }
        e += threads;
    }
}
