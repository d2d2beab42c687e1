//! The end-of-document token `swallow prep --append-eod` appends, for every tokenizer family: the
//! `--eod-token` given, else the `eos_token` of the tokenizer_config.json beside tokenizer.json (as
//! Megatron-LM's HuggingFaceTokenizer takes `eos_token_id`), else the first known name the
//! vocabulary has. A failure lists everything that was tried.

use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// Known EOD names, in order of preference (Llama 2 / Mistral, GPT-2, Llama 3, Gemma).
pub const EOD_NAMES: [&str; 4] = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>"];

/// The text of special token `field` (bos_token, eos_token, ...) in a tokenizer_config.json: a
/// string, or an AddedToken object {"content": ...}.
pub fn config_token<'a>(config: &'a serde_json::Value, field: &str) -> Option<&'a str> {
    config[field].as_str().or(config[field]["content"].as_str())
}

/// The EOD id and a few words on where it came from.
pub fn eod_id(tok: &Tokenizer, tokenizer_path: &Path, explicit: Option<&str>) -> Result<(u32, String)> {
    if let Some(text) = explicit {
        return match tok.token_to_id(text) {
            Some(id) => Ok((id, format!("--eod-token {text:?}"))),
            None => bail!("--eod-token {text:?} is not a token of {}", tokenizer_path.display()),
        };
    }
    let config = tokenizer_path.with_file_name("tokenizer_config.json");
    let mut tried = vec![format!("{} (absent)", config.display())];
    if config.exists() {
        let text = std::fs::read_to_string(&config).with_context(|| format!("cannot read {}", config.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| anyhow!("{}: not JSON: {e}", config.display()))?;
        let eos = config_token(&v, "eos_token");
        match eos {
            Some(name) => match tok.token_to_id(name) {
                Some(id) => return Ok((id, format!("eos_token {name:?} of {}", config.display()))),
                None => bail!("{} names eos_token {name:?}, which {} does not have", config.display(), tokenizer_path.display()),
            },
            None => tried[0] = format!("{} (no eos_token)", config.display()),
        }
    }
    if let Some((name, id)) = EOD_NAMES.iter().find_map(|n| tok.token_to_id(n).map(|id| (n, id))) {
        return Ok((id, format!("{name:?}")));
    }
    tried.push(format!("the names {EOD_NAMES:?}"));
    bail!(
        "--append-eod: no end-of-document token for {}: tried {}; name one with --eod-token TEXT",
        tokenizer_path.display(),
        tried.join(", ")
    )
}
