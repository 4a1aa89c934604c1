//! The kernels against their plain-burn references on wgpu in f32 (lavapipe in CI), on seeded
//! random inputs: fixed seeds, so a failure reruns as it failed. The same cases run on CUDA in
//! bf16 via `nanovllm kernels check` (fresh seeds each run there).
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use nanovllm_kernels::dev::parity::{run_case, standard_cases};
use nanovllm_kernels::moe::launch::ROWS_PER_CHUNK;

type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

#[test]
fn attention_kernel_matches_reference_in_f32() {
    let seed = 20_261_202;
    let device = WgpuDevice::default();
    let (mut split_seen, mut mixed_split_seen, mut cascade_seen) = (false, false, 0);
    for case in standard_cases() {
        let r = run_case::<Wgpu>(&case, seed, &device);
        println!("{:<36} rel err {:.2e} (seed {seed})", r.name, r.rel_err);
        assert!(
            r.rel_err <= 1e-4,
            "{}: rel err {} (seed {seed})",
            r.name,
            r.rel_err
        );
        assert!(
            r.max_abs_ref > 0.01,
            "{}: reference output is all zeros",
            r.name
        );
        split_seen |= r.split;
        mixed_split_seen |= r.split && r.name.contains("mixed");
        cascade_seen += r.cascade as usize;
    }
    assert_eq!(cascade_seen, 5, "the cascade cases planned shared prefixes");
    assert!(split_seen, "no case exercised the split-context merge");
    assert!(
        mixed_split_seen,
        "no mixed step split a decode row's context"
    );
}

#[test]
fn device_sampling_matches_host_twin_and_softmax() {
    let seed = 31;
    let r = nanovllm_kernels::dev::parity::run_sampling::<Wgpu>(seed, &WgpuDevice::default());
    println!("{r:?} (seed {seed})");
    assert_eq!(r.greedy_mismatches, 0, "greedy must be exact (seed {seed})");
    // A mismatch needs two noised scores within ln's rounding: allow one in 32 rows.
    assert!(r.sampled_mismatches <= 1, "{r:?} (seed {seed})");
    // 4,000 draws at p = 2/3 vs 1/3: the ratio's standard error is about 0.08.
    assert!(
        (r.two_to_one_ratio - 2.0).abs() < 0.3,
        "{r:?} (seed {seed})"
    );
}

/// A step's int arrays travel in one upload and come out as views of it, not copies (burn's
/// own slice copied every section whose end broke the buffer's alignment), reading back exact.
#[test]
fn packed_int_sections_are_views_of_one_upload() {
    use nanovllm_kernels::PackedInts;
    let device = WgpuDevice::default();
    let mut packed = PackedInts::default();
    let arrays: [Vec<i32>; 3] = [vec![5, -1, 9], (0..70).collect(), vec![42]];
    let sections = arrays.clone().map(|a| packed.push(a));
    let uploaded = packed.upload::<Wgpu>(&device);
    for (i, (section, want)) in sections.into_iter().zip(arrays).enumerate() {
        let got = uploaded.get(section);
        let view = got.clone().into_primitive();
        // Sections start at 64-int (256-byte) multiples: 0, 64 and 192 ints here.
        let start = [0, 256, 768][i];
        assert_eq!(view.handle.offset_start.unwrap_or(0), start, "section {i}");
        assert!(view.handle.offset_end.is_some(), "section {i} was copied");
        let got: Vec<i32> = got.into_data().to_vec().unwrap();
        assert_eq!(got, want, "section {i}");
    }
}

/// Sampled ids read back through a copy queued at once come back exact, with more work queued
/// behind the copy before the wait (as the engine queues the next step).
#[test]
fn ids_read_later_come_back_exact() {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor};
    use nanovllm_kernels::KernelBackend;
    let device = WgpuDevice::default();
    Wgpu::seed(&device, 3);
    let logits = Tensor::<Wgpu, 2>::random([5, 300], Distribution::Default, &device);
    let want: Vec<u32> = logits
        .clone()
        .argmax(1)
        .into_data()
        .to_vec::<i32>()
        .unwrap()
        .into_iter()
        .map(|t| t as u32)
        .collect();
    let pending = Wgpu::read_ids_later(logits.clone().argmax(1).flatten(0, 1));
    let behind = logits.exp().sum();
    assert_eq!(pending.wait().unwrap(), want);
    assert!(behind.into_scalar() > 0.0);
}

/// The fused decode launch (q/k norm + rotary, K/V into the caches, attention) matches the
/// two launches it replaces, output and caches, split contexts included.
#[test]
fn fused_decode_matches_the_two_launches() {
    let results = nanovllm_kernels::dev::parity::run_decode_qkv::<Wgpu>(5, &WgpuDevice::default());
    for r in &results {
        println!("{r:?}");
        assert!(
            r.out_err <= 1e-4,
            "{}: output rel err {}",
            r.name,
            r.out_err
        );
        assert!(
            r.cache_err <= 1e-4,
            "{}: cache rel err {}",
            r.name,
            r.cache_err
        );
    }
    assert!(results.iter().any(|r| r.split), "no case split a context");
}

#[test]
fn store_kv_writes_each_token_to_its_slot_in_place() {
    let err = nanovllm_kernels::dev::parity::run_store_kv::<Wgpu>(7, &WgpuDevice::default());
    assert_eq!(err, 0.0, "store_kv must copy values exactly");
}

/// The plain-burn defaults every backend inherits (the CPU engine runs them) against the same
/// host arithmetic: the layer ops, and `store_kv` as a scatter. ndarray has no fused gemv.
#[test]
fn plain_burn_defaults_match_host_arithmetic() {
    use burn::backend::NdArray;
    let device = Default::default();
    let r = nanovllm_kernels::dev::parity::run_layers::<NdArray<f32>>(13, &device);
    println!("{r:?}");
    for (name, err) in [
        ("rms_norm", r.rms_norm),
        ("add_rms_norm", r.add_rms_norm),
        ("qk_norm_rope", r.qk_norm_rope),
        ("rope_without_norm", r.rope_without_norm),
        ("rope_into_cache", r.rope_into_cache),
        ("silu_mul", r.silu_mul),
        ("project", r.project),
    ] {
        assert!(err <= 1e-5, "{name}: rel err {err}");
    }
    assert!(r.fused_project.is_infinite(), "ndarray has no fused gemv");
    let err = nanovllm_kernels::dev::parity::run_store_kv::<NdArray<f32>>(7, &device);
    assert_eq!(err, 0.0, "the default store_kv must copy values exactly");
}

/// NaN in an output is a failure, not a zero error.
#[test]
fn errors_propagate_nan() {
    use nanovllm_kernels::dev::parity::{nan_max, worst};
    assert!(worst([0.1, f32::NAN, 0.2]).is_nan());
    assert!(nan_max(f32::NAN, 1.0).is_nan() && nan_max(1.0, f32::NAN).is_nan());
    assert_eq!(worst([0.1, 0.3, 0.2]), 0.3);
}

#[test]
fn fused_layer_kernels_match_host_arithmetic() {
    let r = nanovllm_kernels::dev::parity::run_layers::<Wgpu>(11, &WgpuDevice::default());
    println!("{r:?}");
    for (name, err) in [
        ("rms_norm", r.rms_norm),
        ("add_rms_norm", r.add_rms_norm),
        ("qk_norm_rope", r.qk_norm_rope),
        ("rope_without_norm", r.rope_without_norm),
        ("rope_into_cache", r.rope_into_cache),
        ("silu_mul", r.silu_mul),
        ("project", r.project),
        ("fused_project", r.fused_project),
    ] {
        assert!(err <= 1e-4, "{name}: rel err {err}");
    }
}

/// The step's token ids gathered in one launch equal the host's gather: rows from the previous
/// step's sampled ids and from the known ids, in any order, with repeats, and with no known ids
/// (a batch that only shrank); burn's cat + select (the CPU engine's path) agrees.
#[test]
fn fed_ids_gather_sampled_and_known_rows() {
    use burn::tensor::{Int, Tensor, TensorData};
    use nanovllm_kernels::step_io::feed_ids::feed_ids_reference;
    use nanovllm_kernels::KernelBackend;
    let device = WgpuDevice::default();
    let ints = |v: &[i32]| Tensor::<Wgpu, 1, Int>::from_data(TensorData::from(v), &device);
    let sampled = [101, 102, 103, 104, 105];
    let cases: [(&[i32], &[i32]); 3] = [
        (&[7, 8, 9], &[5, 0, 6, 4, 7, 2, 2]),
        (&[], &[3, 0, 4, 1]),
        (&[42], &[5]),
    ];
    for (known, order) in cases {
        let all: Vec<i32> = sampled.iter().chain(known).copied().collect();
        let want: Vec<i32> = order.iter().map(|&o| all[o as usize]).collect();
        let got = Wgpu::feed_ids(&ints(&sampled), ints(known), ints(order));
        assert_eq!(
            got.into_data().to_vec::<i32>().unwrap(),
            want,
            "{known:?} {order:?}"
        );
        let reference = feed_ids_reference(&ints(&sampled), ints(known), ints(order));
        assert_eq!(reference.into_data().to_vec::<i32>().unwrap(), want);
    }
}

/// The MoE kernels on random routings: the router against host softmax + top-k, the grouping
/// against the host's, the expert products (gemv-class kernels) against the plain-burn
/// reference; and the reference itself on ndarray against the same router arithmetic.
#[test]
fn moe_kernels_match_references() {
    // Every case within a chunk's rows runs the expert kernels, whatever the engine's default.
    let tuning = nanovllm_kernels::tuning::KernelTuning {
        moe_kernel_max_rows: ROWS_PER_CHUNK,
        ..Default::default()
    };
    <Wgpu as nanovllm_kernels::KernelBackend>::install_tuning(&WgpuDevice::default(), tuning);
    for (name, r) in [
        (
            "wgpu",
            nanovllm_kernels::dev::parity::run_moe::<Wgpu>(
                17,
                ROWS_PER_CHUNK,
                &WgpuDevice::default(),
            ),
        ),
        (
            "ndarray",
            nanovllm_kernels::dev::parity::run_moe::<burn::backend::NdArray<f32>>(
                17,
                ROWS_PER_CHUNK,
                &Default::default(),
            ),
        ),
    ] {
        println!("{name}: {r:?}");
        assert_eq!(r.route_mismatches, 0, "{name}: {r:?}");
        assert!(r.route_weights <= 1e-5, "{name}: {r:?}");
        assert!(r.experts <= 1e-4, "{name}: {r:?}");
        assert!(r.reference <= 1e-4, "{name}: {r:?}");
        assert!(r.padded <= 1e-4 && r.padded_cases >= 1, "{name}: {r:?}");
        assert!(r.sorted <= 1e-4, "{name}: {r:?}");
        assert!(r.crowded_cases > 0 && r.idle_cases > 0, "{name}: {r:?}");
        match name {
            "wgpu" => assert_eq!(r.group_mismatches, Some(0), "{r:?}"),
            _ => assert_eq!(r.group_mismatches, None, "ndarray has no grouping kernel"),
        }
    }
}

/// Compressed experts (shared bases, per-expert factors) against the dense experts they stand
/// for, through the backend's projections: wgpu's kernels and ndarray's reference.
#[test]
fn factored_experts_match_the_dense_experts_they_stand_for() {
    let (wgpu, cases) =
        nanovllm_kernels::dev::parity::run_factored::<Wgpu>(23, &WgpuDevice::default());
    println!("wgpu: {cases:?}");
    assert!(wgpu <= 1e-4, "wgpu: {cases:?}");
    let (cpu, cases) = nanovllm_kernels::dev::parity::run_factored::<burn::backend::NdArray<f32>>(
        23,
        &Default::default(),
    );
    println!("ndarray: {cases:?}");
    assert!(cpu <= 1e-4, "ndarray: {cases:?}");
}
