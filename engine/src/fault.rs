//! Faults injected on purpose, for the end-to-end tests of what the engine does when its own
//! code or its storage fails. Compiled in only with the `fault-injection` feature; the points
//! armed are named in `DISTILL_FAULT` (comma-separated).

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Reads of the request cache fail as an I/O error of the run database.
    CacheRead,
    /// The scheduler panics once a batch is committed (a bug in the engine's own code).
    EnginePanic,
    /// The process aborts right after the first unit of rows copied between a sharded run's
    /// databases is committed (a kill in the middle of a copy).
    CopyKill,
}

impl Fault {
    #[cfg(feature = "fault-injection")]
    fn name(self) -> &'static str {
        match self {
            Fault::CacheRead => "cache-read",
            Fault::EnginePanic => "engine-panic",
            Fault::CopyKill => "copy-kill",
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
}
