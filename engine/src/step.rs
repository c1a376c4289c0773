//! What a step is: the traits custom and built-in steps implement.
//!
//! Four kinds, as in distilabel: generators produce rows from nothing, normal steps transform a
//! batch, global steps see all upstream rows at once, and tasks call an LLM. The engine owns
//! batching, column mappings, lifecycle and commits; a step only maps rows to rows.

use distill_storage::Row;

/// The error a step returns from `load` or `process`; the engine adds the step's name.
pub type StepError = Box<dyn std::error::Error + Send + Sync>;

/// Result of a step's own work.
pub type StepResult<T> = Result<T, StepError>;

/// The error of a step constructor that could not reach its input (a remote service that
/// failed or refused), as opposed to parameters that are wrong: the build fails with
/// [`crate::ErrorKind::Remote`] instead of [`crate::ErrorKind::Invalid`]. Its message is the
/// wrapped error's.
#[derive(Debug)]
pub struct InputUnreachable(pub StepError);

impl std::fmt::Display for InputUnreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InputUnreachable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Hooks shared by every kind of step.
pub trait Lifecycle: Send + Sync {
    /// Acquires what the step needs (a client, a file handle, a model). Called once per stage.
    fn load(&mut self) -> StepResult<()> {
        Ok(())
    }

    /// Releases what `load` acquired. Called when the stage ends, also after an error or panic.
    fn unload(&mut self) {}

    /// Whether a second `load` of a loaded step is a no-op (true) or an `AlreadyLoaded` error.
    fn load_is_idempotent(&self) -> bool {
        false
    }

    /// An identity of the step's own code when it is not part of distill (a Python step: its
    /// name and a hash of its source, or the version its author gave). It is part of the
    /// step's signature, so a run resumed with changed code recomputes the step and what
    /// follows it. `None` (built-in steps): the type name says it all.
    fn code_version(&self) -> Option<String> {
        None
    }
}

/// Produces rows from nothing (files, inline data). Must be deterministic: the same `offset`
/// yields the same rows, so a resumed run continues where the committed batches end.
pub trait Generator: Lifecycle {
    /// Columns of the rows it produces.
    fn outputs(&self) -> Vec<String>;

    /// Returns up to `count` rows starting at row `offset`, and whether no row follows them.
    fn generate(&mut self, offset: u64, count: usize) -> StepResult<(Vec<Row>, bool)>;

    /// [`Generator::generate`] with the run's task context (request cache, counters, stop
    /// flag), for generators that call an LLM (Magpie's). The engine calls this one; by
    /// default it is `generate`.
    fn generate_in(
        &mut self,
        offset: u64,
        count: usize,
        _ctx: &std::sync::Arc<dyn crate::task::TaskContext>,
    ) -> StepResult<(Vec<Row>, bool)> {
        self.generate(offset, count)
    }

    /// A short text that changes when the generator's input changes (a file's size and
    /// modification time, say), read without reading the input; `None` when the parameters
    /// are the whole input (inline rows). A run refuses to resume when it changed.
    fn fingerprint(&self) -> StepResult<Option<String>> {
        Ok(None)
    }

    /// Called when a run resumes with this step unchanged, before fingerprints are compared,
    /// with the fingerprint the run recorded: a generator that can still read its input as it
    /// was then (a Hub dataset at the recorded commit, while the branch moved on) switches to
    /// it, so that [`Generator::fingerprint`] matches again and the run reads the same rows.
    /// By default nothing changes.
    fn pin(&mut self, recorded: &str) -> StepResult<()> {
        let _ = recorded;
        Ok(())
    }
}

/// Transforms one batch of rows into output rows (any number: filter and expand change it).
pub trait Step: Lifecycle {
    /// Columns each input row must have.
    fn inputs(&self) -> Vec<String>;

    /// Columns the step adds.
    fn outputs(&self) -> Vec<String>;

    /// Processes one input batch.
    fn process(&self, rows: Vec<Row>) -> StepResult<Vec<Row>>;

    /// Processes one input batch from several predecessors: `parts[i]` holds predecessor i's
    /// rows of this window (aligned by row index). By default the parts are concatenated.
    fn process_parts(&self, parts: Vec<Vec<Row>>) -> StepResult<Vec<Row>> {
        self.process(parts.into_iter().flatten().collect())
    }

    /// Columns that remain after this step, given the columns it receives. By default the
    /// received columns plus [`Step::outputs`]; a step that drops columns says so here.
    fn columns_after(&self, received: &[String]) -> Vec<String> {
        with_outputs(received, self.outputs())
    }

    /// Whether the step makes exactly one output row of each input row, in order (a filter or
    /// a list expansion does not). Rows of branches that only pass through such steps from
    /// one source line up by position.
    fn keeps_rows(&self) -> bool {
        true
    }

    /// Whether the step pairs the rows of its predecessors by position: then they must come
    /// from one source through steps that keep rows, or the pairs would be wrong.
    fn aligns_by_position(&self) -> bool {
        false
    }
}

/// `received` plus the `outputs` not among them.
fn with_outputs(received: &[String], outputs: Vec<String>) -> Vec<String> {
    let mut out = received.to_vec();
    for c in outputs {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// Needs every upstream row at once (dedup, sampling). Runs alone in its stage.
pub trait GlobalStep: Lifecycle {
    /// Columns each input row must have.
    fn inputs(&self) -> Vec<String>;

    /// Columns the step adds.
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Processes all upstream rows, in order.
    fn process_all(&self, rows: Vec<Row>) -> StepResult<Vec<Row>>;

    /// The step's streaming form, if it has one: then the engine feeds it the upstream rows
    /// window by window (`batch_size` rows, predecessors one after the other) instead of all
    /// at once, and commits each window's output with the input cursors it reached, so its
    /// memory is what the stream keeps (signatures, hashes), not the rows. `None` (the
    /// default): [`GlobalStep::process_all`].
    fn stream(&self) -> Option<Box<dyn GlobalStream>> {
        None
    }

    /// Processes all upstream rows of several predecessors: `parts[i]` holds predecessor i's
    /// rows. By default the parts are concatenated.
    fn process_all_parts(&self, parts: Vec<Vec<Row>>) -> StepResult<Vec<Row>> {
        self.process_all(parts.into_iter().flatten().collect())
    }

    /// Columns that remain after this step, given the columns it receives (by default the
    /// received columns plus [`GlobalStep::outputs`]).
    fn columns_after(&self, received: &[String]) -> Vec<String> {
        with_outputs(received, self.outputs())
    }
}

/// The state of a global step that sees upstream rows window by window (see
/// [`GlobalStep::stream`]).
///
/// Its output must depend only on the sequence of rows pushed, never on where windows begin
/// or on anything outside it (time, process, randomness not seeded): a resumed run rebuilds
/// the state by pushing the rows the committed windows consumed again (their output is
/// dropped, it is already in the log), then goes on with the next window, so its output
/// equals an uninterrupted run's.
pub trait GlobalStream: Send {
    /// Takes the next upstream rows, in order, and returns the rows it passes on, in order.
    fn push(&mut self, rows: Vec<Row>) -> StepResult<Vec<Row>>;
}

/// A constructed step of one of the four kinds.
pub enum StepKind {
    /// Produces rows.
    Generator(Box<dyn Generator>),
    /// Transforms batches.
    Step(Box<dyn Step>),
    /// Sees all upstream rows.
    Global(Box<dyn GlobalStep>),
    /// Calls an LLM.
    Task(Box<dyn crate::task::Task>),
}

/// Which of the four kinds a step is, without the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Produces rows.
    Generator,
    /// Transforms batches.
    Step,
    /// Sees all upstream rows.
    Global,
    /// Calls an LLM.
    Task,
}

impl NodeKind {
    /// Lower-case name, as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Generator => "generator",
            NodeKind::Step => "step",
            NodeKind::Global => "global",
            NodeKind::Task => "task",
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl StepKind {
    /// Which kind this is.
    pub fn kind(&self) -> NodeKind {
        match self {
            StepKind::Generator(_) => NodeKind::Generator,
            StepKind::Step(_) => NodeKind::Step,
            StepKind::Global(_) => NodeKind::Global,
            StepKind::Task(_) => NodeKind::Task,
        }
    }

    /// The lifecycle hooks of whichever kind this is.
    pub fn lifecycle(&mut self) -> &mut dyn Lifecycle {
        match self {
            StepKind::Generator(g) => g.as_mut(),
            StepKind::Step(s) => s.as_mut(),
            StepKind::Global(g) => g.as_mut(),
            StepKind::Task(t) => t.as_mut(),
        }
    }

    /// The step's code version (see [`Lifecycle::code_version`]).
    pub fn code_version(&self) -> Option<String> {
        match self {
            StepKind::Generator(g) => g.code_version(),
            StepKind::Step(s) => s.code_version(),
            StepKind::Global(g) => g.code_version(),
            StepKind::Task(t) => t.code_version(),
        }
    }

    /// Whether a second load is a no-op.
    pub fn load_is_idempotent(&self) -> bool {
        match self {
            StepKind::Generator(g) => g.load_is_idempotent(),
            StepKind::Step(s) => s.load_is_idempotent(),
            StepKind::Global(g) => g.load_is_idempotent(),
            StepKind::Task(t) => t.load_is_idempotent(),
        }
    }

    /// Whether the step makes one output row of each input row, in order (generators and
    /// global steps are where rows come from, so: no).
    pub fn keeps_rows(&self) -> bool {
        match self {
            StepKind::Step(s) => s.keeps_rows(),
            StepKind::Task(t) => t.keeps_rows(),
            StepKind::Generator(_) | StepKind::Global(_) => false,
        }
    }

    /// Columns each input row must have (none for generators).
    pub fn inputs(&self) -> Vec<String> {
        match self {
            StepKind::Generator(_) => Vec::new(),
            StepKind::Step(s) => s.inputs(),
            StepKind::Global(g) => g.inputs(),
            StepKind::Task(t) => t.inputs(),
        }
    }

    /// Columns the step adds.
    pub fn outputs(&self) -> Vec<String> {
        match self {
            StepKind::Generator(g) => g.outputs(),
            StepKind::Step(s) => s.outputs(),
            StepKind::Global(g) => g.outputs(),
            StepKind::Task(t) => t.outputs(),
        }
    }
}

/// What a constructor may need besides its parameters.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Directory that relative file paths in parameters are resolved against (the pipeline
    /// file's directory).
    pub base_dir: std::path::PathBuf,
}

impl BuildContext {
    /// Resolves a path parameter against [`BuildContext::base_dir`].
    pub fn resolve(&self, path: &str) -> std::path::PathBuf {
        let p = std::path::Path::new(path);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

/// Parses a step's parameters into its typed form; the message names the parameter.
pub fn parse_params<T: serde::de::DeserializeOwned>(params: &serde_json::Value) -> StepResult<T> {
    let params = if params.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        params.clone()
    };
    Ok(from_json(params)?)
}

/// `value` deserialized as `T`; a wrong value's message names where it is (`generation.seed:
/// invalid value ...`), which serde_json alone does not.
pub fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> crate::Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        crate::Error::BadValue {
            path: (path != ".").then_some(path),
            detail: e.inner().to_string(),
        }
    })
}
