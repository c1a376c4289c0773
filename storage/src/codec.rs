//! The one place that turns records into bytes and back (bincode 2, standard configuration).
//!
//! The database stores [`FORMAT_VERSION`]; changing the encoding of any stored type means bumping
//! it, so an old build refuses a new file instead of misreading it.

use crate::error::{Error, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Version of the on-disk format written by this build.
///
/// - 1: the first format.
/// - 2: values may hold unsigned integers beyond `i64::MAX` (`Value::UInt`). Version 1 files
///   read unchanged; a writer opening one marks it 2, so an older build refuses it rather than
///   misread a value it does not know.
/// - 3: batch payloads and cached answers are zstd frames (level [`crate::ZSTD_LEVEL`]), and
///   a non-leaf step's batches its consumers are past may be deleted (`reclaimed` table).
///   Version 1 and 2 files are read, and written on in their own format (uncompressed, nothing
///   reclaimed), so a half-done run started by an older build finishes.
pub const FORMAT_VERSION: u32 = 3;

/// Encodes a record.
pub(crate) fn encode<T: Serialize>(value: &T, what: &str) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| Error::Codec {
        action: "encode",
        what: what.to_owned(),
        detail: e.to_string(),
    })
}

/// Decodes a record, refusing trailing bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let fail = |detail: String| Error::Codec {
        action: "decode",
        what: what.to_owned(),
        detail,
    };
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| fail(e.to_string()))?;
    if used != bytes.len() {
        return Err(fail(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Batch;
    use crate::value::{Row, Value};
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            // NaN is never equal to itself; it is covered by `nan_round_trips_bitwise`.
            any::<f64>()
                .prop_filter("not NaN", |f| !f.is_nan())
                .prop_map(Value::Float),
            ".{0,20}".prop_map(Value::Str),
            proptest::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::vec(("[a-z]{1,6}", inner), 0..8)
                    .prop_map(|pairs| Value::Map(pairs.into_iter().collect())),
            ]
        })
    }

    fn row() -> impl Strategy<Value = Row> {
        proptest::collection::vec(("[a-z_]{1,8}", value()), 0..8)
            .prop_map(|pairs| pairs.into_iter().collect())
    }

    proptest! {
        #[test]
        fn any_value_round_trips(v in value()) {
            let bytes = encode(&v, "value").unwrap();
            prop_assert_eq!(decode::<Value>(&bytes, "value").unwrap(), v);
        }

        #[test]
        fn any_batch_round_trips(
            step in "[a-z]{1,10}",
            seq in any::<u64>(),
            rows in proptest::collection::vec(row(), 0..20),
            last in any::<bool>(),
        ) {
            let batch = Batch { step, seq, rows, last };
            let bytes = encode(&batch, "batch").unwrap();
            prop_assert_eq!(decode::<Batch>(&bytes, "batch").unwrap(), batch);
        }
    }

    #[test]
    fn nan_round_trips_bitwise() {
        let bytes = encode(&Value::Float(f64::NAN), "value").unwrap();
        let Value::Float(back) = decode::<Value>(&bytes, "value").unwrap() else {
            panic!("not a float")
        };
        assert!(back.is_nan());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&Value::Int(7), "value").unwrap();
        bytes.push(0);
        let err = decode::<Value>(&bytes, "value").unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
    }

    #[test]
    fn garbage_is_a_codec_error_not_a_panic() {
        let err = decode::<Batch>(&[0xff; 9], "batch").unwrap_err();
        assert!(matches!(err, Error::Codec { .. }), "{err:?}");
    }
}
