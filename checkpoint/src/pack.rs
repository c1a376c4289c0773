//! A snapshot made ready to upload: the run database copied from one read transaction
//! ([`distill_storage::Snapshot::copy_to`]), compressed with zstd, its sha256 and size known.
//! Both files live in a temporary folder beside the run database, removed when dropped.

use crate::error::{Error, Result};
use crate::manifest::{Manifest, SNAPSHOT_FORMAT};
use crate::target::Identity;
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// zstd level: fast (hundreds of MB/s on one core) and a good ratio on the log's rows; the
/// run goes on beside it.
const LEVEL: i32 = 3;

/// Prefix of the temporary folders, beside the run database.
pub(crate) const WORK_PREFIX: &str = ".distill-checkpoint-";

/// A compressed snapshot on local disk and its manifest.
pub(crate) struct Packed {
    /// The temporary folder (removed on drop).
    _dir: tempfile::TempDir,
    /// The compressed file.
    pub file: PathBuf,
    /// What the manifest will say.
    pub manifest: Manifest,
}

/// Makes a temporary folder in `work_dir` (the run database's folder).
pub(crate) fn work_dir(work_dir: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(WORK_PREFIX)
        .tempdir_in(work_dir)
        .map_err(Error::io(work_dir))
}

/// Removes temporary folders left by a killed process in `work_dir`.
pub(crate) fn clean_leftovers(work_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(WORK_PREFIX) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Copies and compresses `snapshot` in a temporary folder of `work_dir`.
pub(crate) fn pack(
    snapshot: &distill_storage::Snapshot,
    identity: &Identity,
    work_dir: &Path,
) -> Result<Packed> {
    let dir = self::work_dir(work_dir)?;
    let copy = dir.path().join("run.redb");
    let stats = snapshot.copy_to(&copy)?;
    let meta = snapshot.meta()?;
    let log_position = snapshot.log_len()?;
    let cache_entries = snapshot.cache_len()?;
    let run_status = snapshot.run_state()?.status;
    let taken_ms = distill_storage::now_ms();
    let name = Manifest::name_for(log_position, taken_ms);
    let file = dir.path().join("snapshot.redb.zst");
    let (size, sha256) = compress(&copy, &file)?;
    std::fs::remove_file(&copy).map_err(Error::io(&copy))?;
    let manifest = Manifest {
        format: SNAPSHOT_FORMAT,
        data: Manifest::data_path(&name),
        name,
        pipeline: identity.pipeline().to_owned(),
        shard: identity.shard_label(),
        signature: meta.signature,
        storage_format: stats.format_version,
        log_position,
        cache_entries,
        run_status: run_status.as_str().to_owned(),
        taken_ms,
        compression: "zstd".into(),
        size,
        sha256,
        db_bytes: stats.file_bytes,
        created_by: concat!("distill ", env!("CARGO_PKG_VERSION")).into(),
    };
    Ok(Packed {
        _dir: dir,
        file,
        manifest,
    })
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `from` into `to`; returns the compressed size and sha256 (hex).
fn compress(from: &Path, to: &Path) -> Result<(u64, String)> {
    let input = File::open(from).map_err(Error::io(from))?;
    let output = File::create(to).map_err(Error::io(to))?;
    let hashing = Hashing {
        inner: BufWriter::new(output),
        hash: Sha256::new(),
        bytes: 0,
    };
    let mut encoder = zstd::Encoder::new(hashing, LEVEL).map_err(Error::io(to))?;
    std::io::copy(&mut BufReader::new(input), &mut encoder).map_err(Error::io(to))?;
    let mut hashing = encoder.finish().map_err(Error::io(to))?;
    hashing.flush().map_err(Error::io(to))?;
    Ok((hashing.bytes, hex(&hashing.hash.finalize())))
}

/// sha256 and length of a file.
pub(crate) fn sha256_of(path: &Path) -> Result<(u64, String)> {
    let mut file = BufReader::new(File::open(path).map_err(Error::io(path))?);
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            return Ok((bytes, hex(&hash.finalize())));
        }
        hash.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// Decompresses `from` into `to` (created), synced to disk.
pub(crate) fn decompress(from: &Path, to: &Path) -> Result<u64> {
    let input = File::open(from).map_err(Error::io(from))?;
    let mut decoder = zstd::Decoder::new(input).map_err(Error::io(from))?;
    let mut output = File::create(to).map_err(Error::io(to))?;
    let bytes = {
        let mut writer = BufWriter::new(&mut output);
        let n = std::io::copy(&mut decoder, &mut writer).map_err(Error::io(from))?;
        writer.flush().map_err(Error::io(to))?;
        n
    };
    output.sync_all().map_err(Error::io(to))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_round_trips_and_the_hash_is_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw");
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        std::fs::write(&raw, &data).unwrap();
        let packed = dir.path().join("raw.zst");
        let (size, sha) = compress(&raw, &packed).unwrap();
        assert_eq!(sha256_of(&packed).unwrap(), (size, sha));
        assert!(size < data.len() as u64 / 4, "{size}");
        let back = dir.path().join("back");
        assert_eq!(decompress(&packed, &back).unwrap(), data.len() as u64);
        assert_eq!(std::fs::read(&back).unwrap(), data);
    }
}
