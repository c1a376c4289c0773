//! The boundary between redb and a damaged file: redb may panic while decoding pages that were
//! overwritten, and a record may not decode. Both become [`Error::Corrupt`], with one message
//! whichever command met the damage; the panic's default report is kept quiet for them only.

use crate::error::{Error, Result};
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Once;

thread_local! {
    /// How many guarded sections this thread is inside.
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

static QUIET_HOOK: Once = Once::new();

/// Installs, once, a panic hook that stays silent inside guarded sections and hands every
/// other panic to the hook that was there before.
fn install_quiet_hook() {
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) == 0 {
                previous(info);
            }
        }));
    });
}

/// Runs `read` on the file at `path`; a panic inside it, or a record that does not decode, is
/// the file's damage.
pub(crate) fn guarded<T>(path: &Path, read: impl FnOnce() -> Result<T>) -> Result<T> {
    install_quiet_hook();
    GUARDED.with(|g| g.set(g.get() + 1));
    let outcome = catch_unwind(AssertUnwindSafe(read));
    GUARDED.with(|g| g.set(g.get() - 1));
    match outcome {
        Ok(result) => result.map_err(|e| as_damage(path, e)),
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a page cannot be read");
            Err(damaged(path, format!("redb failed reading it ({reason})")))
        }
    }
}

/// A record that does not decompress or decode is the file's damage; other errors stay as
/// they are.
pub(crate) fn as_damage(path: &Path, error: Error) -> Error {
    match error {
        // Stored bytes that do not decompress or decode: the file was damaged under us.
        Error::Codec {
            action: "decode" | "decompress",
            what,
            detail,
        } => damaged(path, format!("{what} cannot be read ({detail})")),
        other => other,
    }
}

fn damaged(path: &Path, detail: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    }
}
