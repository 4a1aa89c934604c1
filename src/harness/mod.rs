//! The research harness around the engine: workloads with arrival times (`workload`), the
//! arrival-timed run loop (`run_loop`) over the [`StepEngine`] port, per-request metrics
//! (`metrics`), the CSVs (`csv_out`), `summary.csv` (`summary`, polars), plots (`plots`,
//! `charts`), a MoE model's routing imbalance (`routing`), output quality on held-out ids
//! (`quality`) and `report.md` (`report`), all
//! rendered from the CSVs by [`regenerate_report`].
//! `run` ties them together in [`run_experiment`].
pub mod charts;
pub mod csv_out;
pub mod engine_port;
pub mod host;
pub mod metrics;
pub mod options;
pub mod plots;
pub mod prompts_file;
pub mod python_random;
pub mod quality;
pub mod quality_report;
pub mod render;
pub mod report;
pub mod resolved;
pub mod routing;
pub mod run;
pub mod run_loop;
pub mod summary;
pub mod timeline_chart;
pub mod workload;

#[cfg(test)]
mod tests;

pub use engine_port::{EngineInfo, StepEngine};
pub use options::{install_ctrlc, RunOptions, INTERRUPTED_EXIT};
pub use render::regenerate_report;
pub use run::{run_experiment, run_experiment_with, EngineFactory, Interrupted};
pub use run_loop::{Clock, WallClock};
pub use workload::{GenRequest, WorkloadError};
