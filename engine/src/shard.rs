//! Shards: one pipeline run as N processes, each with its own run database.
//!
//! Shard `I/N` runs the pipeline on its share of each generator's rows. When a generator knows
//! its row count (inline rows, files, Parquet footers), shard I reads the contiguous range
//! `[I*T/N, (I+1)*T/N)` of its T rows, so the shards' rows in shard order are the rows of a
//! one-machine run in its order. A generator that cannot count (an LLM generator) is split
//! round-robin in blocks of its `batch_size`: shard I reads blocks I, I+N, I+2N...
//!
//! Global steps are barriers (see [`Role`]): a shard stops before a stage that holds one
//! (status `at_barrier`); the global run reads every shard's committed rows of the global
//! step's predecessors, in shard order, and runs the step in its own database; shards then
//! continue from their contiguous share of its output.

use crate::error::{Error, Result};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// The record holding a database's shard role (`0/4`, `global/4`; absent: not sharded).
pub const SHARD_RECORD: &str = "shard";

/// Shard `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShardSpec {
    /// From 0.
    pub index: u32,
    /// How many shards, at least 1.
    pub count: u32,
}

impl ShardSpec {
    /// Most shards a run may have.
    pub const MAX: u32 = 100_000;

    /// Shard `index` of `count`, checked.
    pub fn new(index: u32, count: u32) -> Result<Self> {
        if count == 0 || count > Self::MAX || index >= count {
            return Err(Error::BadShard {
                detail: format!(
                    "{index}/{count}: the shard must be I/N with 0 <= I < N and 1 <= N <= {}",
                    Self::MAX
                ),
            });
        }
        Ok(Self { index, count })
    }

    /// The contiguous part of `total` rows that is this shard's.
    pub fn range(self, total: u64) -> (u64, u64) {
        let at = |i: u32| (u128::from(total) * u128::from(i) / u128::from(self.count)) as u64;
        (at(self.index), at(self.index + 1))
    }
}

impl fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for ShardSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = || Error::BadShard {
            detail: format!("'{text}': expected I/N, such as 0/4 (shard 0 of 4)"),
        };
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let i = i.trim().parse().map_err(|_| bad())?;
        let n = n.trim().parse().map_err(|_| bad())?;
        Self::new(i, n)
    }
}

/// What a run is in a sharded pipeline.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Role {
    /// The whole pipeline in one database.
    #[default]
    Single,
    /// One shard: its share of the generators' rows; stops at each global step's stage until
    /// the global database has the step's output, then takes its share of it.
    Shard {
        /// Which shard.
        spec: ShardSpec,
        /// The global run's database, read (never written) for global steps' output.
        global_db: PathBuf,
    },
    /// The global steps, over the shards' committed rows (their databases only read).
    Global {
        /// The shards' databases; each one's recorded shard spec says its place.
        shards: Vec<PathBuf>,
    },
}

impl Role {
    /// The text recorded in the database under [`SHARD_RECORD`] (`None`: not sharded).
    pub fn record(&self) -> Option<String> {
        match self {
            Role::Single => None,
            Role::Shard { spec, .. } => Some(spec.to_string()),
            Role::Global { shards } => Some(format!("global/{}", shards.len())),
        }
    }

    /// How many shards share the pipeline's limits (1 unsharded).
    pub fn shard_count(&self) -> u32 {
        match self {
            Role::Single => 1,
            Role::Shard { spec, .. } => spec.count,
            Role::Global { shards } => u32::try_from(shards.len()).unwrap_or(u32::MAX),
        }
    }
}

/// How a generator's own rows map to a shard's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardView {
    /// Every row (unsharded).
    All,
    /// Rows `[start, end)` of the generator.
    Range {
        /// First row.
        start: u64,
        /// One past the last row.
        end: u64,
    },
    /// Blocks of `block` rows, round-robin: block `k` of the shard is the generator's block
    /// `index + k * count`.
    Blocks {
        /// The shard.
        spec: ShardSpec,
        /// Rows per block (the generator's batch size).
        block: u64,
    },
}

impl ShardView {
    /// Where the shard's row `offset` is in the generator's rows, and how many rows may be
    /// read from there (`count` at most) without leaving the shard's part.
    pub fn locate(self, offset: u64, count: usize) -> (u64, usize) {
        match self {
            ShardView::All => (offset, count),
            ShardView::Range { start, end } => {
                let at = start.saturating_add(offset).min(end);
                let left = usize::try_from(end - at).unwrap_or(usize::MAX);
                (at, count.min(left))
            }
            ShardView::Blocks { spec, block } => {
                let k = offset / block;
                let within = offset % block;
                let global_block = u64::from(spec.index) + k * u64::from(spec.count);
                let left = usize::try_from(block - within).unwrap_or(usize::MAX);
                (global_block * block + within, count.min(left))
            }
        }
    }

    /// Whether the shard's part ends after its row `next` (exclusive), given that the
    /// generator said `generator_last` about the rows just read.
    pub fn ends(self, next: u64, generator_last: bool) -> bool {
        match self {
            ShardView::All => generator_last,
            ShardView::Range { start, end } => generator_last || start + next >= end,
            // The next block of this shard starts N-1 blocks later: past the generator's end
            // it reads no rows and the generator says it is the last.
            ShardView::Blocks { .. } => generator_last,
        }
    }
}

/// Shards whose databases are not at the global step's barrier yet.
#[derive(Debug, Clone, PartialEq)]
pub struct Behind {
    /// Each such shard's database and where it stands.
    pub shards: Vec<(PathBuf, String)>,
}

impl fmt::Display for Behind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .shards
            .iter()
            .map(|(db, why)| format!("{} ({why})", db.display()))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_refuse_what_is_not_a_shard() {
        assert_eq!(
            "1/4".parse::<ShardSpec>().unwrap(),
            ShardSpec { index: 1, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3", "1/100001"] {
            let err = bad.parse::<ShardSpec>().unwrap_err().to_string();
            assert!(err.contains("shard"), "{bad}: {err}");
        }
    }

    #[test]
    fn ranges_cover_every_row_once_in_order() {
        for total in [0u64, 1, 7, 10, 1001] {
            for count in [1u32, 2, 3, 4, 7] {
                let mut next = 0;
                for index in 0..count {
                    let (a, b) = ShardSpec { index, count }.range(total);
                    assert_eq!(a, next);
                    next = b;
                }
                assert_eq!(next, total);
            }
        }
    }

    #[test]
    fn blocks_go_round_robin() {
        let view = ShardView::Blocks {
            spec: ShardSpec { index: 1, count: 3 },
            block: 10,
        };
        assert_eq!(view.locate(0, 10), (10, 10));
        assert_eq!(view.locate(10, 10), (40, 10));
        assert_eq!(view.locate(15, 10), (45, 5));
        let range = ShardView::Range { start: 5, end: 9 };
        assert_eq!(range.locate(2, 10), (7, 2));
        assert!(range.ends(4, false));
        assert!(!range.ends(3, false));
    }
}
