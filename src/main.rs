use clap::Parser;
use nanovllm::backend::dispatch;
use nanovllm::cli::{Cli, Command};
use nanovllm::commands::Info;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    nanovllm::backend::install_device_panic_hook();
    #[cfg(feature = "cuda")]
    let trace = nanovllm_kernels::dev::gpu_trace::GpuTrace::from_env()?;
    let result = run(cli);
    #[cfg(feature = "cuda")]
    if let Some(trace) = trace {
        trace.finish()?;
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
