//! [`DevOps`]: what the benches and probes ask of a backend beyond the engine's ops. Backends
//! without cubecl report the hooks as unavailable.
use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use cubek::matmul::launch::Strategy;

use crate::attention::device_plan::KernelPlan;
use crate::backends::cube::{cublas_project, CubeBridge};
use crate::dev::host_cost::HostCost;
use crate::KernelBackend;

pub trait DevOps: KernelBackend {
    /// `plan` as this backend's attention takes it, where its attention runs the kernels'
    /// plans (the parity cases and benches build those directly).
    fn step_plan(_plan: KernelPlan<Self>) -> Option<Self::StepPlan> {
        None
    }

    /// `x @ w` through cubek's matmul with `strategy` (`nanovllm kernels matmul`); an error
    /// when the strategy does not take the shapes, or the backend has no cubek.
    fn matmul_with(
        _strategy: &Strategy,
        _x: Tensor<Self, 2>,
        _w: &Tensor<Self, 2>,
    ) -> Result<Tensor<Self, 2>, String> {
        Err("this backend has no cubek matmul".into())
    }

    /// `x @ w` through cuBLAS; `None` where there is no cuBLAS.
    fn cublas_project(_x: Tensor<Self, 2>, _w: &Tensor<Self, 2>) -> Option<Tensor<Self, 2>> {
        None
    }

    /// The MoE grouping kernel's `[counts, sorted slots, chunks]` for expert ids `[tokens,
    /// top_k]`, on the device; `None` where the backend has no such kernel.
    fn moe_group(_ids: Tensor<Self, 2, Int>, _experts: usize) -> Option<[Tensor<Self, 1, Int>; 3]> {
        None
    }

    /// The expert kernels' rows before the per-token sum (`act` `[slots, inter]`, `out`
    /// `[slots, hidden]`; see `moe::launch::expert_rows`), to find which product goes wrong;
    /// why the kernels decline the tensors where they do.
    fn moe_expert_rows(
        _x: Tensor<Self, 2>,
        _routing: &crate::moe::Routing<Self>,
        _w: &crate::moe::ExpertWeights<Self>,
    ) -> Result<[Tensor<Self, 2>; 2], String> {
        Err("this backend has no expert kernels".into())
    }

    /// The host cost of one launch taken apart (see [`crate::dev::launch_cost`]); empty where
    /// the backend launches no kernels.
    fn launch_costs(_device: &Self::Device, _n: usize) -> Vec<(&'static str, HostCost)> {
        Vec::new()
    }
}

impl DevOps for NdArray<f32> {}

impl<B: CubeBridge> DevOps for B {
    fn step_plan(plan: KernelPlan<Self>) -> Option<KernelPlan<Self>> {
        Some(plan)
    }

    fn matmul_with(
        strategy: &Strategy,
        x: Tensor<Self, 2>,
        w: &Tensor<Self, 2>,
    ) -> Result<Tensor<Self, 2>, String> {
        crate::matmul::strategy::matmul_with::<B::R>(
            strategy,
            B::float_in(x),
            B::float_in(w.clone()),
        )
        .map(B::float_out)
        .map_err(|e| format!("{e:?}"))
    }

    fn cublas_project(x: Tensor<Self, 2>, w: &Tensor<Self, 2>) -> Option<Tensor<Self, 2>> {
        cublas_project(x, w)
    }

    fn moe_group(ids: Tensor<Self, 2, Int>, experts: usize) -> Option<[Tensor<Self, 1, Int>; 3]> {
        let g = crate::moe::launch::group::<B::R, B::I>(&B::int_in(ids), experts)?;
        Some([g.counts, g.sorted, g.chunks].map(B::int_out))
    }

    fn moe_expert_rows(
        x: Tensor<Self, 2>,
        routing: &crate::moe::Routing<Self>,
        w: &crate::moe::ExpertWeights<Self>,
    ) -> Result<[Tensor<Self, 2>; 2], String> {
        let ids = B::int_in(routing.experts.clone());
        let grouping = crate::moe::launch::group::<B::R, B::I>(&ids, w.num_experts())
            .ok_or("the grouping declines")?;
        let (gate_up, down) = (B::float_in(w.gate_up.clone()), B::float_in(w.down.clone()));
        let x_in = burn_cubecl::kernel::into_contiguous(B::float_in(x.clone()));
        crate::moe::launch::declines(&x_in, &gate_up, &down, false)?;
        let rows = crate::moe::launch::ExpertRows {
            x: B::float_in(x),
            route_weights: B::float_in(routing.weights.clone()),
            gate_up: &gate_up,
            down: &down,
            split: false,
        };
        let (act, out) = crate::moe::launch::expert_rows::<B::R, B::F, B::I>(rows, &grouping)
            .ok_or("the expert kernels decline")?;
        Ok([act, out].map(B::float_out))
    }

    fn launch_costs(device: &Self::Device, n: usize) -> Vec<(&'static str, HostCost)> {
        let x = B::float_in(Tensor::<Self, 1>::zeros([256], device));
        crate::dev::launch_cost::launch_costs::<B::R, B::F>(&x, n)
    }
}
