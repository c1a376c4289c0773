//! Validation before anything runs: every error names the step, the parameter or the column.

mod support;

use distill_engine::{BuildContext, Error, Pipeline, PipelineSpec, StepSpec};
use std::path::Path;
use support::{Probe, registry};

fn check(spec: PipelineSpec) -> Error {
    Pipeline::build(spec, &registry(&Probe::default()), &BuildContext::default())
        .err()
        .expect("the pipeline must be refused")
}

fn source(name: &str) -> StepSpec {
    StepSpec::new(name, "numbers").param("count", 3)
}

#[test]
fn cycle_is_reported_with_its_steps() {
    let err = check(
        PipelineSpec::new("p")
            .step(source("g"))
            .step(StepSpec::new("a", "double").after("g").after("c"))
            .step(StepSpec::new("b", "double").after("a"))
            .step(StepSpec::new("c", "double").after("b")),
    );
    let Error::Cycle { steps } = &err else {
        panic!("{err:?}")
    };
    for s in ["a", "b", "c"] {
        assert!(steps.contains(&s.to_string()), "{err}");
    }
    assert!(!steps.contains(&"g".to_string()), "{err}");
}

#[test]
fn unknown_type_names_the_step_and_the_known_types() {
    let err = check(PipelineSpec::new("p").step(StepSpec::new("x", "no_such_step")));
    assert!(matches!(err, Error::UnknownStepType { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("'x'") && msg.contains("no_such_step") && msg.contains("numbers"),
        "{msg}"
    );
}

#[test]
fn duplicate_names_and_unknown_predecessors() {
    let err = check(PipelineSpec::new("p").step(source("g")).step(source("g")));
    assert!(
        matches!(err, Error::DuplicateStep { ref step } if step == "g"),
        "{err:?}"
    );
    let err = check(
        PipelineSpec::new("p")
            .step(source("g"))
            .step(StepSpec::new("d", "double").after("nope")),
    );
    assert!(
        err.to_string().contains("'d'") && err.to_string().contains("nope"),
        "{err}"
    );
}

#[test]
fn missing_column_names_step_column_and_what_is_there() {
    let err = check(
        PipelineSpec::new("p").step(source("g")).step(
            StepSpec::new("d", "double")
                .after("g")
                .input_mapping("n", "number"),
        ),
    );
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingColumn { .. }), "{err:?}");
    assert!(
        msg.contains("'d'") && msg.contains("'number'") && msg.contains("[n]"),
        "{msg}"
    );
}

#[test]
fn mapping_that_fits_passes_and_renames_downstream_columns() {
    let spec = PipelineSpec::new("p")
        .step(source("g").output_mapping("n", "number"))
        .step(
            StepSpec::new("d", "double")
                .after("g")
                .input_mapping("n", "number"),
        );
    let p = Pipeline::build(spec, &registry(&Probe::default()), &BuildContext::default()).unwrap();
    assert_eq!(p.nodes()[1].columns, vec!["number", "out"]);
}

#[test]
fn bad_parameters_name_the_step_and_parameter() {
    let err = check(PipelineSpec::new("p").step(StepSpec::new("g", "numbers")));
    assert!(matches!(err, Error::BadParams { .. }), "{err:?}");
    assert!(
        err.to_string().contains("'g'") && err.to_string().contains("count"),
        "{err}"
    );
}

#[test]
fn shape_errors() {
    let err = check(
        PipelineSpec::new("p")
            .step(source("g"))
            .step(source("h").after("g")),
    );
    assert!(
        err.to_string().contains("'h'") && err.to_string().contains("generator"),
        "{err}"
    );
    let err = check(PipelineSpec::new("p").step(StepSpec::new("d", "double")));
    assert!(
        err.to_string().contains("'d'") && err.to_string().contains("after"),
        "{err}"
    );
    let err = check(PipelineSpec::new("p").step(source("g").batch_size(0)));
    assert!(err.to_string().contains("batch size"), "{err}");
    let err = check(
        PipelineSpec::new("p").step(source("g")).step(
            StepSpec::new("d", "double")
                .after("g")
                .output_mapping("zzz", "y"),
        ),
    );
    assert!(err.to_string().contains("zzz"), "{err}");
}

#[test]
fn bad_yaml_is_a_clear_error() {
    let err = PipelineSpec::from_yaml(
        "name: p\nsteps:\n  - name: g\n    type: numbers\n    colour: red\n",
        Path::new("p.yaml"),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("p.yaml") && err.to_string().contains("colour"),
        "{err}"
    );
}
