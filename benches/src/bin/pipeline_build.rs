//! Reading and validating large pipeline files: parse the YAML, build the pipeline (names,
//! edges, cycles, columns, stages, step signatures) and list it as `distill info` does, for
//! chains of 1,000 to 64,000 steps. The time per step stays flat when the work is linear.
//!
//! cargo run --release -p distill-benches --bin pipeline_build

use distill_engine::{BuildContext, Pipeline, PipelineSpec, Registry};
use std::path::Path;
use std::time::Instant;

/// Pipeline sizes, in steps.
const SIZES: [usize; 4] = [1_000, 8_000, 32_000, 64_000];

/// A chain: an inline generator and `steps - 1` keep_columns after it, one after the other.
fn chain_yaml(steps: usize) -> String {
    let mut text = String::from(
        "name: big\nsteps:\n  - name: s0\n    type: inline\n    params: {rows: [{x: 1}]}\n",
    );
    for i in 1..steps {
        text.push_str(&format!(
            "  - name: s{i}\n    type: keep_columns\n    after: [s{}]\n    params: {{columns: [x]}}\n",
            i - 1
        ));
    }
    text
}

fn main() {
    println!("pipeline_build: chains of keep_columns after an inline generator, release build");
    println!("command: target/release/pipeline_build");
    println!("| steps | YAML MB | parse ms | build ms | list ms | µs per step |");
    println!("|---|---|---|---|---|---|");
    let registry = Registry::default();
    for steps in SIZES {
        let yaml = chain_yaml(steps);
        let t0 = Instant::now();
        let spec = PipelineSpec::from_yaml(&yaml, Path::new("big.yaml")).expect("parse");
        let parsed = t0.elapsed();
        let t1 = Instant::now();
        let pipeline = Pipeline::build(spec, &registry, &BuildContext::default()).expect("build");
        let built = t1.elapsed();
        let t2 = Instant::now();
        let mut lines = 0usize;
        for members in pipeline.stages() {
            for &i in members {
                let node = &pipeline.nodes()[i];
                lines += node.preds.len() + node.columns.len() + 1;
            }
        }
        lines += pipeline.leaves().len() + pipeline.spec().leaves().len();
        let listed = t2.elapsed();
        assert!(lines > steps);
        let total = parsed + built + listed;
        println!(
            "| {steps} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1} |",
            yaml.len() as f64 / 1e6,
            parsed.as_secs_f64() * 1e3,
            built.as_secs_f64() * 1e3,
            listed.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e6 / steps as f64
        );
    }
}
