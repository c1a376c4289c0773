//! How a run database's bulky values (batch payloads, cached answers) are stored: zstd frames
//! in files of format version 3 and later, plain bytes in older ones. The file's format
//! version says which; a file keeps the compression it was created with, so an old half-done
//! run finishes in its own format.

use crate::error::{Error, Result};
use std::borrow::Cow;
use std::cell::RefCell;

/// zstd level of the payloads written. Level 1 compresses the log's batches to within a few
/// per cent of level 3, at about twice the speed (bench `codec_choice`).
pub const ZSTD_LEVEL: i32 = 1;

/// First format version whose batch payloads and cached answers are zstd frames.
pub(crate) const FIRST_COMPRESSED: u32 = 3;

/// The compression of a file's payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Compression {
    /// Stored as encoded (format versions 1 and 2).
    #[default]
    None,
    /// zstd frames at [`ZSTD_LEVEL`], with their content size.
    Zstd,
}

/// How long a batch stays in the log, which decides how it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchLife {
    /// Kept (a leaf, an output a later stage reads, `keep_intermediate`): compressed.
    Kept,
    /// Deleted once its consumers committed past it: stored without compressing, since it
    /// lives for a few commits and compressing it costs more than its bytes do.
    Transient,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn fail(action: &'static str, what: &str, detail: impl ToString) -> Error {
    Error::Codec {
        action,
        what: what.to_owned(),
        detail: detail.to_string(),
    }
}

impl Compression {
    /// The compression of files of format `version`.
    pub(crate) fn of_format(version: u32) -> Self {
        if version >= FIRST_COMPRESSED {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The stored form of `bytes`. `what` names the value in errors.
    pub(crate) fn pack(self, bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
        match self {
            Compression::None => Ok(bytes),
            Compression::Zstd => COMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    let mut c = zstd::bulk::Compressor::new(ZSTD_LEVEL)
                        .map_err(|e| fail("compress", what, e))?;
                    c.include_contentsize(true)
                        .map_err(|e| fail("compress", what, e))?;
                    *cell = Some(c);
                }
                let c = cell.as_mut().expect("set above");
                c.compress(&bytes).map_err(|e| fail("compress", what, e))
            }),
        }
    }

    /// The stored form of a batch that lives only until its consumers pass it (reclaimed):
    /// under zstd, a frame of raw blocks (see [`raw_frame`]): any zstd reader reads it, and
    /// writing it costs a copy instead of a compression.
    pub(crate) fn pack_transient(self, bytes: Vec<u8>) -> Vec<u8> {
        match self {
            Compression::None => bytes,
            Compression::Zstd => raw_frame(&bytes),
        }
    }

    /// The encoded bytes of a stored value. `what` names the value in errors.
    pub(crate) fn unpack<'a>(self, stored: &'a [u8], what: &str) -> Result<Cow<'a, [u8]>> {
        match self {
            Compression::None => Ok(Cow::Borrowed(stored)),
            Compression::Zstd => {
                let size = zstd::zstd_safe::get_frame_content_size(stored)
                    .map_err(|e| fail("decompress", what, format!("not a zstd frame: {e:?}")))?
                    .ok_or_else(|| fail("decompress", what, "a zstd frame without its size"))?;
                // A damaged size must not make us allocate without bound.
                if size > MAX_VALUE_BYTES {
                    return Err(fail(
                        "decompress",
                        what,
                        format!("a frame of {size} bytes (most: {MAX_VALUE_BYTES})"),
                    ));
                }
                DECOMPRESSOR.with(|cell| {
                    let mut cell = cell.borrow_mut();
                    if cell.is_none() {
                        *cell = Some(
                            zstd::bulk::Decompressor::new()
                                .map_err(|e| fail("decompress", what, e))?,
                        );
                    }
                    let d = cell.as_mut().expect("set above");
                    let out = d
                        .decompress(stored, size as usize)
                        .map_err(|e| fail("decompress", what, e))?;
                    if out.len() as u64 != size {
                        return Err(fail(
                            "decompress",
                            what,
                            format!("{} bytes, the frame says {size}", out.len()),
                        ));
                    }
                    Ok(Cow::Owned(out))
                })
            }
        }
    }
}

/// Largest block of a zstd frame (RFC 8878, `Block_Maximum_Size`).
const MAX_BLOCK: usize = 128 << 10;

/// `bytes` as a zstd frame (RFC 8878) of raw (stored) blocks with its content size: a valid
/// frame any zstd decoder reads, built without compressing. zstd's API has no "store" level
/// (level 0 means the default, 3), and the frame layout is three fields: the magic number, a
/// header (single segment, 8-byte content size), then blocks of at most 128 KiB, each behind
/// a 3-byte header (last-block bit, type 0 = raw, size).
fn raw_frame(bytes: &[u8]) -> Vec<u8> {
    let blocks = bytes.len().div_ceil(MAX_BLOCK).max(1);
    let mut out = Vec::with_capacity(4 + 1 + 8 + 3 * blocks + bytes.len());
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame_Content_Size_flag 3 (8 bytes), Single_Segment_flag, no checksum, no dictionary.
    out.push(0b1110_0000);
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    let mut chunks = bytes.chunks(MAX_BLOCK).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0]);
    }
    while let Some(chunk) = chunks.next() {
        let last = u32::from(chunks.peek().is_none());
        let header = last | ((chunk.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(chunk);
    }
    out
}

/// Largest value a frame may decompress to (a batch is far smaller: rows are bounded).
const MAX_VALUE_BYTES: u64 = 4 << 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zstd_round_trips_and_shrinks_text() {
        let text = "the cat sat on the mat; ".repeat(200).into_bytes();
        let packed = Compression::Zstd.pack(text.clone(), "text").unwrap();
        assert!(packed.len() * 10 < text.len(), "{} bytes", packed.len());
        let back = Compression::Zstd.unpack(&packed, "text").unwrap();
        assert_eq!(&*back, text.as_slice());
    }

    #[test]
    fn raw_frames_are_read_by_zstd_at_every_block_boundary() {
        for len in [
            0,
            1,
            1000,
            MAX_BLOCK - 1,
            MAX_BLOCK,
            MAX_BLOCK + 1,
            3 * MAX_BLOCK + 7,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let frame = Compression::Zstd.pack_transient(bytes.clone());
            // The official decoder, with and without the recorded size.
            assert_eq!(zstd::decode_all(frame.as_slice()).unwrap(), bytes, "{len}");
            let back = Compression::Zstd.unpack(&frame, "raw").unwrap();
            assert_eq!(&*back, bytes.as_slice(), "{len}");
        }
        assert_eq!(Compression::None.pack_transient(vec![4, 5]), vec![4, 5]);
    }

    #[test]
    fn none_stores_the_bytes_as_they_are() {
        let packed = Compression::None.pack(vec![1, 2, 3], "x").unwrap();
        assert_eq!(packed, vec![1, 2, 3]);
        assert_eq!(
            &*Compression::None.unpack(&packed, "x").unwrap(),
            &[1, 2, 3]
        );
    }

    #[test]
    fn a_damaged_frame_is_a_codec_error() {
        let mut packed = Compression::Zstd
            .pack(b"some text to pack".repeat(10), "x")
            .unwrap();
        let n = packed.len();
        packed.truncate(n - 3);
        let err = Compression::Zstd.unpack(&packed, "batch 3").unwrap_err();
        assert!(matches!(err, Error::Codec { .. }), "{err:?}");
        assert!(err.to_string().contains("batch 3"), "{err}");
        let err = Compression::Zstd.unpack(b"plain", "batch 4").unwrap_err();
        assert!(err.to_string().contains("batch 4"), "{err}");
    }
}
