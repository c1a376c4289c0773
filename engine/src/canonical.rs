//! Canonical forms that identities are computed from: pipeline signatures, request-cache keys
//! and dedup keys. They depend on content only, never on the storage format or key order.

use distill_storage::Value;

/// `value` with every object's keys sorted, recursively: two JSON documents that differ only
/// in key order have the same canonical form (and the same text).
pub fn canonical_json(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            serde_json::Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical_json(&map[k])))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical_json).collect())
        }
        other => other.clone(),
    }
}

/// Feeds `value` to `hasher` in a fixed, self-delimiting form: a tag byte per kind, lengths
/// before contents, map entries in their order. Equal values hash equally and values of
/// different kinds never do (`1` and `1.0` differ).
pub fn hash_value(hasher: &mut blake3::Hasher, value: &Value) {
    match value {
        Value::Null => {
            hasher.update(&[0]);
        }
        Value::Bool(b) => {
            hasher.update(&[1, u8::from(*b)]);
        }
        Value::Int(i) => {
            hasher.update(&[2]);
            hasher.update(&i.to_le_bytes());
        }
        Value::UInt(u) => {
            hasher.update(&[8]);
            hasher.update(&u.to_le_bytes());
        }
        Value::Float(f) => {
            hasher.update(&[3]);
            hasher.update(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => {
            hasher.update(&[4]);
            hash_bytes(hasher, s.as_bytes());
        }
        Value::Bytes(b) => {
            hasher.update(&[5]);
            hash_bytes(hasher, b);
        }
        Value::List(items) => {
            hasher.update(&[6]);
            hasher.update(&(items.len() as u64).to_le_bytes());
            for item in items {
                hash_value(hasher, item);
            }
        }
        Value::Map(row) => {
            hasher.update(&[7]);
            hasher.update(&(row.len() as u64).to_le_bytes());
            for (key, item) in row.iter() {
                hash_bytes(hasher, key.as_bytes());
                hash_value(hasher, item);
            }
        }
    }
}

fn hash_bytes(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use distill_storage::Row;

    fn digest(values: &[Value]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for v in values {
            hash_value(&mut h, v);
        }
        *h.finalize().as_bytes()
    }

    #[test]
    fn key_order_does_not_change_the_canonical_form() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": 2}}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"c": 2, "d": [1, {"y": 1, "z": 0}]}, "b": 1}"#).unwrap();
        assert_eq!(
            canonical_json(&a).to_string(),
            canonical_json(&b).to_string()
        );
        assert_eq!(
            canonical_json(&a).to_string(),
            r#"{"a":{"c":2,"d":[1,{"y":1,"z":0}]},"b":1}"#
        );
    }

    #[test]
    fn value_hashes_tell_kinds_and_boundaries_apart() {
        assert_ne!(digest(&[Value::Int(1)]), digest(&[Value::Float(1.0)]));
        assert_ne!(
            digest(&[Value::from("ab"), Value::from("c")]),
            digest(&[Value::from("a"), Value::from("bc")])
        );
        assert_ne!(
            digest(&[Value::from("x")]),
            digest(&[Value::Bytes(b"x".to_vec())])
        );
        let m = |k: &str| Value::Map(Row::new().with(k, 1));
        assert_ne!(digest(&[m("a")]), digest(&[m("b")]));
        assert_eq!(
            digest(&[Value::from(vec![1, 2])]),
            digest(&[Value::from(vec![1, 2])])
        );
        // Fixed across builds and storage formats: a change here changes dedup results.
        assert_eq!(
            blake3::Hash::from(digest(&[Value::from("hello")])).to_hex()[..16].to_string(),
            {
                let mut h = blake3::Hasher::new();
                h.update(&[4]);
                h.update(&5u64.to_le_bytes());
                h.update(b"hello");
                h.finalize().to_hex()[..16].to_string()
            }
        );
    }
}
