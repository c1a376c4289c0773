//! The pusher: a consumer of the run log that publishes committed leaf batches to a Hub dataset
//! repository, exactly once.
//!
//! One push round: list the repository, take as pushed what the Hub shows of this run (shard
//! names carry the run and the batch range), cut the batches committed since into Parquet
//! shards, upload them and commit them together with the card and `pipeline.yaml` in one Hub
//! commit, and only then record the new offsets in the run database. A crash before the Hub's
//! commit leaves nothing on the Hub; a crash after it leaves shards that the next round finds
//! in the listing. Either way no row is pushed twice or skipped.

use crate::client::{HubClient, UploadFile};
use crate::error::{Error, Result};
use crate::shard::{Shard, build_shards, is_data_file, parse_shard_path};
use distill_distiset::{Distiset, ExportFormat, Inferred, LeafExport, LeafStatus, dataset_card};
use distill_engine::{PipelineSpec, PushSpec};
use distill_storage::{Progress, RunMeta, Snapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a push stands; kept in the run database as the record `hub:REPO` (never holds the
/// token) and shown by `distill status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PushStatus {
    /// The repository.
    pub repo: String,
    /// The branch.
    pub revision: String,
    /// The run the pushed shards belong to.
    pub run_tag: String,
    /// Each leaf's tag, in its shards' names: the run's, or a new one once a changed pipeline
    /// dropped the leaf's batches (its shards on the Hub are then replaced; see [`leaf_tag`]).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Rows on the Hub, per leaf.
    pub rows: BTreeMap<String, u64>,
    /// Batches on the Hub, per leaf (the consumer offsets).
    pub batches: BTreeMap<String, u64>,
    /// Hub commits made.
    pub commits: u64,
    /// The last Hub commit's id.
    pub last_commit: Option<String>,
    /// When it was confirmed (ms since the epoch).
    pub last_commit_ms: u64,
    /// The last failure, cleared by the next successful push.
    pub last_error: Option<String>,
    /// Push rounds failed since the last success.
    pub failures: u64,
    /// Whether the last failure needs a change (token, permission) rather than time.
    pub fatal: bool,
    /// What the card pushed last shows, to know when a new one is due.
    pub card_key: String,
    /// Column types of each leaf's shards so far; later shards keep them, so the files of a
    /// config agree on their schema.
    #[serde(default)]
    pub schemas: BTreeMap<String, Inferred>,
}

impl PushStatus {
    /// Rows on the Hub in all.
    pub fn total_rows(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// Name of the record of a push to `repo`.
pub(crate) fn record_key(repo: &str) -> String {
    format!("hub:{repo}")
}

/// Name of the consumer offset of `leaf` pushed to `repo`: the next batch to push.
pub fn offset_name(repo: &str, leaf: &str) -> String {
    format!("hub:{repo}:{leaf}")
}

/// A short id of the run in `meta` (a new run in the same database gets a new one; a changed
/// pipeline resumed in it keeps it).
pub fn run_tag(meta: &RunMeta) -> String {
    leaf_tag(meta, None)
}

/// A short id of a leaf's batches: the run's tag until a changed pipeline drops them, then one
/// per `epoch` (see [`distill_engine::step_epoch`]).
pub fn leaf_tag(meta: &RunMeta, epoch: Option<&str>) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"distill run");
    hasher.update(&meta.created_ms.to_le_bytes());
    if let Some(epoch) = epoch {
        hasher.update(epoch.as_bytes());
    }
    hasher.finalize().to_hex()[..8].to_owned()
}

/// What a round did.
#[derive(Debug, Clone, PartialEq)]
pub enum Round {
    /// Nothing was due.
    Idle,
    /// A Hub commit was made.
    Pushed {
        /// New rows in it.
        rows: u64,
        /// Files uploaded (shards, card, pipeline).
        files: usize,
        /// Committed rows were left for the next round (a commit holds at most
        /// [`MAX_COMMIT_ROWS`] rows).
        more: bool,
    },
}

/// Most new rows in one Hub commit (and so in memory at once); more go in the next round.
pub const MAX_COMMIT_ROWS: u64 = 500_000;

/// Stores the pusher's offsets and record; `None` when the database is another process's.
pub type Sink<'a> = Option<&'a dyn Fn(Progress) -> distill_storage::Result<()>>;

/// Pushes one run to one repository.
pub struct Pusher {
    spec: PushSpec,
    client: HubClient,
    created: bool,
    last_push: Instant,
    status: PushStatus,
    max_commit_rows: u64,
    /// The run's pipeline, parsed once per pipeline signature.
    pipeline: Option<(String, Arc<PipelineSpec>)>,
}

impl Pusher {
    /// A pusher for `spec` through `client`, going on from the status recorded in `snapshot`.
    pub fn new(spec: PushSpec, client: HubClient, snapshot: &Snapshot) -> Result<Self> {
        let key = record_key(&spec.repo);
        let status = match snapshot.record(&key)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::BadRecord {
                key: key.clone(),
                detail: e.to_string(),
            })?,
            None => PushStatus::default(),
        };
        Ok(Self {
            status: PushStatus {
                repo: spec.repo.clone(),
                revision: spec.revision.clone(),
                ..status
            },
            spec,
            client,
            created: false,
            last_push: Instant::now(),
            max_commit_rows: MAX_COMMIT_ROWS,
            pipeline: None,
        })
    }

    /// Puts at most about `rows` new rows in one commit (default [`MAX_COMMIT_ROWS`]).
    pub fn with_max_commit_rows(mut self, rows: u64) -> Self {
        self.max_commit_rows = rows.max(1);
        self
    }

    /// Where the push stands.
    pub fn status(&self) -> &PushStatus {
        &self.status
    }

    /// The settings.
    pub fn spec(&self) -> &PushSpec {
        &self.spec
    }

    /// Creates the repository if needed (once): a bad token or a missing permission shows
    /// here, before anything else.
    pub fn prepare(&mut self) -> Result<()> {
        if !self.created {
            self.client
                .create_repo(&self.spec.repo, self.spec.private)?;
            self.created = true;
        }
        Ok(())
    }

    /// Notes a failed round in the status (and in the database through `sink`).
    pub fn record_failure(&mut self, failure: &Error, sink: Sink<'_>) {
        tracing::warn!(repo = %self.spec.repo, "push round failed: {failure}");
        self.status.last_error = Some(failure.to_string());
        self.status.failures += 1;
        self.status.fatal = !failure.is_transient();
        if let Some(sink) = sink
            && let Err(e) = sink(self.record_unit(Progress::new()))
        {
            tracing::error!(repo = %self.spec.repo, "cannot record the failed push round: {e}");
        }
    }

    /// One round on `snapshot`. With `finishing`, everything committed is pushed and the card
    /// is brought up to date; otherwise only when the push section says a push is due.
    pub fn round(&mut self, snapshot: &Snapshot, finishing: bool, sink: Sink<'_>) -> Result<Round> {
        let meta = snapshot.meta()?;
        let tag = run_tag(&meta);
        if self.status.run_tag != tag {
            // A new run in this database: nothing of it is pushed yet.
            self.status = PushStatus {
                repo: self.spec.repo.clone(),
                revision: self.spec.revision.clone(),
                run_tag: tag.clone(),
                ..PushStatus::default()
            };
        }
        let pipeline = match &self.pipeline {
            Some((parsed_for, pipeline)) if *parsed_for == meta.signature => pipeline.clone(),
            _ => {
                let parsed = PipelineSpec::from_yaml(&meta.pipeline, Path::new("(run database)"))?;
                let parsed = Arc::new(parsed);
                self.pipeline = Some((meta.signature.clone(), parsed.clone()));
                parsed
            }
        };
        let leaves = pipeline.safe_leaves()?;
        let tags = self.follow_leaf_tags(snapshot, &meta, &leaves)?;
        let mut committed = BTreeMap::new();
        let mut pending_rows = 0;
        for leaf in &leaves {
            let record = snapshot.step(leaf)?.unwrap_or_default();
            let pushed = self.status.rows.get(leaf).copied().unwrap_or(0);
            pending_rows += record.rows.saturating_sub(pushed);
            committed.insert(leaf.clone(), record);
        }
        let card_key = card_key(snapshot, &committed)?;
        // A final round always looks at the Hub: it is the check that everything is there.
        let due = finishing || {
            self.spec
                .every_rows
                .is_some_and(|n| pending_rows >= n.max(1))
                || self.spec.every_secs.is_some_and(|t| {
                    pending_rows > 0 && self.last_push.elapsed() >= Duration::from_secs(t)
                })
        };
        if !due {
            return Ok(Round::Idle);
        }
        self.prepare()?;
        let on_hub = self
            .client
            .list_files(&self.spec.repo, &self.spec.revision)?;
        self.reconcile(snapshot, &leaves, &on_hub, &tags, sink)?;

        let mut shards: Vec<Shard> = Vec::new();
        let mut deleted = Vec::new();
        let mut more = false;
        for leaf in &leaves {
            let from = self.status.batches.get(leaf).copied().unwrap_or(0);
            let to = committed[leaf].batches;
            let in_commit: u64 = shards.iter().map(|s| s.rows).sum();
            if to > from && in_commit >= self.max_commit_rows {
                more = true;
            } else if to > from {
                // Batches of one leaf up to about `max_commit_rows` rows, read as they come.
                let (mut rows, max) = (in_commit, self.max_commit_rows);
                let batches = snapshot
                    .batches(leaf, from)?
                    .take((to - from) as usize)
                    .take_while(|batch| {
                        let take = rows < max;
                        rows += batch.as_ref().map_or(0, |b| b.rows.len() as u64);
                        take
                    });
                let earlier = self.status.schemas.get(leaf).cloned().unwrap_or_default();
                let cut = build_shards(leaf, from, batches, &earlier)?;
                more |= cut.last().is_some_and(|s| s.to < to);
                shards.extend(cut);
            }
            // Data files of other runs (an earlier run pushed to this repository, or batches
            // of this leaf dropped by a changed pipeline) go.
            deleted.extend(
                on_hub
                    .iter()
                    .filter(|p| {
                        is_data_file(p, leaf) && parse_shard_path(p, leaf, &tags[leaf]).is_none()
                    })
                    .cloned(),
            );
        }
        // So do the data files of leaves the pipeline no longer has.
        let gone: Vec<String> = self
            .status
            .tags
            .keys()
            .filter(|leaf| !leaves.contains(leaf))
            .cloned()
            .collect();
        for leaf in &gone {
            deleted.extend(on_hub.iter().filter(|p| is_data_file(p, leaf)).cloned());
        }
        if shards.is_empty() && deleted.is_empty() && card_key == self.status.card_key {
            return Ok(Round::Idle);
        }
        let new_rows: u64 = shards.iter().map(|s| s.rows).sum();
        let mut after = self.status.clone();
        for leaf in &gone {
            after.tags.remove(leaf);
            after.rows.remove(leaf);
            after.batches.remove(leaf);
            after.schemas.remove(leaf);
        }
        for shard in &shards {
            *after.rows.entry(shard.leaf.clone()).or_default() += shard.rows;
            after.batches.insert(shard.leaf.clone(), shard.to);
            if shard.rows > 0 {
                after
                    .schemas
                    .insert(shard.leaf.clone(), shard.schema.clone());
            }
        }
        let mut files: Vec<UploadFile> = shards
            .iter()
            .filter(|s| s.rows > 0)
            .map(|s| UploadFile {
                path: s.path(&tags[&s.leaf]),
                bytes: s.bytes.clone(),
            })
            .collect();
        let readme = self.card(snapshot, &pipeline, &committed, &after)?;
        files.push(UploadFile {
            path: "README.md".into(),
            bytes: readme.into_bytes(),
        });
        files.push(UploadFile {
            path: "pipeline.yaml".into(),
            bytes: meta.pipeline.clone().into_bytes(),
        });
        let summary = match (shards.first(), new_rows) {
            (_, 0) | (None, _) => "distill: update the card".to_owned(),
            (Some(_), rows) => format!("distill: {rows} more rows ({})", describe(&shards)),
        };
        let commit = self.client.commit(
            &self.spec.repo,
            &self.spec.revision,
            &summary,
            &files,
            &deleted,
        )?;
        after.commits += 1;
        after.last_commit = Some(commit);
        after.last_commit_ms = distill_storage::now_ms();
        after.last_error = None;
        after.failures = 0;
        after.fatal = false;
        after.card_key = card_key;
        self.status = after;
        self.last_push = Instant::now();
        tracing::info!(
            repo = %self.spec.repo,
            rows = new_rows,
            files = files.len(),
            more,
            "pushed to the Hub"
        );
        if let Some(sink) = sink {
            sink(self.record_unit(self.offsets_unit()))?;
        }
        Ok(Round::Pushed {
            rows: new_rows,
            files: files.len(),
            more,
        })
    }

    /// Takes as pushed what the Hub holds of this run beyond the recorded offsets (the process
    /// stopped between the Hub's commit and the offsets' commit), and as not pushed what the
    /// records say was pushed but the Hub no longer holds.
    fn reconcile(
        &mut self,
        snapshot: &Snapshot,
        leaves: &[String],
        on_hub: &[String],
        tags: &BTreeMap<String, String>,
        sink: Sink<'_>,
    ) -> Result<()> {
        let mut moved = false;
        for leaf in leaves {
            let recorded = self.status.batches.get(leaf).copied().unwrap_or(0);
            let hub = on_hub
                .iter()
                .filter_map(|p| parse_shard_path(p, leaf, &tags[leaf]))
                .map(|(_, to)| to)
                .max()
                .unwrap_or(0);
            if hub == recorded {
                continue;
            }
            let (low, high) = (recorded.min(hub), recorded.max(hub));
            let mut rows = 0;
            for batch in snapshot.batches(leaf, low)?.take((high - low) as usize) {
                rows += batch?.rows.len() as u64;
            }
            let pushed = self.status.rows.entry(leaf.clone()).or_default();
            if hub > recorded {
                // Committed on the Hub, not yet recorded here.
                *pushed += rows;
            } else if rows > 0 {
                // Recorded as pushed but gone from the Hub (removed by hand): push them again.
                // (Batches without rows make no file, so their absence says nothing.)
                *pushed = pushed.saturating_sub(rows);
            } else {
                continue;
            }
            self.status.batches.insert(leaf.clone(), hub);
            moved = true;
        }
        if moved && let Some(sink) = sink {
            sink(self.record_unit(self.offsets_unit()))?;
        }
        Ok(())
    }

    /// Each leaf's tag now; a leaf whose tag changed (its batches were dropped by a changed
    /// pipeline) starts over: nothing of it counts as pushed, and its old shards are replaced.
    fn follow_leaf_tags(
        &mut self,
        snapshot: &Snapshot,
        meta: &RunMeta,
        leaves: &[String],
    ) -> Result<BTreeMap<String, String>> {
        let mut tags = BTreeMap::new();
        for leaf in leaves {
            let epoch = distill_engine::step_epoch(snapshot, leaf)?;
            let tag = leaf_tag(meta, epoch.as_deref());
            if self.status.tags.get(leaf) != Some(&tag) {
                self.status.rows.insert(leaf.clone(), 0);
                self.status.batches.insert(leaf.clone(), 0);
                self.status.schemas.remove(leaf);
                self.status.tags.insert(leaf.clone(), tag.clone());
            }
            tags.insert(leaf.clone(), tag);
        }
        Ok(tags)
    }

    fn offsets_unit(&self) -> Progress {
        self.status
            .batches
            .iter()
            .fold(Progress::new(), |unit, (leaf, next)| {
                unit.offset(offset_name(&self.spec.repo, leaf), *next)
            })
    }

    fn record_unit(&self, unit: Progress) -> Progress {
        let json = serde_json::to_vec(&self.status).unwrap_or_default();
        unit.record(record_key(&self.spec.repo), Some(json))
    }

    /// The dataset card: configs for the leaves with rows on the Hub, with their status.
    fn card(
        &self,
        snapshot: &Snapshot,
        pipeline: &PipelineSpec,
        committed: &BTreeMap<String, distill_storage::StepRecord>,
        after: &PushStatus,
    ) -> Result<String> {
        let run = snapshot.run_state()?;
        let leaves = committed
            .iter()
            .filter(|(leaf, _)| after.rows.get(*leaf).copied().unwrap_or(0) > 0)
            .map(|(leaf, record)| LeafExport {
                name: leaf.clone(),
                status: LeafStatus::of(record),
                rows: after.rows[leaf],
                batches: after.batches.get(leaf).copied().unwrap_or(0),
                error: record.error.clone(),
                files: Vec::new(),
                non_finite_as_null: BTreeMap::new(),
            })
            .collect();
        Ok(dataset_card(&Distiset {
            pipeline_name: pipeline.name.clone(),
            description: pipeline.description.clone(),
            signature: pipeline.signature(),
            run_status: run.status,
            stage: run.stage,
            snapshot_log: snapshot.log_len()?,
            format: ExportFormat::Parquet,
            leaves,
            files: Vec::new(),
        }))
    }
}

/// What the card shows that matters: the run's status and each leaf's status and rows.
fn card_key(
    snapshot: &Snapshot,
    committed: &BTreeMap<String, distill_storage::StepRecord>,
) -> distill_storage::Result<String> {
    let mut key = snapshot.run_state()?.status.to_string();
    for (leaf, record) in committed {
        key.push_str(&format!(
            ";{leaf}={}:{}",
            LeafStatus::of(record),
            record.rows
        ));
    }
    Ok(key)
}

fn describe(shards: &[Shard]) -> String {
    shards
        .iter()
        .filter(|s| s.rows > 0)
        .map(|s| format!("{} batches {}..{}", s.leaf, s.from, s.to))
        .collect::<Vec<_>>()
        .join(", ")
}
