//! The pipeline definition: the one model behind both the YAML file and the Rust builder.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Rows per batch when a step does not say.
pub const DEFAULT_BATCH_SIZE: usize = 50;

/// A pipeline as written: its steps and how they connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline.
    pub name: String,
    /// What it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The steps, in any order.
    pub steps: Vec<StepSpec>,
    /// Publish the leaves to the Hugging Face Hub while the run goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<PushSpec>,
    /// Most US dollars the run may spend on priced LLM answers, earlier sessions included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_usd: Option<f64>,
    /// Snapshot the run database to object storage or the Hub while the run goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointSpec>,
    /// Keep every step's batches in the run database. By default a step whose consumers are
    /// all in its stage has its batches deleted once they are all past them (the leaves and
    /// the outputs read by later stages are always kept).
    #[serde(default, skip_serializing_if = "is_default")]
    pub keep_intermediate: bool,
}

/// Where and how often a run pushes its distiset to the Hub (the `push:` section).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSpec {
    /// Dataset repository, `namespace/name`.
    pub repo: String,
    /// Create the repository private (the default) or public; an existing one is left as is.
    #[serde(default = "yes")]
    pub private: bool,
    /// Branch to commit to.
    #[serde(default = "main_branch")]
    pub revision: String,
    /// Push once this many new rows are committed (across leaves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_rows: Option<u64>,
    /// Push new rows at least this often, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// Time allowed for one Hub request, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// How long the end of the run waits for the last push to succeed, in seconds; after that
    /// the run ends anyway and `distill push` catches up.
    #[serde(default = "default_final_wait")]
    pub final_wait_secs: u64,
}

fn yes() -> bool {
    true
}

fn main_branch() -> String {
    PushSpec::DEFAULT_REVISION.into()
}

fn default_timeout() -> u64 {
    PushSpec::DEFAULT_TIMEOUT_SECS
}

fn default_final_wait() -> u64 {
    PushSpec::DEFAULT_FINAL_WAIT_SECS
}

impl PushSpec {
    /// The branch pushed to when none is given.
    pub const DEFAULT_REVISION: &str = "main";
    /// Seconds allowed for one Hub request when not given.
    pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
    /// Seconds the end of a run keeps retrying its last push when not given.
    pub const DEFAULT_FINAL_WAIT_SECS: u64 = 300;
    /// How often `distill push` on a live run pushes when given no cadence, in seconds.
    pub const DEFAULT_LIVE_EVERY_SECS: u64 = 60;
    /// Longest duration any of the section's times may be: a week, in seconds.
    pub const MAX_SECS: u64 = 7 * 86_400;

    /// Checks a repository id: `NAMESPACE/NAME`, each part letters, digits, `-`, `_` or `.`.
    /// The message says what is expected.
    pub fn check_repo(repo: &str) -> Result<()> {
        let ok_part = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        match repo.split_once('/') {
            Some((ns, name)) if ok_part(ns) && ok_part(name) => Ok(()),
            _ => Err(Error::BadSection {
                section: "push",
                detail: format!(
                    "`repo` must be NAMESPACE/NAME (letters, digits, - _ .), not '{repo}'"
                ),
            }),
        }
    }

    /// Checks the section: a `namespace/name` repository, a branch, counts of at least 1.
    pub fn check(&self) -> Result<()> {
        let bad = |detail: String| Error::BadSection {
            section: "push",
            detail,
        };
        Self::check_repo(&self.repo)?;
        if self.revision.trim().is_empty() {
            return Err(bad("`revision` is empty".into()));
        }
        if self.every_rows == Some(0) {
            return Err(bad("`every_rows` must be at least 1".into()));
        }
        for (name, value, min) in [
            ("every_secs", self.every_secs, 1),
            ("timeout_secs", Some(self.timeout_secs), 1),
            ("final_wait_secs", Some(self.final_wait_secs), 0),
        ] {
            if let Some(value) = value
                && !(min..=Self::MAX_SECS).contains(&value)
            {
                return Err(bad(format!(
                    "`{name}` must be from {min} to {} seconds (a week), not {value}",
                    Self::MAX_SECS
                )));
            }
        }
        Ok(())
    }

    /// Pushes to `repo` at the end of the run only, privately, on `main`.
    pub fn new(repo: impl Into<String>) -> Self {
        Self {
            repo: repo.into(),
            private: true,
            revision: main_branch(),
            every_rows: None,
            every_secs: None,
            timeout_secs: default_timeout(),
            final_wait_secs: default_final_wait(),
        }
    }
}

/// Where and how often a run snapshots its database off the machine (the `checkpoint:`
/// section). Credentials come from the environment, never from here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Where: `s3://BUCKET/PREFIX`, `gs://`, `az://`, `file:///PATH` or
    /// `hf://datasets/NAMESPACE/NAME`.
    pub to: String,
    /// Snapshot at least this often, in seconds (default: every 600 s when `every_batches` is
    /// not given either).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_secs: Option<u64>,
    /// Snapshot once this many batches were committed since the last snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_batches: Option<u64>,
    /// Complete snapshots kept; older ones are deleted once a newer one is complete.
    #[serde(default = "default_keep")]
    pub keep: u32,
}

fn default_keep() -> u32 {
    CheckpointSpec::DEFAULT_KEEP
}

impl CheckpointSpec {
    /// Snapshots kept when not given.
    pub const DEFAULT_KEEP: u32 = 3;
    /// Seconds between snapshots when neither cadence is given.
    pub const DEFAULT_EVERY_SECS: u64 = 600;
    /// The URL schemes a checkpoint may go to.
    pub const SCHEMES: [&str; 5] = ["s3", "gs", "az", "file", "hf"];

    /// Snapshots to `to` every [`Self::DEFAULT_EVERY_SECS`], keeping [`Self::DEFAULT_KEEP`].
    pub fn new(to: impl Into<String>) -> Self {
        Self {
            to: to.into(),
            every_secs: None,
            every_batches: None,
            keep: Self::DEFAULT_KEEP,
        }
    }

    /// Checks the section: a URL of a known scheme without credentials in it, counts of at
    /// least 1.
    pub fn check(&self) -> Result<()> {
        let bad = |detail: String| Error::BadSection {
            section: "checkpoint",
            detail,
        };
        Self::check_url(&self.to).map_err(bad)?;
        if self.every_batches == Some(0) {
            return Err(bad("`every_batches` must be at least 1".into()));
        }
        if let Some(secs) = self.every_secs
            && !(1..=PushSpec::MAX_SECS).contains(&secs)
        {
            return Err(bad(format!(
                "`every_secs` must be from 1 to {} seconds (a week), not {secs}",
                PushSpec::MAX_SECS
            )));
        }
        if self.keep == 0 {
            return Err(bad("`keep` must be at least 1".into()));
        }
        Ok(())
    }

    /// Checks a checkpoint URL: one of [`Self::SCHEMES`], something after `://`, and no user,
    /// password or query (credentials come from the environment, so that they are never
    /// written down with the pipeline). The message says what is wrong.
    pub fn check_url(url: &str) -> std::result::Result<(), String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "`to` must be a URL such as s3://BUCKET/PREFIX, not '{url}'"
            ));
        };
        if !Self::SCHEMES.contains(&scheme) {
            return Err(format!(
                "`to`: unknown scheme '{scheme}' (known: {})",
                Self::SCHEMES.join(", ")
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.contains('@') || rest.contains('?') || rest.contains('#') {
            return Err(
                "`to` must not hold credentials, a query or a fragment: credentials come from the environment (AWS_*, GOOGLE_*, AZURE_*, HF_TOKEN)"
                    .into(),
            );
        }
        if rest.trim_matches('/').is_empty() && scheme != "file" {
            return Err(format!("`to`: '{url}' names no bucket or repository"));
        }
        Ok(())
    }

    /// Seconds between snapshots by the clock, if snapshots are taken by the clock.
    pub fn period_secs(&self) -> Option<u64> {
        match (self.every_secs, self.every_batches) {
            (None, None) => Some(Self::DEFAULT_EVERY_SECS),
            (secs, _) => secs,
        }
    }
}

/// What happens when a step fails on a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Record the error in the step's state and stop the run (everything committed is kept).
    #[default]
    Fail,
    /// Pass the batch's rows on with the step's outputs null and the error in `distill_error`.
    Mark,
}

/// One step as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique name.
    pub name: String,
    /// Registered step type (`load_jsonl`, `dedup`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Predecessors, by name. Their rows are this step's input.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Rows per output batch, for generators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Rows per input batch, for other steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_batch_size: Option<usize>,
    /// The step type's own parameters (a mapping; a key written twice is an error).
    #[serde(
        default,
        skip_serializing_if = "is_empty_object",
        deserialize_with = "crate::unique_keys::params"
    )]
    pub params: serde_json::Value,
    /// Step input name to the column that feeds it.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::unique_keys::names"
    )]
    pub input_mappings: BTreeMap<String, String>,
    /// Step output name to the column it is written to.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "crate::unique_keys::names"
    )]
    pub output_mappings: BTreeMap<String, String>,
    /// What a failure does.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_error: OnError,
    /// Keep this step's batches in the run database even when its consumers are past them
    /// (for debugging; see [`PipelineSpec::keep_intermediate`]).
    #[serde(default, skip_serializing_if = "is_default")]
    pub keep_intermediate: bool,
}

fn is_empty_object(v: &serde_json::Value) -> bool {
    v.is_null() || v.as_object().is_some_and(|o| o.is_empty())
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Largest `budget_usd` accepted (a billion dollars).
pub const MAX_BUDGET_USD: f64 = 1e9;

/// Step parameters that limit the whole pipeline's use of a provider: a sharded run splits
/// them over its shards (see [`PipelineSpec::split_limits`]).
pub const SHARED_LIMITS: &[&str] = &["concurrency", "requests_per_minute", "tokens_per_minute"];

impl PipelineSpec {
    /// Splits the pipeline's limits evenly over `shards` processes, so that together they
    /// never spend more or ask a provider harder than one run: `budget_usd` divided by
    /// `shards`, and each step's [`SHARED_LIMITS`] parameter written in the pipeline divided
    /// and rounded down (at least 1). A limit left to its default is each shard's (the
    /// `distill` crate writes a task's default `concurrency` first, so that it is split).
    pub fn split_limits(&mut self, shards: u32) {
        if shards <= 1 {
            return;
        }
        if let Some(usd) = &mut self.budget_usd {
            *usd /= f64::from(shards);
        }
        for step in &mut self.steps {
            let Some(params) = step.params.as_object_mut() else {
                continue;
            };
            for key in SHARED_LIMITS {
                if let Some(limit) = params.get(*key).and_then(serde_json::Value::as_u64) {
                    params.insert(
                        (*key).to_owned(),
                        serde_json::Value::from((limit / u64::from(shards)).max(1)),
                    );
                }
            }
        }
    }

    /// Checks `budget_usd`: dollars from 0 (only cached answers) to [`MAX_BUDGET_USD`].
    pub fn check_budget(&self) -> Result<()> {
        match self.budget_usd {
            Some(usd) if !(usd.is_finite() && (0.0..=MAX_BUDGET_USD).contains(&usd)) => {
                Err(Error::BadSection {
                    section: "budget_usd",
                    detail: format!(
                        "must be a number of dollars from 0 to {MAX_BUDGET_USD}, not {usd}"
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// An empty pipeline named `name` (builder API).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            description: None,
            steps: Vec::new(),
            push: None,
            budget_usd: None,
            checkpoint: None,
            keep_intermediate: false,
        }
    }

    /// Adds a step (builder API).
    pub fn step(mut self, step: StepSpec) -> Self {
        self.steps.push(step);
        self
    }

    /// Parses a pipeline from YAML text; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &Path) -> Result<Self> {
        serde_yaml_ng::from_str(text).map_err(|e| Error::BadPipelineFile {
            path: origin.to_path_buf(),
            detail: e.to_string(),
        })
    }

    /// Reads a pipeline file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// The pipeline as YAML, in canonical form: fields in a fixed order, parameter keys sorted.
    /// Loading it back gives the same spec and the same signature.
    pub fn to_yaml(&self) -> String {
        let mut canonical = self.clone();
        for step in &mut canonical.steps {
            step.params = crate::canonical::canonical_json(&step.params);
        }
        // Serialising plain data with string keys cannot fail.
        serde_yaml_ng::to_string(&canonical).unwrap_or_default()
    }

    /// Writes the canonical YAML to `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_yaml()).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// blake3 hash of the canonical YAML without the `push:` and `checkpoint:` sections and
    /// `budget_usd`, hex encoded: the run database's pipeline identity. Where the rows are
    /// published, where the database is snapshotted and how much may be spent do not change
    /// them, so any of these can be added or changed and the run resumed.
    pub fn signature(&self) -> String {
        let mut steps_only = self.clone();
        steps_only.push = None;
        steps_only.checkpoint = None;
        steps_only.budget_usd = None;
        // Which batches the database keeps does not change a row.
        steps_only.keep_intermediate = false;
        for step in &mut steps_only.steps {
            step.keep_intermediate = false;
        }
        blake3::hash(steps_only.to_yaml().as_bytes())
            .to_hex()
            .to_string()
    }

    /// Names of the steps no other step comes after: the outputs of the pipeline.
    pub fn leaves(&self) -> Vec<String> {
        let fed: std::collections::HashSet<&str> = self
            .steps
            .iter()
            .flat_map(|s| s.after.iter().map(String::as_str))
            .collect();
        self.steps
            .iter()
            .filter(|s| !fed.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect()
    }

    /// The leaves, refusing a name that is not a safe directory name: they become paths in
    /// exports and on the Hub. Pipelines are checked when built; this guards the ones stored
    /// by a distill that did not check names yet.
    pub fn safe_leaves(&self) -> Result<Vec<String>> {
        let leaves = self.leaves();
        match leaves.iter().find(|l| !crate::pipeline::is_valid_name(l)) {
            Some(leaf) => Err(Error::BadStep {
                step: leaf.clone(),
                detail: "this leaf's name (stored by an older distill) is not a safe file name \
                         (letters, digits, _ and -), so its rows cannot be written under it; \
                         rename the step and run the pipeline again"
                    .into(),
            }),
            None => Ok(leaves),
        }
    }
}

impl StepSpec {
    /// A step named `name` of type `kind` (builder API).
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            after: Vec::new(),
            batch_size: None,
            input_batch_size: None,
            params: serde_json::Value::Object(Default::default()),
            input_mappings: BTreeMap::new(),
            output_mappings: BTreeMap::new(),
            on_error: OnError::Fail,
            keep_intermediate: false,
        }
    }

    /// Comes after `step`.
    pub fn after(mut self, step: impl Into<String>) -> Self {
        self.after.push(step.into());
        self
    }

    /// Sets parameter `key`.
    pub fn param(mut self, key: &str, value: impl Serialize) -> Self {
        let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        if !self.params.is_object() {
            self.params = serde_json::Value::Object(Default::default());
        }
        if let Some(map) = self.params.as_object_mut() {
            map.insert(key.to_owned(), value);
        }
        self
    }

    /// Sets the generator batch size.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = Some(rows);
        self
    }

    /// Sets the input batch size.
    pub fn input_batch_size(mut self, rows: usize) -> Self {
        self.input_batch_size = Some(rows);
        self
    }

    /// Feeds the step's input `input` from column `column`.
    pub fn input_mapping(mut self, input: &str, column: &str) -> Self {
        self.input_mappings.insert(input.into(), column.into());
        self
    }

    /// Writes the step's output `output` to column `column`.
    pub fn output_mapping(mut self, output: &str, column: &str) -> Self {
        self.output_mappings.insert(output.into(), column.into());
        self
    }

    /// Sets the failure policy.
    pub fn on_error(mut self, policy: OnError) -> Self {
        self.on_error = policy;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_split_evenly_over_shards() {
        let mut spec = PipelineSpec::new("demo").step(
            StepSpec::new("ask", "text_generation")
                .param("concurrency", 10)
                .param("requests_per_minute", 3)
                .param("tokens_per_minute", 1000),
        );
        spec.budget_usd = Some(8.0);
        spec.split_limits(4);
        assert_eq!(spec.budget_usd, Some(2.0));
        let params = &spec.steps[0].params;
        assert_eq!(params["concurrency"], 2);
        assert_eq!(params["requests_per_minute"], 1);
        assert_eq!(params["tokens_per_minute"], 250);
    }

    fn sample() -> PipelineSpec {
        PipelineSpec::new("demo")
            .step(
                StepSpec::new("load", "inline")
                    .param("rows", serde_json::json!([{"b": 1, "a": 2}]))
                    .batch_size(10),
            )
            .step(
                StepSpec::new("fmt", "format_text")
                    .after("load")
                    .param("template", "{{ a }}")
                    .param("output", "text")
                    .input_mapping("a", "b"),
            )
    }

    #[test]
    fn yaml_round_trip_keeps_the_signature() {
        let spec = sample();
        let yaml = spec.to_yaml();
        let back = PipelineSpec::from_yaml(&yaml, Path::new("x.yaml")).unwrap();
        assert_eq!(back.signature(), spec.signature());
        assert_eq!(back.to_yaml(), yaml);
    }

    #[test]
    fn parameter_key_order_does_not_change_the_signature() {
        let a = StepSpec::new("s", "t").param("x", 1).param("y", 2);
        let b = StepSpec::new("s", "t").param("y", 2).param("x", 1);
        let pa = PipelineSpec::new("p").step(a);
        let pb = PipelineSpec::new("p").step(b);
        assert_eq!(pa.signature(), pb.signature());
        let pc = PipelineSpec::new("p").step(StepSpec::new("s", "t").param("x", 3));
        assert_ne!(pa.signature(), pc.signature());
    }

    #[test]
    fn bad_yaml_names_file_and_line() {
        let err = PipelineSpec::from_yaml("name: x\nsteps:\n  - name: [\n", Path::new("p.yaml"))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("p.yaml") && msg.contains("line"), "{msg}");
        let err = PipelineSpec::from_yaml("name: x\nsteps: []\nbogus: 1\n", Path::new("p.yaml"))
            .unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn the_checkpoint_section_is_checked_and_outside_the_signature() {
        let mut spec = sample();
        let before = spec.signature();
        let mut section = CheckpointSpec::new("s3://bucket/runs");
        section.every_batches = Some(10);
        spec.checkpoint = Some(section);
        assert_eq!(spec.signature(), before);
        let back = PipelineSpec::from_yaml(&spec.to_yaml(), Path::new("p.yaml")).unwrap();
        assert_eq!(back.checkpoint, spec.checkpoint);
        assert_eq!(back.checkpoint.as_ref().unwrap().period_secs(), None);
        assert_eq!(
            CheckpointSpec::new("file:///tmp/x").period_secs(),
            Some(CheckpointSpec::DEFAULT_EVERY_SECS)
        );
        for good in [
            "s3://b/p",
            "gs://b",
            "az://container/p",
            "file:///tmp/x",
            "hf://datasets/acme/ckpt",
        ] {
            CheckpointSpec::new(good).check().unwrap();
        }
        for (bad, says) in [
            ("bucket/prefix", "must be a URL"),
            ("ftp://host/x", "unknown scheme 'ftp'"),
            ("s3://KEY:SECRET@bucket/p", "credentials"),
            ("az://c/p?sig=abc", "credentials"),
            ("s3://", "names no bucket"),
        ] {
            let err = CheckpointSpec::new(bad).check().unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains("checkpoint"),
                "{bad}: {err}"
            );
            assert!(!err.contains("SECRET"), "{err}");
        }
        let mut zero = CheckpointSpec::new("s3://b/p");
        zero.keep = 0;
        assert!(zero.check().unwrap_err().to_string().contains("keep"));
        zero.keep = 1;
        zero.every_secs = Some(0);
        assert!(zero.check().unwrap_err().to_string().contains("every_secs"));
        let err = PipelineSpec::from_yaml(
            "name: x\nsteps: []\ncheckpoint: {to: 's3://b/p', every: 3}\n",
            Path::new("p.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("every"), "{err}");
    }

    #[test]
    fn the_push_section_is_checked_and_outside_the_signature() {
        let mut spec = sample();
        let before = spec.signature();
        spec.push = Some(PushSpec::new("acme/data"));
        assert_eq!(spec.signature(), before);
        let back = PipelineSpec::from_yaml(&spec.to_yaml(), Path::new("p.yaml")).unwrap();
        assert_eq!(back.push, spec.push);
        assert!(PushSpec::new("acme/data").check().is_ok());
        for bad in ["data", "acme/", "a/b/c", "acme/da ta"] {
            let err = PushSpec::new(bad).check().unwrap_err().to_string();
            assert!(err.contains("NAMESPACE/NAME") && err.contains(bad), "{err}");
        }
        let mut zero = PushSpec::new("acme/data");
        zero.every_rows = Some(0);
        assert!(zero.check().unwrap_err().to_string().contains("every_rows"));
        let mut long = PushSpec::new("acme/data");
        long.final_wait_secs = u64::MAX;
        let err = long.check().unwrap_err().to_string();
        assert!(
            err.contains("final_wait_secs") && err.contains("a week"),
            "{err}"
        );
        long.final_wait_secs = 0;
        long.timeout_secs = PushSpec::MAX_SECS + 1;
        assert!(
            long.check()
                .unwrap_err()
                .to_string()
                .contains("timeout_secs")
        );
        let err = PipelineSpec::from_yaml(
            "name: x\nsteps: []\npush: {repo: a/b, every: 3}\n",
            Path::new("p.yaml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("every"), "{err}");
    }

    #[test]
    fn leaves_are_steps_nothing_comes_after() {
        assert_eq!(sample().leaves(), vec!["fmt".to_string()]);
    }
}
