//! A cut-short file found before it is read: a reader compares the file's length with the
//! length its redb header records, as redb's own writer does when it opens a file.
//!
//! redb's read-only open does not make this check, and a snapshot reads only the pages it
//! needs, so without it a file cut short at its end reads as if whole until a read reaches the
//! missing pages: `status` would call it finished while `export` fails. The header fields read
//! here are redb's file format 3 (redb 4.x, `tree_store/page_store/header.rs`): magic number,
//! god byte, page size, region header pages, region data pages, full regions, trailing region
//! data pages. A unit test checks the computed length against real files, so a redb upgrade
//! that moves them fails loudly.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const GOD_BYTE: usize = 9;
/// Set while a writer has the file open (and left set by one that died): the recorded layout
/// may then be mid-change, and the writer's recovery checks it instead.
const RECOVERY_REQUIRED: u8 = 2;

/// The file length the header of the redb file at `path` records, or `None` when the header
/// cannot say (not redb, too short, or a writer holds the file or died holding it).
fn recorded_length(path: &Path) -> std::io::Result<Option<u64>> {
    let mut header = [0u8; 32];
    let mut file = std::fs::File::open(path)?;
    if file.read_exact(&mut header).is_err() || header[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    if header[GOD_BYTE] & RECOVERY_REQUIRED != 0 {
        return Ok(None);
    }
    let field = |at: usize| {
        u64::from(u32::from_le_bytes([
            header[at],
            header[at + 1],
            header[at + 2],
            header[at + 3],
        ]))
    };
    let (page, region_header_pages, region_data_pages) = (field(12), field(16), field(20));
    let (full_regions, trailing_data_pages) = (field(24), field(28));
    let region = (region_header_pages + region_data_pages) * page;
    let trailing = match trailing_data_pages {
        0 => 0,
        pages => (region_header_pages + pages) * page,
    };
    // The super-header takes the first page.
    Ok(Some(page + full_regions * region + trailing))
}

/// Refuses a file shorter than its header says it is.
pub(crate) fn check_not_truncated(path: &Path) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let Some(recorded) = recorded_length(path).map_err(io)? else {
        return Ok(());
    };
    let actual = std::fs::metadata(path).map_err(io)?.len();
    if actual < recorded {
        return Err(Error::Corrupt {
            path: path.to_path_buf(),
            detail: format!(
                "the file is truncated: it has {actual} bytes, its header records {recorded}"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Batch, NewRun, Progress, Row, RunLog};

    #[test]
    fn the_recorded_length_is_the_length_of_a_closed_file_and_a_cut_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        let log = RunLog::create(
            &path,
            NewRun {
                signature: "s".into(),
                pipeline: "p".into(),
                created_by: "t".into(),
            },
        )
        .unwrap();
        for seq in 0..50 {
            let rows = (0..200)
                .map(|i| Row::new().with("t", format!("row {i} of {seq}")))
                .collect();
            log.commit(Progress::new().batch(Batch {
                step: "a".into(),
                seq,
                rows,
                last: seq == 49,
            }))
            .unwrap();
        }
        drop(log);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(recorded_length(&path).unwrap(), Some(len));
        check_not_truncated(&path).unwrap();
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 100).unwrap();
        let err = check_not_truncated(&path).unwrap_err().to_string();
        assert!(
            err.contains("truncated") && err.contains(&len.to_string()),
            "{err}"
        );
    }
}
