//! Calibration capture: the inputs each expert of each sparse layer receives while the
//! uncompressed model runs, kept on the host up to a cap per (layer, expert), for the
//! activation-aware compression fits.
use std::sync::Mutex;

use burn::tensor::Tensor;
use nanovllm_kernels::moe::reference::host_ints;
use nanovllm_kernels::moe::Routing;
use nanovllm_kernels::KernelBackend;

/// Captured rows, `[sparse layer][expert]`, each a flat `[rows, hidden]`.
pub struct ExpertCapture {
    hidden: usize,
    cap: usize,
    /// Maps a decoder layer index to its sparse-layer slot.
    moe_layers: Vec<usize>,
    state: Mutex<CaptureState>,
}

struct CaptureState {
    rows: Vec<Vec<Vec<f32>>>,
    routed: Vec<Vec<usize>>,
}

/// What a capture collected.
pub struct CapturedInputs {
    /// `[sparse layer][expert]` flat `[rows, hidden]`.
    pub rows: Vec<Vec<Vec<f32>>>,
    /// `[sparse layer][expert]` rows routed before the cap.
    pub routed: Vec<Vec<usize>>,
    pub hidden: usize,
}

impl ExpertCapture {
    pub fn new(moe_layers: Vec<usize>, experts: usize, hidden: usize, cap: usize) -> Self {
        let n = moe_layers.len();
        Self {
            hidden,
            cap,
            moe_layers,
            state: Mutex::new(CaptureState {
                rows: vec![vec![Vec::new(); experts]; n],
                routed: vec![vec![0; experts]; n],
            }),
        }
    }

    /// Records layer `layer`'s expert inputs `h` `[tokens, hidden]` as `routing` sends them.
    pub fn record<B: KernelBackend>(&self, layer: usize, h: &Tensor<B, 2>, routing: &Routing<B>) {
        let Some(slot) = self.moe_layers.iter().position(|&l| l == layer) else {
            return;
        };
        let top_k = routing.experts.dims()[1];
        let ids = host_ints(&routing.experts);
        let values: Vec<f32> = h
            .clone()
            .into_data()
            .convert::<f32>()
            .into_vec()
            .expect("f32 data");
        let mut state = self.state.lock().expect("capture lock");
        let CaptureState { rows, routed } = &mut *state;
        for (s, &e) in ids.iter().enumerate() {
            let (t, e) = (s / top_k, e as usize);
            routed[slot][e] += 1;
            let kept = &mut rows[slot][e];
            if kept.len() / self.hidden < self.cap {
                kept.extend_from_slice(&values[t * self.hidden..(t + 1) * self.hidden]);
            }
        }
    }

    /// Whether every (layer, expert) has its cap of rows.
    pub fn full(&self) -> bool {
        let state = self.state.lock().expect("capture lock");
        state
            .rows
            .iter()
            .flatten()
            .all(|r| r.len() / self.hidden >= self.cap)
    }

    pub fn take(self) -> CapturedInputs {
        let state = self.state.into_inner().expect("capture lock");
        CapturedInputs {
            rows: state.rows,
            routed: state.routed,
            hidden: self.hidden,
        }
    }
}
