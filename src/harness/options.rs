//! How an experiment runs: the command line it records, the Ctrl-C stop flag, and whether a
//! progress bar is drawn.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// How to run: what to record as the command, the stop flag, and whether to draw progress.
pub struct RunOptions {
    pub command: String,
    pub stop: Arc<AtomicBool>,
    pub show_progress: bool,
}

impl RunOptions {
    /// The process's command line, the Ctrl-C flag, and a progress bar on a terminal only.
    pub fn from_env() -> Self {
        RunOptions {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            stop: install_ctrlc(),
            show_progress: std::io::stderr().is_terminal(),
        }
    }
}

/// The process-wide Ctrl-C flag. The first Ctrl-C sets it (the run stops and writes what it
/// has); a second one exits at once. Installed on first use only: `ctrlc` allows one handler.
pub fn install_ctrlc() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if seen.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!(
                "\nstopping: writing what was measured so far (Ctrl-C again to quit at once)"
            );
        });
        if let Err(e) = installed {
            eprintln!(
                "warning: no Ctrl-C handler ({e}); Ctrl-C will end the run without writing results"
            );
        }
        flag
    })
    .clone()
}
