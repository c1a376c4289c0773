//! Which files of a dataset repository hold a config's split: the dataset card's `configs`
//! front matter (what distill's export and `datasets.push_to_hub` write), or, for a repository
//! without one, the conventional paths (`CONFIG/SPLIT/*`, `CONFIG/SPLIT-*`, `data/SPLIT-*`,
//! `data/SPLIT/*`).

use crate::error::{Error, Result};
use crate::reads::RepoFile;
use glob::{MatchOptions, Pattern};

/// The data files of one config's split, in reading order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The config.
    pub config: String,
    /// The split.
    pub split: String,
    /// Its files.
    pub files: Vec<RepoFile>,
}

/// One config of a card: its name, whether it is the default, and its splits' patterns.
#[derive(Debug, Clone, PartialEq)]
struct CardConfig {
    name: String,
    default: bool,
    splits: Vec<(String, Vec<String>)>,
}

/// The YAML front matter of a dataset card, when it has one.
fn front_matter(card: &str) -> Option<&str> {
    let card = card.strip_prefix('\u{feff}').unwrap_or(card);
    let rest = card
        .strip_prefix("---\n")
        .or_else(|| card.strip_prefix("---\r\n"))?;
    let end = rest.find("\n---")?;
    Some(&rest[..end + 1])
}

/// A string or a list of strings.
fn strings(value: &serde_json::Value) -> Vec<String> {
    match value {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// The `configs` of a card's front matter (empty when it has none).
fn card_configs(repo: &str, card: &str) -> Result<Vec<CardConfig>> {
    let Some(yaml) = front_matter(card) else {
        return Ok(Vec::new());
    };
    let meta: serde_json::Value = serde_yaml_ng::from_str(yaml).map_err(|e| Error::Layout {
        repo: repo.to_owned(),
        detail: format!("the dataset card's front matter is not valid YAML: {e}"),
    })?;
    let Some(configs) = meta["configs"].as_array() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for config in configs {
        let name = config["config_name"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let splits = match &config["data_files"] {
            serde_json::Value::Array(items) if items.iter().all(|i| i.is_object()) => items
                .iter()
                .map(|i| {
                    (
                        i["split"].as_str().unwrap_or("train").to_owned(),
                        strings(&i["path"]),
                    )
                })
                .collect(),
            other => vec![("train".to_owned(), strings(other))],
        };
        out.push(CardConfig {
            name,
            default: config["default"].as_bool().unwrap_or(false),
            splits,
        });
    }
    Ok(out)
}

/// The files matching `patterns` (each pattern's matches in path order, each file once),
/// among those whose format is known.
fn matching(repo: &str, files: &[RepoFile], patterns: &[String]) -> Result<Vec<RepoFile>> {
    let options = MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut out: Vec<RepoFile> = Vec::new();
    for pattern in patterns {
        let glob = Pattern::new(pattern.trim_start_matches("./")).map_err(|e| Error::Layout {
            repo: repo.to_owned(),
            detail: format!("data_files pattern '{pattern}' is not a valid glob: {e}"),
        })?;
        for file in files {
            if glob.matches_with(&file.path, options)
                && super::Format::of(&file.path).is_some()
                && !out.iter().any(|f| f.path == file.path)
            {
                out.push(file.clone());
            }
        }
    }
    Ok(out)
}

fn layout_error(repo: &str, detail: String) -> Error {
    Error::Layout {
        repo: repo.to_owned(),
        detail,
    }
}

/// The files of `split` of `config` (default: the config the card marks `default: true`, else
/// the one named `default`, else its only one, as `datasets` chooses) in
/// a repository holding `files`, whose card (README.md) is `card`.
pub fn select(
    repo: &str,
    card: Option<&str>,
    files: &[RepoFile],
    config: Option<&str>,
    split: &str,
) -> Result<Layout> {
    let configs = match card {
        Some(card) => card_configs(repo, card)?,
        None => Vec::new(),
    };
    if configs.is_empty() {
        return conventional(repo, files, config, split);
    }
    let names = || {
        configs
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match config {
        Some(name) => configs.iter().find(|c| c.name == name).ok_or_else(|| {
            layout_error(
                repo,
                format!(
                    "the dataset card has no config '{name}' (its configs: {})",
                    names()
                ),
            )
        })?,
        None => match configs
            .iter()
            .find(|c| c.default)
            .or_else(|| configs.iter().find(|c| c.name == "default"))
        {
            Some(c) => c,
            None if configs.len() == 1 => &configs[0],
            None => {
                return Err(layout_error(
                    repo,
                    format!(
                        "the dataset card has several configs and no default: set `config` to one of {}",
                        names()
                    ),
                ));
            }
        },
    };
    let Some((_, patterns)) = chosen.splits.iter().find(|(s, _)| s == split) else {
        return Err(layout_error(
            repo,
            format!(
                "config '{}' has no split '{split}' (its splits: {})",
                chosen.name,
                chosen
                    .splits
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let found = matching(repo, files, patterns)?;
    if found.is_empty() {
        return Err(layout_error(
            repo,
            format!(
                "config '{}', split '{split}': no data file matches {}",
                chosen.name,
                patterns.join(", ")
            ),
        ));
    }
    Ok(Layout {
        config: chosen.name.clone(),
        split: split.to_owned(),
        files: found,
    })
}

/// The layout of a repository without card configs.
fn conventional(
    repo: &str,
    files: &[RepoFile],
    config: Option<&str>,
    split: &str,
) -> Result<Layout> {
    let under = |dir: &str| vec![format!("{dir}/{split}/*"), format!("{dir}/{split}-*")];
    let layout = |config: &str, found: Vec<RepoFile>| Layout {
        config: config.to_owned(),
        split: split.to_owned(),
        files: found,
    };
    if let Some(name) = config {
        let mut patterns = under(name);
        if name == "default" {
            patterns.extend(under("data"));
        }
        let found = matching(repo, files, &patterns)?;
        if found.is_empty() {
            return Err(layout_error(
                repo,
                format!(
                    "no dataset card configs, and no data file at {}",
                    patterns.join(", ")
                ),
            ));
        }
        return Ok(layout(name, found));
    }
    let data = matching(repo, files, &under("data"))?;
    if !data.is_empty() {
        return Ok(layout("default", data));
    }
    let mut dirs: Vec<&str> = files
        .iter()
        .filter_map(|f| f.path.split_once('/').map(|(d, _)| d))
        .collect();
    dirs.dedup();
    let candidates: Vec<&str> = dirs
        .into_iter()
        .filter(|d| matching(repo, files, &under(d)).is_ok_and(|f| !f.is_empty()))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(layout(one, matching(repo, files, &under(one))?)),
        [] => Err(layout_error(
            repo,
            format!(
                "no dataset card configs, and no data file of split '{split}' at data/{split}-*, data/{split}/*, CONFIG/{split}/* or CONFIG/{split}-*"
            ),
        )),
        many => Err(layout_error(
            repo,
            format!(
                "no dataset card configs, and several folders hold split '{split}': set `config` to one of {}",
                many.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str) -> RepoFile {
        RepoFile {
            path: path.to_owned(),
            size: 1,
            oid: "x".into(),
            sha256: None,
        }
    }

    fn paths(layout: &Layout) -> Vec<&str> {
        layout.files.iter().map(|f| f.path.as_str()).collect()
    }

    const CARD: &str = "---\nconfigs:\n- config_name: pairs\n  data_files:\n  - split: train\n    path: pairs/train/*.parquet\n- config_name: judged\n  default: true\n  data_files:\n  - split: train\n    path:\n    - judged/train/*.parquet\n  - split: test\n    path: judged/test-*\n---\n# Card\n";

    #[test]
    fn card_configs_choose_files_and_name_what_is_missing() {
        let files: Vec<RepoFile> = [
            "README.md",
            "judged/test-00000.jsonl.gz",
            "judged/train/b.parquet",
            "judged/train/a.parquet",
            "judged/train/nested/c.parquet",
            "pairs/train/x.parquet",
        ]
        .iter()
        .map(|p| file(p))
        .collect();
        let mut files = files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let l = select("ns/r", Some(CARD), &files, None, "train").unwrap();
        assert_eq!(l.config, "judged");
        assert_eq!(
            paths(&l),
            ["judged/train/a.parquet", "judged/train/b.parquet"]
        );
        let l = select("ns/r", Some(CARD), &files, None, "test").unwrap();
        assert_eq!(paths(&l), ["judged/test-00000.jsonl.gz"]);
        let l = select("ns/r", Some(CARD), &files, Some("pairs"), "train").unwrap();
        assert_eq!(paths(&l), ["pairs/train/x.parquet"]);
        let err = select("ns/r", Some(CARD), &files, Some("nope"), "train")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no config 'nope' (its configs: pairs, judged)"),
            "{err}"
        );
        let err = select("ns/r", Some(CARD), &files, Some("pairs"), "test")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("config 'pairs' has no split 'test' (its splits: train)"),
            "{err}"
        );
        let two = CARD.replace("  default: true\n", "");
        let err = select("ns/r", Some(&two), &files, None, "train")
            .unwrap_err()
            .to_string();
        assert!(err.contains("several configs and no default"), "{err}");
        let named = two.replace("config_name: pairs", "config_name: default");
        let l = select("ns/r", Some(&named), &files, None, "train").unwrap();
        assert_eq!(l.config, "default");
    }

    #[test]
    fn without_card_configs_the_conventional_paths_are_read() {
        let files = vec![
            file("README.md"),
            file("data/train-00000-of-00002.parquet"),
            file("data/train-00001-of-00002.parquet"),
            file("data/test-00000-of-00001.parquet"),
        ];
        let l = select("ns/r", Some("# no front matter\n"), &files, None, "train").unwrap();
        assert_eq!((l.config.as_str(), l.files.len()), ("default", 2));
        let files = vec![
            file("a/train/0.parquet"),
            file("b/train/0.parquet"),
            file("b/test/0.parquet"),
        ];
        let err = select("ns/r", None, &files, None, "train")
            .unwrap_err()
            .to_string();
        assert!(err.contains("set `config` to one of a, b"), "{err}");
        let l = select("ns/r", None, &files, None, "test").unwrap();
        assert_eq!(
            (l.config.as_str(), paths(&l)),
            ("b", vec!["b/test/0.parquet"])
        );
        let l = select("ns/r", None, &files, Some("a"), "train").unwrap();
        assert_eq!(paths(&l), ["a/train/0.parquet"]);
        let err = select("ns/r", None, &files, None, "validation")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no data file of split 'validation'"), "{err}");
    }
}
