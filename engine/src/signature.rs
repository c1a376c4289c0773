//! Step signatures: what identifies a step's output, so that a changed pipeline keeps the
//! committed batches of every step whose output cannot have changed.
//!
//! A step's signature is the blake3 hash of its type, its parameters (without the operational
//! ones its type declares, see [`Registry::set_operational`]), its column mappings, its failure
//! policy, its batch size and the signatures of its predecessors, in order. So a change
//! anywhere upstream changes every signature downstream of it, and a change of an endpoint or
//! a concurrency changes none.

use crate::canonical::canonical_json;
use crate::registry::Registry;
use crate::spec::{PipelineSpec, StepSpec};
use std::collections::{BTreeMap, HashMap};

/// The signature of every step of `spec`, by name. Steps are signed after their
/// predecessors (Kahn's order, so a pipeline of any length is signed without deep recursion);
/// a predecessor that does not exist, or a step on a cycle, contributes its name instead, so a
/// broken stored pipeline still gets signatures (which then match nothing of a valid one).
pub fn step_signatures(spec: &PipelineSpec, registry: &Registry) -> BTreeMap<String, String> {
    step_signatures_with(spec, registry, &BTreeMap::new())
}

/// [`step_signatures`], with the code version of the steps that have one (by name; see
/// [`crate::step::Lifecycle::code_version`]) in their identity.
pub fn step_signatures_with(
    spec: &PipelineSpec,
    registry: &Registry,
    code: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let index: HashMap<&str, usize> = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let n = spec.steps.len();
    let mut succs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut missing = vec![0usize; n];
    for (i, step) in spec.steps.iter().enumerate() {
        for pred in &step.after {
            if let Some(&p) = index.get(pred.as_str()) {
                succs[p].push(i);
                missing[i] += 1;
            }
        }
    }
    let mut ready: Vec<usize> = (0..n).filter(|&i| missing[i] == 0).collect();
    let mut signed: Vec<Option<String>> = vec![None; n];
    while let Some(i) = ready.pop() {
        signed[i] = Some(sign(&spec.steps[i], &index, &signed, registry, code));
        for &j in &succs[i] {
            missing[j] -= 1;
            if missing[j] == 0 {
                ready.push(j);
            }
        }
    }
    // Steps on a cycle: signed with what is known.
    for i in 0..n {
        if signed[i].is_none() {
            signed[i] = Some(sign(&spec.steps[i], &index, &signed, registry, code));
        }
    }
    spec.steps
        .iter()
        .zip(signed)
        .map(|(step, sig)| (step.name.clone(), sig.unwrap_or_default()))
        .collect()
}

fn sign(
    step: &StepSpec,
    index: &HashMap<&str, usize>,
    signed: &[Option<String>],
    registry: &Registry,
    code: &BTreeMap<String, String>,
) -> String {
    let after: Vec<String> = step
        .after
        .iter()
        .map(|pred| {
            index
                .get(pred.as_str())
                .and_then(|&p| signed[p].clone())
                .unwrap_or_else(|| format!("missing:{pred}"))
        })
        .collect();
    // No parameters are written `params: {}` by the builder and not at all in YAML (null):
    // the same step either way.
    let empty = step.params.as_object().is_some_and(|m| m.is_empty());
    let mut params = if empty {
        serde_json::Value::Null
    } else {
        step.params.clone()
    };
    if let Some(map) = params.as_object_mut() {
        for key in registry.operational(&step.kind) {
            map.remove(key);
        }
    }
    let mut identity = serde_json::json!({
        "type": step.kind,
        "params": canonical_json(&params),
        "input_mappings": step.input_mappings,
        "output_mappings": step.output_mappings,
        "on_error": step.on_error,
        "batch_size": step.batch_size,
        "input_batch_size": step.input_batch_size,
        "after": after,
    });
    // Only steps with code of their own have the key, so built-in steps keep the signatures
    // their runs recorded.
    if let (Some(version), Some(map)) = (code.get(&step.name), identity.as_object_mut()) {
        map.insert("code".into(), serde_json::Value::String(version.clone()));
    }
    blake3::hash(canonical_json(&identity).to_string().as_bytes())
        .to_hex()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::StepSpec;

    fn chain(template: &str, url: &str) -> PipelineSpec {
        PipelineSpec::new("p")
            .step(StepSpec::new("load", "inline").param("rows", serde_json::json!([{"x": 1}])))
            .step(
                StepSpec::new("fmt", "format_text")
                    .after("load")
                    .param("template", template)
                    .param("output", "t"),
            )
            .step(
                StepSpec::new("ask", "task")
                    .after("fmt")
                    .param("base_url", url)
                    .param("model", "m"),
            )
    }

    #[test]
    fn a_change_changes_its_step_and_everything_downstream_only() {
        let mut registry = Registry::empty();
        registry.set_operational("task", &["base_url"]);
        let a = step_signatures(&chain("{{ x }}", "http://a/v1"), &registry);
        let b = step_signatures(&chain("{{ x }}!", "http://a/v1"), &registry);
        assert_eq!(a["load"], b["load"]);
        assert_ne!(a["fmt"], b["fmt"]);
        assert_ne!(a["ask"], b["ask"], "downstream of a change");
        let c = step_signatures(&chain("{{ x }}", "http://b/v1"), &registry);
        assert_eq!(a, c, "an operational parameter changes no signature");
        let d = step_signatures(&chain("{{ x }}", "http://b/v1"), &Registry::empty());
        assert_ne!(a["ask"], d["ask"], "undeclared, a parameter counts");
    }

    #[test]
    fn no_params_sign_the_same_from_yaml_and_from_the_builder() {
        let registry = Registry::empty();
        let built = PipelineSpec::new("p").step(StepSpec::new("s", "t"));
        let yaml =
            PipelineSpec::from_yaml(&built.to_yaml(), std::path::Path::new("p.yaml")).unwrap();
        assert!(yaml.steps[0].params.is_null() && built.steps[0].params.is_object());
        assert_eq!(
            step_signatures(&built, &registry),
            step_signatures(&yaml, &registry)
        );
    }

    #[test]
    fn a_code_version_changes_its_step_and_everything_downstream_only() {
        let registry = Registry::empty();
        let spec = chain("{{ x }}", "http://a/v1");
        let plain = step_signatures(&spec, &registry);
        let none = step_signatures_with(&spec, &registry, &BTreeMap::new());
        assert_eq!(plain, none, "no code version: the signatures runs recorded");
        let v1 = BTreeMap::from([("fmt".to_string(), "fmt:1".to_string())]);
        let v2 = BTreeMap::from([("fmt".to_string(), "fmt:2".to_string())]);
        let a = step_signatures_with(&spec, &registry, &v1);
        let b = step_signatures_with(&spec, &registry, &v2);
        assert_eq!(a["load"], b["load"]);
        assert_ne!(a["fmt"], b["fmt"]);
        assert_ne!(a["ask"], b["ask"], "downstream of a change");
        assert_ne!(a["fmt"], plain["fmt"]);
    }
}
