//! Where snapshots go: the target URL, parsed, and the run's identity, which becomes the
//! folder of its snapshots under the target.
//!
//! A target holds the snapshots of many runs: each run (and each shard of a run, once runs are
//! sharded) writes under `IDENTITY/` = `PIPELINE/shard-I-of-N/`, so a requeued array task on
//! another node finds its own shard's snapshots with the same URL and the same pipeline.

use crate::error::{Error, Result};
use distill_engine::CheckpointSpec;
use sha2::{Digest, Sha256};

/// A parsed checkpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (checked to hold no credentials).
    pub url: String,
    /// Which kind of store, and where in it.
    pub place: Place,
}

/// A target's store and the folder in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// An object store: `s3`, `gs`, `az` (a bucket or container) or `file` (a directory).
    Objects {
        /// The URL scheme.
        scheme: String,
        /// The bucket or container (empty for `file`).
        bucket: String,
        /// The folder in it, without leading or trailing `/`.
        prefix: String,
    },
    /// A dataset repository on the Hugging Face Hub (created private when missing).
    Hub {
        /// `namespace/name`.
        repo: String,
        /// The folder in it, without leading or trailing `/`.
        prefix: String,
    },
}

impl Target {
    /// Parses `url`: `s3://BUCKET/PREFIX`, `gs://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`,
    /// `file:///DIR` or `hf://datasets/NAMESPACE/NAME/PREFIX`.
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |detail: String| Error::BadUrl {
            url: crate::secrets::redact_url(url),
            detail,
        };
        CheckpointSpec::check_url(url).map_err(bad)?;
        let (scheme, rest) = url.split_once("://").unwrap_or_default();
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        if segments.iter().any(|s| *s == "." || *s == "..") {
            return Err(bad("`.` and `..` are not allowed in the path".into()));
        }
        let place = match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad(
                        "a file URL needs an absolute path: file:///DIR (three slashes)".into(),
                    ));
                }
                Place::Objects {
                    scheme: scheme.to_owned(),
                    bucket: String::new(),
                    prefix: segments.join("/"),
                }
            }
            "hf" => match segments.as_slice() {
                ["datasets", namespace, name, prefix @ ..] => {
                    let repo = format!("{namespace}/{name}");
                    distill_engine::PushSpec::check_repo(&repo).map_err(|e| bad(e.to_string()))?;
                    Place::Hub {
                        repo,
                        prefix: prefix.join("/"),
                    }
                }
                _ => {
                    return Err(bad(
                        "a Hub target is hf://datasets/NAMESPACE/NAME (a dataset repository)"
                            .into(),
                    ));
                }
            },
            _ => {
                let (bucket, prefix) = segments.split_first().unwrap_or((&"", &[]));
                Place::Objects {
                    scheme: scheme.to_owned(),
                    bucket: (*bucket).to_owned(),
                    prefix: prefix.join("/"),
                }
            }
        };
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            place,
        })
    }

    /// The folder of `identity`'s snapshots, from the root of the store (the bucket, the
    /// file system's root, the repository).
    pub fn folder(&self, identity: &Identity) -> String {
        let prefix = match &self.place {
            Place::Objects { prefix, .. } | Place::Hub { prefix, .. } => prefix,
        };
        if prefix.is_empty() {
            identity.folder()
        } else {
            format!("{prefix}/{}", identity.folder())
        }
    }
}

/// Which run (and which shard of it) snapshots belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pipeline: String,
    shard: u32,
    shards: u32,
}

impl Identity {
    /// The whole run of the pipeline named `pipeline` (shard 0 of 1).
    pub fn of_pipeline(pipeline: &str) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            shard: 0,
            shards: 1,
        }
    }

    /// Shard `shard` of `shards` of the same pipeline's run.
    pub fn shard(mut self, shard: u32, shards: u32) -> Self {
        self.shard = shard;
        self.shards = shards.max(1);
        self
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// `I-of-N`.
    pub fn shard_label(&self) -> String {
        format!("{}-of-{}", self.shard, self.shards)
    }

    /// `PIPELINE/shard-I-of-N`, the pipeline's name made safe for a path: kept as is when it
    /// is letters, digits, `.`, `-` and `_`; else those characters and a hash of the name.
    pub fn folder(&self) -> String {
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
        let name = &self.pipeline;
        let folder = if !name.is_empty() && name.chars().all(safe) && !name.starts_with('.') {
            name.clone()
        } else {
            let kept: String = name
                .chars()
                .map(|c| if safe(c) { c } else { '_' })
                .take(64)
                .collect();
            let hash = Sha256::digest(name.as_bytes());
            let hex: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
            format!("{}-{hex}", kept.trim_start_matches('.'))
        };
        format!("{folder}/shard-{}", self.shard_label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_become_a_store_and_a_folder() {
        let id = Identity::of_pipeline("my-run");
        let t = Target::parse("s3://bucket/a/b/").unwrap();
        assert_eq!(
            t.place,
            Place::Objects {
                scheme: "s3".into(),
                bucket: "bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(t.folder(&id), "a/b/my-run/shard-0-of-1");
        assert_eq!(t.url, "s3://bucket/a/b");
        let t = Target::parse("file:///tmp/ck").unwrap();
        assert_eq!(t.folder(&id), "tmp/ck/my-run/shard-0-of-1");
        let t = Target::parse("hf://datasets/acme/ckpt").unwrap();
        assert_eq!(
            t.place,
            Place::Hub {
                repo: "acme/ckpt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(t.folder(&id.clone().shard(3, 8)), "my-run/shard-3-of-8");
        for (bad, says) in [
            ("hf://models/acme/x", "dataset repository"),
            ("hf://datasets/acme", "dataset repository"),
            ("file://relative/dir", "absolute path"),
            ("s3://b/../etc", "not allowed"),
            ("s3://AKIA:SECRET@b/p", "credentials"),
        ] {
            let err = Target::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(says) && !err.contains("SECRET"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_pipeline_name_is_made_safe_for_a_path() {
        assert_eq!(
            Identity::of_pipeline("a.b_c-1").folder(),
            "a.b_c-1/shard-0-of-1"
        );
        let odd = Identity::of_pipeline("my run/2").folder();
        assert!(
            odd.starts_with("my_run_2-") && odd.ends_with("/shard-0-of-1"),
            "{odd}"
        );
        assert_ne!(odd, Identity::of_pipeline("my run_2").folder());
        assert!(!Identity::of_pipeline("..").folder().starts_with('.'));
    }
}
