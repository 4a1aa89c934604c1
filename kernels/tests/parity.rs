//! The attention kernel against its plain-burn reference on wgpu in f32 (lavapipe in CI), on
//! fresh random inputs each run. The same cases run on CUDA in bf16 via `nanovllm kernels-check`.
use burn::backend::wgpu::{CubeBackend, WgpuDevice, WgpuRuntime};
use nanovllm_kernels::parity::{run_case, standard_cases};

type Wgpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

#[test]
fn attention_kernel_matches_reference_in_f32() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let device = WgpuDevice::default();
    let mut split_seen = false;
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
    }
    assert!(split_seen, "no case exercised the split-context merge");
}

#[test]
fn device_sampling_matches_host_twin_and_softmax() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let r = nanovllm_kernels::parity::run_sampling::<Wgpu>(seed, &WgpuDevice::default());
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

/// Flushing cubecl's task queue between launches loses and reorders none of them: a chain of
/// dependent element-wise ops, flushed after each, reads back exact (2v - 1, twenty times).
/// And it hands queued work over by itself.
#[test]
fn flushing_the_device_queue_keeps_every_launch_in_order() {
    let device = WgpuDevice::default();
    let mut x = burn::tensor::Tensor::<Wgpu, 1>::from_floats([1.0, 2.0, 3.0], &device);
    for _ in 0..20 {
        x = x * 2.0 - 1.0;
        nanovllm_kernels::cube_backend::flush_device_queue::<WgpuRuntime>(&device);
    }
    let got: Vec<f32> = x.into_data().to_vec().unwrap();
    assert_eq!(got, [1.0, 1.0 + (1 << 20) as f32, 1.0 + (1 << 21) as f32]);

    // And a flush hands a lone queued task over without any blocking call after it (cubecl
    // would otherwise wait for 31 more): the task runs within the device thread's sleep step.
    use cubecl::device::Device as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ran = std::sync::Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    type Server = <WgpuRuntime as cubecl::Runtime>::Server;
    cubecl::device_handle::DeviceHandle::<Server>::new(device.to_id())
        .submit(move |_| flag.store(true, Ordering::SeqCst));
    nanovllm_kernels::cube_backend::flush_device_queue::<WgpuRuntime>(&device);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !ran.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
    assert!(
        ran.load(Ordering::SeqCst),
        "a flushed task did not run within 5 s"
    );
}

#[test]
fn store_kv_writes_each_token_to_its_slot_in_place() {
    let err = nanovllm_kernels::parity::run_store_kv::<Wgpu>(7, &WgpuDevice::default());
    assert_eq!(err, 0.0, "store_kv must copy values exactly");
}

#[test]
fn fused_layer_kernels_match_host_arithmetic() {
    let r = nanovllm_kernels::parity::run_layers::<Wgpu>(11, &WgpuDevice::default());
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
