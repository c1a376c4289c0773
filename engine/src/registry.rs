//! Step types by name: the built-ins, plus whatever a library user registers.

use crate::step::{BuildContext, StepKind, StepResult};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Builds a step from its parameters. The error message names the bad parameter.
pub type Constructor =
    Arc<dyn Fn(&serde_json::Value, &BuildContext) -> StepResult<StepKind> + Send + Sync>;

/// Step types by name.
#[derive(Clone)]
pub struct Registry {
    constructors: BTreeMap<String, Constructor>,
    operational: BTreeMap<String, Vec<String>>,
}

impl Default for Registry {
    /// A registry with the engine's built-in steps (the CPU steps; the LLM tasks are
    /// registered by the `distill-llm` crate, all of them by the `distill` crate).
    fn default() -> Self {
        let mut registry = Self::empty();
        crate::steps::register_builtins(&mut registry);
        registry
    }
}

impl Registry {
    /// A registry with no step type.
    pub fn empty() -> Self {
        Self {
            constructors: BTreeMap::new(),
            operational: BTreeMap::new(),
        }
    }

    /// Registers (or replaces) the step type `name`.
    pub fn register(
        &mut self,
        name: &str,
        constructor: impl Fn(&serde_json::Value, &BuildContext) -> StepResult<StepKind>
        + Send
        + Sync
        + 'static,
    ) {
        self.constructors
            .insert(name.to_owned(), Arc::new(constructor));
    }

    /// Declares the parameters of step type `name` that change how it runs but never a row it
    /// makes (endpoints, concurrency, limits, timeouts): they are left out of its step
    /// signature, so changing them resumes a run as if nothing changed.
    pub fn set_operational(&mut self, name: &str, params: &[&str]) {
        self.operational.insert(
            name.to_owned(),
            params.iter().map(|p| (*p).to_owned()).collect(),
        );
    }

    /// The operational parameters of step type `name` (see [`Registry::set_operational`]).
    pub fn operational(&self, name: &str) -> &[String] {
        self.operational.get(name).map_or(&[], Vec::as_slice)
    }

    /// The constructor of `name`.
    pub fn get(&self, name: &str) -> Option<&Constructor> {
        self.constructors.get(name)
    }

    /// Every registered type name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.constructors.keys().map(String::as_str)
    }
}
