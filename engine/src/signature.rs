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
use std::collections::BTreeMap;

/// The signature of every step of `spec`, by name. Steps are taken in an order where each
/// comes after its predecessors; a predecessor that does not exist (or a cycle) contributes
/// its name instead, so a broken stored pipeline still gets signatures (which then match
/// nothing of a valid one).
pub fn step_signatures(spec: &PipelineSpec, registry: &Registry) -> BTreeMap<String, String> {
    let by_name: BTreeMap<&str, &StepSpec> =
        spec.steps.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut signatures: BTreeMap<String, String> = BTreeMap::new();
    let mut visiting: Vec<&str> = Vec::new();
    for step in &spec.steps {
        sign(step, &by_name, registry, &mut signatures, &mut visiting);
    }
    signatures
}

fn sign<'a>(
    step: &'a StepSpec,
    by_name: &BTreeMap<&'a str, &'a StepSpec>,
    registry: &Registry,
    signatures: &mut BTreeMap<String, String>,
    visiting: &mut Vec<&'a str>,
) -> String {
    if let Some(done) = signatures.get(&step.name) {
        return done.clone();
    }
    visiting.push(&step.name);
    let mut after = Vec::with_capacity(step.after.len());
    for pred in &step.after {
        let known = by_name.get(pred.as_str()).copied();
        after.push(match known {
            Some(p) if !visiting.contains(&p.name.as_str()) => {
                sign(p, by_name, registry, signatures, visiting)
            }
            _ => format!("missing:{pred}"),
        });
    }
    visiting.pop();
    let mut params = step.params.clone();
    if let Some(map) = params.as_object_mut() {
        for key in registry.operational(&step.kind) {
            map.remove(key);
        }
    }
    let identity = serde_json::json!({
        "type": step.kind,
        "params": canonical_json(&params),
        "input_mappings": step.input_mappings,
        "output_mappings": step.output_mappings,
        "on_error": step.on_error,
        "batch_size": step.batch_size,
        "input_batch_size": step.input_batch_size,
        "after": after,
    });
    let signature = blake3::hash(canonical_json(&identity).to_string().as_bytes())
        .to_hex()
        .to_string();
    signatures.insert(step.name.clone(), signature.clone());
    signature
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
}
