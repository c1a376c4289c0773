//! Faults injected on purpose, for the end-to-end tests of an upload cut off midway. Compiled
//! in only with the `fault-injection` feature; the points armed are named in `DISTILL_FAULT`
//! (comma-separated).

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// An object store upload stops after its first part reached the store, and waits there
    /// (for the test to kill the process); a Hub upload waits before its commit.
    HoldAfterPart,
}

impl Fault {
    #[cfg(feature = "fault-injection")]
    fn name(self) -> &'static str {
        match self {
            Fault::HoldAfterPart => "checkpoint-hold-after-part",
        }
    }

    /// Whether this fault is armed.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn armed(self) -> bool {
        std::env::var("DISTILL_FAULT").is_ok_and(|v| v.split(',').any(|p| p.trim() == self.name()))
    }

    /// Whether this fault is armed (never, in a build without fault injection).
    #[cfg(not(feature = "fault-injection"))]
    pub(crate) fn armed(self) -> bool {
        false
    }

    /// Says so on stderr, then waits for the process to be killed.
    pub(crate) fn hold(self) -> ! {
        eprintln!("fault: {self:?}: the checkpoint upload holds here");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
