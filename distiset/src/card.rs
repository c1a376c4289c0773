//! The dataset card (README.md with YAML front matter) and the machine-readable metadata.

use crate::Distiset;
use serde::Serialize;

#[derive(Serialize)]
struct FrontMatter<'a> {
    configs: Vec<Config<'a>>,
    tags: Vec<&'static str>,
}

#[derive(Serialize)]
struct Config<'a> {
    config_name: &'a str,
    data_files: Vec<DataFiles>,
}

#[derive(Serialize)]
struct DataFiles {
    split: &'static str,
    path: String,
}

/// The dataset card (README.md): front matter listing each config's data files (what
/// `datasets.load_dataset` reads), then the run's and each leaf's status as of the snapshot.
pub fn dataset_card(d: &Distiset) -> String {
    let ext = d.format.extension();
    let front = FrontMatter {
        configs: d
            .leaves
            .iter()
            .map(|l| Config {
                config_name: &l.name,
                data_files: vec![DataFiles {
                    split: "train",
                    path: format!("{}/train/*.{ext}", l.name),
                }],
            })
            .collect(),
        tags: vec!["synthetic", "distill"],
    };
    let yaml = serde_yaml_ng::to_string(&front).unwrap_or_default();
    let mut text = format!("---\n{yaml}---\n\n# {}\n\n", d.pipeline_name);
    if let Some(description) = &d.description {
        text.push_str(&format!("{description}\n\n"));
    }
    text.push_str(&format!(
        "Built with distill. Run status: **{}**{}; exported from log position {} (a consistent snapshot).\n\n",
        d.run_status,
        d.stage.map_or(String::new(), |s| format!(", stage {s}")),
        d.snapshot_log
    ));
    text.push_str("| config | status | rows | batches | error |\n|---|---|---|---|---|\n");
    for l in &d.leaves {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            l.name,
            l.status,
            l.rows,
            l.batches,
            l.error
                .as_deref()
                .unwrap_or("")
                .replace('|', "\\|")
                .replace('\n', " ")
        ));
    }
    let nulled: Vec<String> = d
        .leaves
        .iter()
        .flat_map(|l| {
            l.non_finite_as_null
                .iter()
                .map(move |(column, n)| format!("{}.{column}: {n}", l.name))
        })
        .collect();
    if !nulled.is_empty() {
        text.push_str(&format!(
            "\nNon-finite floats (NaN, ±Infinity) written as null, since JSON has no such numbers (config.column: count): {}.\n",
            nulled.join(", ")
        ));
    }
    text.push_str(&format!(
        "\nLoad a config with `datasets.load_dataset(\"PATH\", \"{}\")`. The pipeline is in `pipeline.yaml`; this metadata is also in `distiset.json`.\n",
        d.leaves.first().map_or("", |l| l.name.as_str())
    ));
    text
}
