//! Ctrl-C and SIGTERM: the first stops the run cleanly (in-flight batches are committed or
//! given up, the run is marked stopped and resumes later); a second one quits at once.

use crate::output::errln;
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit code of a command stopped by Ctrl-C (SIGINT).
pub const EXIT_SIGINT: u8 = 130;
/// Exit code of a command stopped by SIGTERM (what Slurm and Kubernetes send).
pub const EXIT_SIGTERM: u8 = 143;

/// The stop flag of a command and which signal set it.
pub struct Signals {
    /// Set by either signal; the engine stops when it is set.
    pub stop: Arc<AtomicBool>,
    sigterm: Arc<AtomicBool>,
}

impl Signals {
    /// Installs the handlers; `what` says what the first signal stops (printed at once).
    pub fn install(what: &'static str) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let sigterm = Arc::new(AtomicBool::new(false));
        let mut incoming = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let (flag, term) = (stop.clone(), sigterm.clone());
        std::thread::Builder::new()
            .name("distill-signals".into())
            .spawn(move || {
                for signal in incoming.forever() {
                    let code = if signal == SIGTERM {
                        EXIT_SIGTERM
                    } else {
                        EXIT_SIGINT
                    };
                    if flag.load(Ordering::SeqCst) {
                        // The user insists. Everything committed is safe.
                        std::process::exit(i32::from(code));
                    }
                    errln!("stopping: {what} (a second Ctrl-C or SIGTERM quits at once)");
                    if signal == SIGTERM {
                        term.store(true, Ordering::SeqCst);
                    }
                    flag.store(true, Ordering::SeqCst);
                }
            })?;
        Ok(Self { stop, sigterm })
    }

    /// The exit code of a command that stopped on a signal.
    pub fn exit_code(&self) -> u8 {
        if self.sigterm.load(Ordering::SeqCst) {
            EXIT_SIGTERM
        } else {
            EXIT_SIGINT
        }
    }
}
