//! The corpus config (`swallow corpus --config corpus.toml`): one TOML section per stage, every
//! field defaulting to Swallow's value, so an empty file (or none) is Swallow's recipe. Unknown keys
//! and bad values are errors naming the file and the key.

use super::clean::CleanConfig;
use super::filters::FilterConfig;
use super::lang::LangConfig;
use super::minhash::DedupConfig;
use super::warc::WarcConfig;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorpusConfig {
    #[serde(default)]
    pub warc: WarcConfig,
    #[serde(default)]
    pub lang: LangConfig,
    #[serde(default)]
    pub filters: FilterConfig,
    #[serde(default)]
    pub dedup: DedupConfig,
    #[serde(default)]
    pub clean: CleanConfig,
    #[serde(default)]
    pub output: OutputConfig,
}

/// `[output]`: how the parts are written.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// zstd level of the parts (deterministic at any level: one frame, one thread).
    #[serde(default = "default_zstd_level")]
    pub zstd_level: i32,
}

fn default_zstd_level() -> i32 {
    3
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig { zstd_level: default_zstd_level() }
    }
}

impl CorpusConfig {
    /// The config in `path`, or Swallow's defaults without one.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the corpus config {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses `text`; errors name `label` and the key.
    pub fn parse(text: &str, label: &str) -> Result<Self> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("{label}: {path}: {}", e.into_inner().message().trim())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_config_is_the_default_and_bad_keys_are_named() {
        assert_eq!(CorpusConfig::parse("", "c.toml").unwrap(), CorpusConfig::default());
        let e = CorpusConfig::parse("[dedup]\nbandz = 3\n", "c.toml").unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("dedup") && e.contains("bandz"), "{e}");
        let e = CorpusConfig::parse("[dedup]\nbands = \"forty\"\n", "c.toml").unwrap_err().to_string();
        assert!(e.contains("dedup.bands"), "{e}");
    }
}
