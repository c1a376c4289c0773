//! Column renames around a step: the step sees its inputs under its own names.

use crate::spec::StepSpec;
use distill_storage::{Row, Value};

/// Renames mapped columns to the step's input names.
pub fn before(spec: &StepSpec, rows: &mut [Row]) {
    if spec.input_mappings.is_empty() {
        return;
    }
    for row in rows {
        for (input, column) in &spec.input_mappings {
            row.rename(column, input);
        }
    }
}

/// Restores input columns' names and writes outputs under their mapped names.
pub fn after(spec: &StepSpec, rows: &mut [Row]) {
    if spec.input_mappings.is_empty() && spec.output_mappings.is_empty() {
        return;
    }
    for row in rows {
        for (input, column) in &spec.input_mappings {
            row.rename(input, column);
        }
        for (output, column) in &spec.output_mappings {
            row.rename(output, column);
        }
    }
}

/// The rows of a failed batch under the `mark` policy: outputs null, the error in
/// `distill_error`.
pub fn mark_failed(
    spec: &StepSpec,
    outputs: &[String],
    mut rows: Vec<Row>,
    error: &str,
) -> Vec<Row> {
    after(spec, &mut rows);
    for row in &mut rows {
        for output in outputs {
            let column = spec.output_mappings.get(output).unwrap_or(output);
            row.insert(column.as_str(), Value::Null);
        }
        row.insert("distill_error", error);
    }
    rows
}
