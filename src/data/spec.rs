//! The data spec: which token shards a run reads and in what proportions (the `--data SPEC` of
//! `swallow train` / `eval`). Four spellings, all parsed into one [`DataSpec`]:
//!
//! - `PREFIX` — one indexed dataset (`PREFIX.bin` + `PREFIX.idx`);
//! - `P1,P2,...` — several shards concatenated in order into one dataset (weight 1);
//! - `W1 P1 W2 P2 ...` — Megatron-LM's `--data-path` blend: positive weights (any scale, e.g. token
//!   counts; normalised to sum 1) each followed by a prefix, which may itself be a comma list;
//! - `FILE.toml` — `[[dataset]]` tables with `weight` and `prefix` (a string or a list of strings,
//!   concatenated), plus an optional top-level `root` that relative prefixes are joined to.
//!
//! Relative prefixes (and a relative `root`) are resolved against the current directory, as Megatron
//! resolves `--data-path`, so the same strings mean the same shards on the command line and in a
//! file. Paths containing spaces need the TOML form. Parsing touches no shard: opening and
//! validating is the sampler's job (see [`crate::data::blend`]).

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// One blended dataset: a weight and the shard prefixes that make it up (concatenated in order).
#[derive(Clone, Debug, PartialEq)]
pub struct DataEntry {
    /// Relative weight as given (positive, finite); see [`DataSpec::normalized_weights`].
    pub weight: f64,
    pub prefixes: Vec<PathBuf>,
}

/// A parsed `--data` value: one or more weighted datasets.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub entries: Vec<DataEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    root: Option<PathBuf>,
    dataset: Vec<FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    weight: f64,
    prefix: OneOrMany,
    #[allow(dead_code)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl DataSpec {
    /// Parse a `--data` value (see the module docs for the accepted forms).
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            bail!("empty data spec: expected PREFIX, \"W1 PREFIX1 W2 PREFIX2 ...\" or FILE.toml");
        }
        if s.ends_with(".toml") && !s.contains(char::is_whitespace) {
            return Self::from_toml_file(Path::new(s));
        }
        let tokens: Vec<&str> = s.split_whitespace().collect();
        if tokens.len() == 1 {
            let entry = DataEntry {
                weight: 1.0,
                prefixes: comma_list(tokens[0], s)?,
            };
            return Ok(DataSpec {
                entries: vec![entry],
            });
        }
        if tokens.len() % 2 != 0 {
            bail!(
                "data spec {s:?}: {} words, expected pairs \"WEIGHT PREFIX\" (a lone prefix needs no weight; \
                 several prefixes without weights are written P1,P2 and read back to back)",
                tokens.len()
            );
        }
        let mut entries = Vec::with_capacity(tokens.len() / 2);
        for pair in tokens.chunks(2) {
            entries.push(DataEntry {
                weight: parse_weight(pair[0], s)?,
                prefixes: comma_list(pair[1], s)?,
            });
        }
        Ok(DataSpec { entries })
    }

    /// Read a TOML data spec: `root = "..."` (optional) and `[[dataset]] weight = .. prefix = ..`.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("data spec {}: cannot read: {e}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("data spec {}", path.display()))
    }

    /// The TOML form from a string (for tests and embedded specs).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let de = toml::Deserializer::new(text);
        let file: SpecFile = serde_path_to_error::deserialize(de).map_err(|e| {
            anyhow!(
                "{}: {} (expected [[dataset]] tables with weight and prefix)",
                e.path(),
                e.inner().message().trim()
            )
        })?;
        if file.dataset.is_empty() {
            bail!("no [[dataset]] entries");
        }
        let root = file.root.unwrap_or_default();
        let mut entries = Vec::with_capacity(file.dataset.len());
        for (k, d) in file.dataset.into_iter().enumerate() {
            let what = format!("dataset[{k}]");
            if !(d.weight.is_finite() && d.weight > 0.0) {
                bail!("{what}: weight {} is not a positive number", d.weight);
            }
            let raw = match d.prefix {
                OneOrMany::One(p) => vec![p],
                OneOrMany::Many(v) => v,
            };
            if raw.is_empty() || raw.iter().any(|p| p.trim().is_empty()) {
                bail!("{what}: empty prefix");
            }
            entries.push(DataEntry {
                weight: d.weight,
                prefixes: raw.iter().map(|p| root.join(p.trim())).collect(),
            });
        }
        Ok(DataSpec { entries })
    }

    /// Weights divided by their sum, in f64 (as Megatron normalises them).
    pub fn normalized_weights(&self) -> Vec<f64> {
        let sum: f64 = self.entries.iter().map(|e| e.weight).sum();
        self.entries.iter().map(|e| e.weight / sum).collect()
    }

    /// Whether this is a single dataset (no blending).
    pub fn is_single(&self) -> bool {
        self.entries.len() == 1
    }
}

impl fmt::Display for DataSpec {
    /// The canonical command-line form: `PREFIX[,PREFIX..]` for a single dataset, else `W P W P ...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |e: &DataEntry| {
            e.prefixes
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        if self.is_single() {
            return f.write_str(&list(&self.entries[0]));
        }
        let parts: Vec<String> = self
            .entries
            .iter()
            .map(|e| format!("{} {}", e.weight, list(e)))
            .collect();
        f.write_str(&parts.join(" "))
    }
}

fn parse_weight(tok: &str, spec: &str) -> Result<f64> {
    match tok.parse::<f64>() {
        Ok(w) if w.is_finite() && w > 0.0 => Ok(w),
        Ok(_) => bail!("data spec {spec:?}: weight {tok:?} must be a positive finite number"),
        Err(_) => bail!(
            "data spec {spec:?}: expected a weight, found {tok:?} (a blend is \"W1 PREFIX1 W2 PREFIX2 ...\"; \
             several prefixes without weights are written P1,P2 and read back to back)"
        ),
    }
}

fn comma_list(tok: &str, spec: &str) -> Result<Vec<PathBuf>> {
    let parts: Vec<&str> = tok.split(',').map(str::trim).collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("data spec {spec:?}: empty prefix in {tok:?}");
    }
    if let Some(p) = parts.iter().find(|p| p.parse::<f64>().is_ok()) {
        bail!("data spec {spec:?}: expected a prefix, found the number {p:?}");
    }
    Ok(parts.into_iter().map(PathBuf::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(w: f64, p: &[&str]) -> DataEntry {
        DataEntry {
            weight: w,
            prefixes: p.iter().map(PathBuf::from).collect(),
        }
    }

    fn err(s: &str) -> String {
        format!("{:#}", DataSpec::parse(s).unwrap_err())
    }

    #[test]
    fn single_comma_and_megatron_forms() {
        assert_eq!(
            DataSpec::parse(" data/ja ").unwrap().entries,
            vec![e(1.0, &["data/ja"])]
        );
        assert_eq!(
            DataSpec::parse("a,b").unwrap().entries,
            vec![e(1.0, &["a", "b"])]
        );
        let s = DataSpec::parse("9e9 ja/web,ja/wiki  1e9 en/rw").unwrap();
        assert_eq!(
            s.entries,
            vec![e(9e9, &["ja/web", "ja/wiki"]), e(1e9, &["en/rw"])]
        );
        assert_eq!(s.normalized_weights(), vec![0.9, 0.1]);
        assert_eq!(s.to_string(), "9000000000 ja/web,ja/wiki 1000000000 en/rw");
        assert_eq!(DataSpec::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn errors_name_the_offending_token() {
        assert!(err("").contains("empty data spec"));
        assert!(
            err("a b").contains("expected a weight, found \"a\""),
            "{}",
            err("a b")
        );
        assert!(err("1 a 2").contains("3 words"));
        assert!(err("0 a 1 b").contains("weight \"0\" must be a positive"));
        assert!(err("-1 a 1 b").contains("weight \"-1\""));
        assert!(err("nan a 1 b").contains("weight \"nan\""));
        assert!(err("1 a 1 2").contains("found the number \"2\""));
        assert!(err("a,,b").contains("empty prefix in \"a,,b\""));
        assert!(err("/nonexistent/mix.toml").contains("/nonexistent/mix.toml: cannot read"));
    }

    #[test]
    fn toml_form_with_root_and_lists() {
        let s = DataSpec::from_toml_str(
            "root = \"/shards\"\n\
             [[dataset]]\nname = \"ja\"\nweight = 3\nprefix = [\"ja/a\", \"/abs/b\"]\n\
             [[dataset]]\nweight = 1.5e0\nprefix = \"en\"\n",
        )
        .unwrap();
        assert_eq!(
            s.entries,
            vec![e(3.0, &["/shards/ja/a", "/abs/b"]), e(1.5, &["/shards/en"])]
        );
        let bad = |t: &str| format!("{:#}", DataSpec::from_toml_str(t).unwrap_err());
        assert!(bad("[[dataset]]\nweight = 0\nprefix = \"a\"").contains("dataset[0]: weight 0"));
        assert!(bad("[[dataset]]\nweight = 1\nprefix = \"\"").contains("dataset[0]: empty prefix"));
        let m = bad("[[dataset]]\nweight = 1\nprefx = \"a\"");
        assert!(m.contains("dataset[0]") && m.contains("prefx"), "{m}");
        assert!(bad("dataset = []").contains("no [[dataset]]"));
    }
}
