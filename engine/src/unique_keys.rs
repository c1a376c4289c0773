//! Deserializers that refuse a key written twice in one mapping (YAML and JSON would otherwise
//! keep the last one silently), for a step's `params` and its column mappings.

use serde::Deserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;

/// A step's `params`: a mapping (or nothing), with no key twice at any depth.
pub(crate) fn params<'de, D: Deserializer<'de>>(d: D) -> Result<serde_json::Value, D::Error> {
    let value = d.deserialize_any(JsonVisitor)?;
    match value {
        serde_json::Value::Null | serde_json::Value::Object(_) => Ok(value),
        other => Err(de::Error::custom(format!(
            "`params` must be a mapping of parameter names to values, not {}",
            kind(&other)
        ))),
    }
}

/// A mapping of names to names, with no key twice.
pub(crate) fn names<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct NamesVisitor;
    impl<'de> Visitor<'de> for NamesVisitor {
        type Value = BTreeMap<String, String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping of names to column names")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((key, value)) = map.next_entry::<String, String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!(
                        "the key `{key}` is written twice"
                    )));
                }
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    d.deserialize_map(NamesVisitor)
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "nothing",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

/// Builds a JSON value like serde_json's own, refusing duplicate keys.
struct JsonVisitor;

/// One value, through [`JsonVisitor`].
struct Unique(serde_json::Value);

impl<'de> de::Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JsonVisitor).map(Unique)
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        serde_json::Number::from_f64(v).map(Into::into).ok_or_else(|| {
            E::custom(format!(
                "{v} is not a number parameters can hold (no NaN or infinity): write null or a string"
            ))
        })
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(v.into())
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(serde_json::Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "the key `{key}` is written twice"
                )));
            }
            let Unique(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(serde_json::Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use crate::spec::PipelineSpec;
    use std::path::Path;

    fn parse(yaml: &str) -> Result<PipelineSpec, String> {
        PipelineSpec::from_yaml(yaml, Path::new("p.yaml")).map_err(|e| e.to_string())
    }

    #[test]
    fn a_parameter_written_twice_is_refused_at_any_depth() {
        let err = parse("name: p\nsteps:\n  - name: a\n    type: inline\n    params:\n      rows: []\n      rows: [{x: 1}]\n").unwrap_err();
        assert!(err.contains("`rows` is written twice"), "{err}");
        let err =
            parse("name: p\nsteps:\n  - name: a\n    type: t\n    params: {g: {x: 1, x: 2}}\n")
                .unwrap_err();
        assert!(err.contains("`x` is written twice"), "{err}");
        let err =
            parse("name: p\nsteps:\n  - name: a\n    type: t\n    input_mappings: {a: b, a: c}\n")
                .unwrap_err();
        assert!(err.contains("`a` is written twice"), "{err}");
        assert!(
            parse(
                "name: p\nsteps:\n  - name: a\n    type: t\n    params: {x: [1, {y: 2}], z: null}\n"
            )
            .is_ok()
        );
    }

    #[test]
    fn nan_and_infinity_in_parameters_are_refused_not_turned_into_null() {
        for literal in [".nan", ".inf", "-.inf"] {
            let err = parse(&format!(
                "name: p\nsteps:\n  - name: a\n    type: inline\n    params: {{rows: [{{x: {literal}}}]}}\n"
            ))
            .unwrap_err();
            assert!(
                err.contains("no NaN or infinity") && err.contains("line"),
                "{err}"
            );
        }
    }

    #[test]
    fn params_must_be_a_mapping() {
        let err = parse("name: p\nsteps:\n  - name: a\n    type: inline\n    params: [rows, 1]\n")
            .unwrap_err();
        assert!(
            err.contains("`params` must be a mapping") && err.contains("a list"),
            "{err}"
        );
        let err = parse("name: p\nsteps:\n  - name: a\n    type: inline\n    params: rows\n")
            .unwrap_err();
        assert!(err.contains("not a string"), "{err}");
    }
}
