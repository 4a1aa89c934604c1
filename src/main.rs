use clap::Parser;
use nanovllm::backend::dispatch;
use nanovllm::cli::{Cli, Command};
use nanovllm::commands::Info;
use nanovllm::harness::{Interrupted, INTERRUPTED_EXIT};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // NVLink multicast (NVLS) off for tensor parallelism's NCCL groups unless asked for: set
    // here, before any thread, as NCCL reads it when a communicator is made.
    #[cfg(feature = "cuda")]
    if std::env::var_os("NCCL_NVLS_ENABLE").is_none() {
        std::env::set_var("NCCL_NVLS_ENABLE", "0");
    }
    nanovllm::backend::install_device_panic_hook();
    #[cfg(feature = "cuda")]
    let trace = nanovllm_kernels::dev::gpu_trace::GpuTrace::from_env()?;
    let result = run(cli);
    #[cfg(feature = "cuda")]
    if let Some(trace) = trace {
        trace.finish()?;
    }
    // An interrupted run wrote what it had; its own status tells it from a complete (0) or
    // failed (1) one.
    if let Err(e) = &result {
        if e.downcast_ref::<Interrupted>().is_some() {
            eprintln!("{e:#}");
            std::process::exit(INTERRUPTED_EXIT);
        }
    }
    result
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match (cli.command, cli.experiment) {
        (Some(Command::Generate(args)), _) => dispatch(args.model.backend.placement(), args),
        (Some(Command::Perplexity(args)), _) => {
            dispatch(args.model.backend.placement(), args).map(|_| ())
        }
        (Some(Command::Report { dir }), _) => nanovllm::harness::regenerate_report(&dir),
        (Some(Command::Compress { experiment, force }), _) => {
            nanovllm::experiment::compress(&experiment, force)
        }
        (Some(Command::Info(args)), _) => {
            dispatch(args.backend.placement(), Info { model: args.model })
        }
        (Some(Command::Kernels(args)), _) => dispatch(args.backend().placement(), args),
        (Some(Command::StepBench(args)), _) => dispatch(args.model.backend.placement(), args),
        (None, Some(path)) => nanovllm::experiment::run(&path, &cli.results_dir)
            .map(|dir| println!("results in {}", dir.display())),
        (None, None) => {
            eprintln!("usage: nanovllm <experiment.toml> | nanovllm --help");
            std::process::exit(2)
        }
    }
}
