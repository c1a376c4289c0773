//! The step lifecycle as an explicit, thread-safe state machine.
//!
//! ```text
//!   Unloaded --load()--> Loading --ok--> Loaded --unload()--> Unloaded
//!                           \--error--> Unloaded (the error is returned)
//! ```
//! A second `load()` of a loaded (or loading) step is [`Error::AlreadyLoaded`], unless the step
//! declares its load idempotent, in which case it waits for the first load and is a no-op.
//! [`LoadGuard`] unloads on drop, so an error or a panic never leaves a step loaded.
//!
//! A run takes each step with [`StepSlot::acquire`]: a step loaded before the run (by hand,
//! in a notebook) is used as it is, and stays loaded after the run; its owner's guard
//! unloads it. A step the run loaded is unloaded when its stage ends, whatever happens.

use crate::error::{Error, Result};
use crate::step::StepKind;
use distill_storage::StepState;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Where a step's resources are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadState {
    /// Nothing acquired.
    Unloaded,
    /// `load()` is running.
    Loading,
    /// Resources acquired.
    Loaded,
}

/// Told of every lifecycle transition (the run persists them in the log).
pub type Listener = Arc<dyn Fn(&str, StepState) + Send + Sync>;

/// A built step, its lifecycle state, and who to tell when it changes.
pub struct StepSlot {
    name: String,
    step: RwLock<StepKind>,
    state: Mutex<LoadState>,
    changed: Condvar,
    listener: Mutex<Option<Listener>>,
}

impl StepSlot {
    /// Wraps a built step, unloaded.
    pub fn new(name: &str, step: StepKind) -> Self {
        Self {
            name: name.to_owned(),
            step: RwLock::new(step),
            state: Mutex::new(LoadState::Unloaded),
            changed: Condvar::new(),
            listener: Mutex::new(None),
        }
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current lifecycle state.
    pub fn state(&self) -> LoadState {
        *self.lock_state()
    }

    /// Sets who is told of transitions.
    pub fn set_listener(&self, listener: Option<Listener>) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = listener;
    }

    fn tell(&self, state: StepState) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(listener) = listener {
            listener(&self.name, state);
        }
    }

    fn lock_state(&self) -> MutexGuard<'_, LoadState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Shared access to the step, for processing.
    pub fn read(&self) -> RwLockReadGuard<'_, StepKind> {
        self.step.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access to the step (generators, load, unload).
    pub fn write(&self) -> RwLockWriteGuard<'_, StepKind> {
        self.step.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the step. See the module doc for a second load.
    pub fn load(self: &Arc<Self>) -> Result<LoadGuard> {
        let idempotent = self.read().load_is_idempotent();
        {
            let mut state = self.lock_state();
            match *state {
                LoadState::Unloaded => *state = LoadState::Loading,
                _ if idempotent => {
                    while *state == LoadState::Loading {
                        state = self.changed.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                    if *state == LoadState::Loaded {
                        return Ok(LoadGuard {
                            slot: self.clone(),
                            owner: false,
                        });
                    }
                    *state = LoadState::Loading;
                }
                _ => {
                    return Err(Error::AlreadyLoaded {
                        step: self.name.clone(),
                    });
                }
            }
        }
        self.tell(StepState::Loading);
        let outcome = catch_unwind(AssertUnwindSafe(|| self.write().lifecycle().load()));
        let result = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(format!("panicked: {}", panic_message(&panic)).into()),
        };
        let mut state = self.lock_state();
        match result {
            Ok(()) => {
                *state = LoadState::Loaded;
                self.changed.notify_all();
                drop(state);
                self.tell(StepState::Loaded);
                Ok(LoadGuard {
                    slot: self.clone(),
                    owner: true,
                })
            }
            Err(source) => {
                *state = LoadState::Unloaded;
                self.changed.notify_all();
                drop(state);
                self.tell(StepState::Unloaded);
                Err(Error::LoadFailed {
                    step: self.name.clone(),
                    source,
                })
            }
        }
    }

    /// Takes the step for a run: a step already loaded (by whoever holds its owning guard) is
    /// used as it is, with a guard that does not unload it; any other is loaded, with a guard
    /// that unloads it. Listeners hear `Loaded` either way.
    pub fn acquire(self: &Arc<Self>) -> Result<LoadGuard> {
        if self.state() == LoadState::Loaded {
            self.tell(StepState::Loaded);
            return Ok(LoadGuard {
                slot: self.clone(),
                owner: false,
            });
        }
        self.load()
    }

    /// Unloads the step if it is loaded; otherwise does nothing.
    pub fn unload(&self) {
        {
            let mut state = self.lock_state();
            if *state != LoadState::Loaded {
                return;
            }
            *state = LoadState::Unloaded;
        }
        // A panicking unload must not take the run down with it: the step is unloaded anyway.
        let _ = catch_unwind(AssertUnwindSafe(|| self.write().lifecycle().unload()));
        self.changed.notify_all();
        self.tell(StepState::Unloaded);
    }
}

/// Unloads its step when dropped (normal end, error or panic alike).
#[must_use = "dropping the guard unloads the step"]
pub struct LoadGuard {
    slot: Arc<StepSlot>,
    owner: bool,
}

impl LoadGuard {
    /// The loaded step.
    pub fn slot(&self) -> &Arc<StepSlot> {
        &self.slot
    }

    /// Whether dropping this guard unloads the step (it loaded it), or the step was loaded
    /// already and someone else's guard unloads it.
    pub fn owns(&self) -> bool {
        self.owner
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.owner {
            self.slot.unload();
        }
    }
}

/// The text of a panic payload.
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
