//! How an experiment runs: the command line it records, the Ctrl-C stop flag, and whether a
//! progress bar is drawn.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

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

/// A second Ctrl-C within this long of the first only repeats that the run is stopping: two
/// quick presses must not lose the variant being written. Later ones quit at once (a step that
/// never ends, say).
const QUIT_AFTER: Duration = Duration::from_secs(3);

/// What one Ctrl-C does, given when the first one came.
#[derive(Debug, PartialEq, Eq)]
pub enum CtrlC {
    /// The first: stop after the current step and write what was measured.
    Stop,
    /// Soon after the first: keep writing.
    StillStopping,
    /// Long after the first: the run is stuck; exit 130 without writing.
    Quit,
}

/// The action of a Ctrl-C `since_first` after the first one (`None`: this is the first).
pub fn ctrl_c_action(since_first: Option<Duration>) -> CtrlC {
    match since_first {
        None => CtrlC::Stop,
        Some(d) if d < QUIT_AFTER => CtrlC::StillStopping,
        Some(_) => CtrlC::Quit,
    }
}

/// The process-wide Ctrl-C flag. The first Ctrl-C sets it (the run stops after its current step
/// and writes what it has, then exits 130); see [`ctrl_c_action`] for the next ones. Installed on
/// first use only: `ctrlc` allows one handler.
pub fn install_ctrlc() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        let first: Mutex<Option<Instant>> = Mutex::new(None);
        let installed = ctrlc::set_handler(move || {
            let mut first = first.lock().unwrap_or_else(|e| e.into_inner());
            match ctrl_c_action(first.map(|t| t.elapsed())) {
                CtrlC::Stop => {
                    *first = Some(Instant::now());
                    seen.store(true, Ordering::SeqCst);
                    eprintln!("\nstopping after this step: writing what was measured so far");
                }
                CtrlC::StillStopping => eprintln!(
                    "still stopping; Ctrl-C again after {} s quits without writing",
                    QUIT_AFTER.as_secs()
                ),
                CtrlC::Quit => std::process::exit(INTERRUPTED_EXIT),
            }
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

/// The exit status of a run stopped by Ctrl-C (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: i32 = 130;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_second_presses_keep_writing_and_late_ones_quit() {
        assert_eq!(ctrl_c_action(None), CtrlC::Stop);
        assert_eq!(
            ctrl_c_action(Some(Duration::from_millis(100))),
            CtrlC::StillStopping
        );
        assert_eq!(ctrl_c_action(Some(QUIT_AFTER)), CtrlC::Quit);
    }
}
