//! Parquet shards of committed leaf batches, with names derived from the run and the batch
//! range: the same batches always make the same file under the same name.

use crate::error::{Error, Result};
use distill_distiset::{Inferred, write_parquet_counted};
use distill_storage::Batch;

/// Most rows in one shard; a longer range of batches is cut into several shards.
pub(crate) const MAX_SHARD_ROWS: usize = 100_000;

/// A shard ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct Shard {
    /// The leaf (the config).
    pub leaf: String,
    /// First batch in the shard.
    pub from: u64,
    /// One past the last batch.
    pub to: u64,
    /// Rows in it.
    pub rows: u64,
    /// The Parquet file (empty when the batches hold no row: nothing is uploaded).
    pub bytes: Vec<u8>,
    /// The column types it was written with: those of the leaf's earlier shards merged with
    /// its own rows' (see [`build_shards`]).
    pub schema: Inferred,
}

impl Shard {
    /// Path in the repository: `LEAF/train/RUNTAG-FROM-TO.parquet`.
    pub fn path(&self, run_tag: &str) -> String {
        shard_path(&self.leaf, run_tag, self.from, self.to)
    }
}

/// Path of the shard holding batches `from..to` of `leaf` in run `run_tag`.
pub(crate) fn shard_path(leaf: &str, run_tag: &str, from: u64, to: u64) -> String {
    format!("{leaf}/train/{run_tag}-{from:08}-{to:08}.parquet")
}

/// The batch range of a shard path of `leaf` and `run_tag`, if it is one.
pub(crate) fn parse_shard_path(path: &str, leaf: &str, run_tag: &str) -> Option<(u64, u64)> {
    let name = path
        .strip_prefix(leaf)?
        .strip_prefix("/train/")?
        .strip_prefix(run_tag)?
        .strip_prefix('-')?
        .strip_suffix(".parquet")?;
    let (from, to) = name.split_once('-')?;
    let (from, to) = (from.parse().ok()?, to.parse().ok()?);
    (from < to).then_some((from, to))
}

/// Whether `path` is a data file of `leaf`'s config.
pub(crate) fn is_data_file(path: &str, leaf: &str) -> bool {
    path.strip_prefix(leaf)
        .and_then(|p| p.strip_prefix("/train/"))
        .is_some_and(|name| !name.contains('/'))
}

/// Cuts consecutive batches of `leaf` (starting at batch `from`, read as they come) into shards
/// of at most [`MAX_SHARD_ROWS`] rows, cut at batch boundaries.
///
/// Each shard is written with the types of `earlier` (the leaf's shards so far) merged with its
/// own rows': a column that is all null here keeps the type it had, so the files of a config
/// agree on their schema wherever the values allow it.
pub(crate) fn build_shards(
    leaf: &str,
    from: u64,
    batches: impl IntoIterator<Item = distill_storage::Result<Batch>>,
    earlier: &Inferred,
) -> Result<Vec<Shard>> {
    let mut schema = earlier.clone();
    let mut shards = Vec::new();
    let mut group: Vec<Batch> = Vec::new();
    let mut rows = 0;
    let mut start = from;
    for batch in batches {
        let batch = batch?;
        rows += batch.rows.len();
        group.push(batch);
        if rows >= MAX_SHARD_ROWS {
            let shard = write(leaf, start, std::mem::take(&mut group), &schema)?;
            start = shard.to;
            schema = shard.schema.clone();
            shards.push(shard);
            rows = 0;
        }
    }
    if !group.is_empty() {
        shards.push(write(leaf, start, group, &schema)?);
    }
    Ok(shards)
}

fn write(leaf: &str, from: u64, batches: Vec<Batch>, earlier: &Inferred) -> Result<Shard> {
    let to = from + batches.len() as u64;
    let mut inferred = earlier.clone();
    let mut rows = 0;
    for batch in &batches {
        rows += batch.rows.len() as u64;
        for row in &batch.rows {
            inferred.add(row);
        }
    }
    let mut bytes = Vec::new();
    if rows > 0 {
        let rows = batches
            .into_iter()
            .map(|b| Ok::<_, distill_distiset::Error>(b.rows));
        let written;
        (bytes, written) =
            write_parquet_counted(Vec::new(), &inferred, rows).map_err(|source| Error::Shard {
                leaf: leaf.to_owned(),
                source,
            })?;
        // Float columns keep NaN and infinities; only JSON text (a column of mixed kinds) cannot.
        for (column, n) in &written.non_finite_as_null {
            tracing::warn!(
                leaf,
                column = column.as_str(),
                "shard of batches {from}..{to}: {n} NaN or infinite values written as null in a text column (JSON has no such numbers)"
            );
        }
    }
    Ok(Shard {
        leaf: leaf.to_owned(),
        from,
        to,
        rows,
        bytes,
        schema: inferred,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use distill_storage::Row;

    fn batch(seq: u64, rows: usize) -> Batch {
        Batch {
            step: "leaf".into(),
            seq,
            rows: (0..rows).map(|i| Row::new().with("i", i as i64)).collect(),
            last: false,
        }
    }

    #[test]
    fn a_later_shard_keeps_the_types_of_the_earlier_ones() {
        use distill_distiset::Ty;
        let ints = Batch {
            rows: vec![Row::new().with("score", 3).with("why", "ok")],
            ..batch(0, 0)
        };
        let nulls = Batch {
            seq: 1,
            rows: vec![Row::new().with("score", distill_storage::Value::Null)],
            ..batch(1, 0)
        };
        let first = build_shards("leaf", 0, [Ok(ints)], &Inferred::default()).unwrap();
        let second = build_shards("leaf", 1, [Ok(nulls)], &first[0].schema).unwrap();
        assert_eq!(
            second[0].schema.columns,
            vec![("score".into(), Ty::NonNegInt), ("why".into(), Ty::Str)]
        );
        // Alone, the second shard would have been a text column of nulls without `why`.
        let alone = build_shards("leaf", 1, [Ok(batch(1, 0))], &Inferred::default());
        assert!(alone.unwrap()[0].schema.columns.is_empty());
    }

    #[test]
    fn names_round_trip_and_belong_to_their_run() {
        let path = shard_path("gen", "abcd1234", 3, 17);
        assert_eq!(path, "gen/train/abcd1234-00000003-00000017.parquet");
        assert_eq!(parse_shard_path(&path, "gen", "abcd1234"), Some((3, 17)));
        assert_eq!(parse_shard_path(&path, "gen", "ffff0000"), None);
        assert_eq!(parse_shard_path(&path, "ge", "abcd1234"), None);
        assert!(is_data_file(&path, "gen"));
        assert!(!is_data_file("gen/README.md", "gen"));
        assert!(!is_data_file("generate/train/x.parquet", "gen"));
    }

    #[test]
    fn shards_are_cut_at_batch_boundaries_and_are_deterministic() {
        let batches = || (0..5).map(|s| Ok(batch(10 + s, MAX_SHARD_ROWS / 2)));
        let none = Inferred::default();
        let a = build_shards("leaf", 10, batches(), &none).unwrap();
        let ranges: Vec<(u64, u64)> = a.iter().map(|s| (s.from, s.to)).collect();
        assert_eq!(ranges, vec![(10, 12), (12, 14), (14, 15)]);
        assert_eq!(
            a.iter().map(|s| s.rows).sum::<u64>(),
            5 * MAX_SHARD_ROWS as u64 / 2
        );
        let b = build_shards("leaf", 10, batches(), &none).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.bytes == y.bytes));
        assert!(a[0].bytes.starts_with(b"PAR1"));
        let empty = build_shards("leaf", 0, vec![Ok(batch(0, 0))], &none).unwrap();
        assert_eq!((empty[0].rows, empty[0].bytes.len()), (0, 0));
    }
}
