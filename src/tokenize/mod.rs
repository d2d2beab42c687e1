//! Tokenizers: fast exact encoders for the tokenizer kinds real runs use, chosen from
//! tokenizer.json, with the `tokenizers` crate as reference and fallback; the end-of-document
//! token; Swallow's vocabulary expansion (`swallow vocab`).
//!
//! [`Encoder`] gives exactly the ids `tokenizers` gives with special tokens added (what Megatron's
//! preprocess_data.py writes through a Hugging Face tokenizer):
//! - SentencePiece BPE with byte fallback (Llama 2, Swallow, Mistral/Mixtral):
//!   [`sentencepiece_bpe`];
//! - byte-level BPE, GPT-2's ByteLevel regex or Llama 3's Split regex: [`bytelevel`];
//! - anything else, and any document containing an added token's text, through `tokenizers`.
//!
//! [`Encoder::name`] says which, and why a file gets no fast encoder.

pub mod bpe;
pub mod bpe_train;
pub mod bytelevel;
pub mod eod;
pub mod sentencepiece_bpe;
pub mod special;
pub mod split;
pub mod vocab;

use anyhow::{anyhow, Context, Result};
use bytelevel::ByteLevelBpe;
use sentencepiece_bpe::SentencePieceBpe;
use serde_json::Value;
use special::{AddedTokens, Template};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use tokenizers::Tokenizer;

enum Front {
    SentencePiece(Box<SentencePieceBpe>),
    ByteLevel(Box<ByteLevelBpe>),
}

struct Fast {
    front: Front,
    template: Template,
    added: AddedTokens,
}

/// A tokenizer.json, with its fast encoder where one applies.
pub struct Encoder {
    tok: Tokenizer,
    fast: Option<Fast>,
    name: String,
    /// Documents that went to `tokenizers` although a fast encoder exists (added-token text).
    slow_documents: AtomicU64,
}

impl Encoder {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot load tokenizer {}", path.display()))?;
        let tok = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        let (fast, name) = match Self::fast(&v) {
            Ok(f) => {
                let name = match &f.front {
                    Front::SentencePiece(s) => format!("sentencepiece-bpe, fast ({})", s.describe()),
                    Front::ByteLevel(b) => format!("byte-level-bpe, fast ({})", b.describe()),
                };
                (Some(f), name)
            }
            Err(why) => (None, format!("tokenizers (no fast encoder: {why})")),
        };
        Ok(Encoder { tok, fast, name, slow_documents: AtomicU64::new(0) })
    }

    fn fast(v: &Value) -> Result<Fast, String> {
        if !v["truncation"].is_null() || !v["padding"].is_null() {
            return Err("truncation or padding set".into());
        }
        let template = Template::from_json(v)?;
        let (front, changed) = match ByteLevelBpe::from_json(v) {
            Ok(b) => (Front::ByteLevel(Box::new(b)), vec![]),
            Err(byte_level_why) => match SentencePieceBpe::from_json(v) {
                Ok(s) => {
                    let changed = s.changed_chars();
                    (Front::SentencePiece(Box::new(s)), changed)
                }
                Err(sp_why) => {
                    let is_byte_level = v["pre_tokenizer"].to_string().contains("ByteLevel");
                    return Err(if is_byte_level { byte_level_why } else { sp_why });
                }
            },
        };
        let added = AddedTokens::from_json(v, &changed)?;
        Ok(Fast { front, template, added })
    }

    /// Which encoder runs, e.g. "sentencepiece-bpe, fast (Prepend(▁) + Replace(" "->▁) + byte fallback)".
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tok
    }

    /// Documents sent to `tokenizers` because they hold an added token's text.
    pub fn slow_documents(&self) -> u64 {
        self.slow_documents.load(Ordering::Relaxed)
    }

    /// The ids of `text` with the post-processor's special tokens, as `tokenizers` gives them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if let Some(f) = &self.fast {
            if !f.added.found_in(text) {
                let mut out = Vec::with_capacity(f.template.prefix.len() + text.len() / 2 + f.template.suffix.len());
                out.extend_from_slice(&f.template.prefix);
                match &f.front {
                    Front::SentencePiece(s) => s.encode(text, &mut out),
                    Front::ByteLevel(b) => b.encode(text, &mut out),
                }
                out.extend_from_slice(&f.template.suffix);
                return Ok(out);
            }
            self.slow_documents.fetch_add(1, Ordering::Relaxed);
        }
        self.reference(text)
    }

    /// The ids `tokenizers` itself gives.
    pub fn reference(&self, text: &str) -> Result<Vec<u32>> {
        self.tok.encode_fast(text, true).map(|e| e.get_ids().to_vec()).map_err(|e| anyhow!("{e}"))
    }
}

#[cfg(test)]
mod tests;
