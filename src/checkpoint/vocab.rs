//! Vocabulary expansion on import (Swallow grew Llama 2's 32,000 tokens to 43,176): which rows of
//! the old embedding (and untied LM head) make each row of the new one. A token the old tokenizer
//! knows (same token string) keeps its row, moved to its new id; a new token's row is the mean of
//! the old rows of the pieces the old tokenizer splits it into.
//!
//! Splitting a new token: a vocabulary token's string is already in the tokenizers' alphabet
//! (`▁` for a space under Metaspace/SentencePiece, byte characters such as `Ġ` under ByteLevel),
//! so the old tokenizer's model splits that string directly. This is what decoding the token to
//! text and encoding the text with the old tokenizer (no special tokens) means, without the
//! decoder's lossy steps: Metaspace strips a leading space and the encoder adds one back (so a
//! word-continuation piece `bab` would become `▁bab`), and a ByteLevel token holding part of a
//! UTF-8 character decodes to U+FFFD. Added tokens (`<|...|>`-style, stored as raw text) are
//! encoded as text by the old tokenizer, without special tokens.

use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::{Model, Tokenizer};

/// Where one row of the new embedding comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// The old row of this id (the same token string).
    Copy(u32),
    /// The mean of these old rows (the old tokenizer's pieces of a new token).
    Mean(Vec<u32>),
}

/// The rows of an expanded vocabulary, in new-id order.
#[derive(Debug)]
pub struct Expansion {
    pub rows: Vec<Row>,
    /// Old tokens that the new tokenizer does not have (their rows are dropped).
    pub dropped: Vec<String>,
}

impl Expansion {
    pub fn copied(&self) -> usize {
        self.rows.iter().filter(|r| matches!(r, Row::Copy(_))).count()
    }

    /// `old` (`[old_rows, hidden]`, row-major) re-arranged into the new vocabulary.
    pub fn apply(&self, old: &[f32], hidden: usize) -> Vec<f32> {
        let row = |id: u32| &old[id as usize * hidden..(id as usize + 1) * hidden];
        let mut out = Vec::with_capacity(self.rows.len() * hidden);
        let mut sum = vec![0f64; hidden];
        for r in &self.rows {
            match r {
                Row::Copy(id) => out.extend_from_slice(row(*id)),
                Row::Mean(ids) => {
                    sum.iter_mut().for_each(|s| *s = 0.0);
                    for &id in ids {
                        sum.iter_mut().zip(row(id)).for_each(|(s, &x)| *s += x as f64);
                    }
                    out.extend(sum.iter().map(|s| (s / ids.len() as f64) as f32));
                }
            }
        }
        out
    }
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(path).map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))
}

/// Token strings by id; the ids must be exactly 0..n.
fn tokens_by_id(tok: &Tokenizer, path: &Path) -> Result<Vec<String>> {
    let vocab = tok.get_vocab(true);
    let mut by_id = vec![None; vocab.len()];
    for (s, &id) in &vocab {
        match by_id.get_mut(id as usize) {
            Some(slot) => *slot = Some(s.clone()),
            None => bail!("{}: token {s:?} has id {id}, but the vocabulary has {} tokens (ids must be 0..n)", path.display(), vocab.len()),
        }
    }
    by_id
        .into_iter()
        .enumerate()
        .map(|(id, s)| s.ok_or_else(|| anyhow!("{}: no token has id {id} (ids must be 0..n)", path.display())))
        .collect()
}

/// The expansion from `old` (whose ids index `old_rows` embedding rows; at `old_path`) to `new`
/// (at `new_path`).
pub fn plan(old: &Tokenizer, old_path: &Path, old_rows: usize, new: &Tokenizer, new_path: &Path) -> Result<Expansion> {
    let old_vocab: HashMap<String, u32> = old.get_vocab(true);
    if let Some((s, id)) = old_vocab.iter().find(|(_, &id)| id as usize >= old_rows) {
        bail!("{}: token {s:?} has id {id}, but the model has only {old_rows} embedding rows (vocab_size)", old_path.display());
    }
    let new_tokens = tokens_by_id(new, new_path)?;
    let added = new.get_added_tokens_decoder();
    let mut rows = Vec::with_capacity(new_tokens.len());
    for (id, s) in new_tokens.iter().enumerate() {
        if let Some(&old_id) = old_vocab.get(s) {
            rows.push(Row::Copy(old_id));
            continue;
        }
        let pieces: Vec<u32> = if added.contains_key(&(id as u32)) {
            let enc = old.encode(s.as_str(), false).map_err(|e| anyhow!("{}: the old tokenizer cannot encode added token {s:?}: {e}", old_path.display()))?;
            enc.get_ids().to_vec()
        } else {
            let toks = old.get_model().tokenize(s).map_err(|e| anyhow!("{}: the old tokenizer cannot split token {s:?}: {e}", old_path.display()))?;
            toks.into_iter().map(|t| t.id).collect()
        };
        if pieces.is_empty() {
            bail!("{}: token {s:?} (id {id}) is not in the old vocabulary and the old tokenizer ({}) splits it into nothing", new_path.display(), old_path.display());
        }
        if let Some(p) = pieces.iter().find(|&&p| p as usize >= old_rows) {
            bail!("{}: splitting token {s:?} gave old id {p}, past the model's {old_rows} embedding rows", old_path.display());
        }
        rows.push(Row::Mean(pieces));
    }
    let new_vocab = new.get_vocab(true);
    let mut dropped: Vec<String> = old_vocab.into_keys().filter(|s| !new_vocab.contains_key(s)).collect();
    dropped.sort();
    Ok(Expansion { rows, dropped })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level BPE tokenizer (GPT-2 / Llama 3 style) with the given vocabulary and merges.
    fn byte_level(vocab: &[&str], merges: &[(&str, &str)]) -> Tokenizer {
        let v: serde_json::Map<String, serde_json::Value> = vocab.iter().enumerate().map(|(i, t)| (t.to_string(), (i as u64).into())).collect();
        let bl = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        let j = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
            "pre_tokenizer": bl, "post_processor": null, "decoder": bl,
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": v, "merges": merges.iter().map(|(a, b)| format!("{a} {b}")).collect::<Vec<_>>()}
        });
        Tokenizer::from_bytes(j.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn byte_level_tokens_split_in_the_byte_alphabet_even_when_not_valid_utf8() {
        // "あ" is E3 81 82, in ByteLevel's alphabet "ã" "ģ" "Ĥ". The old vocabulary has the three
        // bytes, "Ġ" (space) and "a"; the new one adds "ãģ" (two of the three bytes: no text of
        // its own) and "Ġa".
        let old = byte_level(&["a", "Ġ", "ã", "ģ", "Ĥ"], &[]);
        let new = byte_level(&["Ġ", "a", "ã", "ģ", "Ĥ", "ãģ", "Ġa"], &[("ã", "ģ"), ("Ġ", "a")]);
        let p = Path::new("t.json");
        let e = plan(&old, p, 6, &new, p).unwrap();
        use Row::*;
        assert_eq!(e.rows, vec![Copy(1), Copy(0), Copy(2), Copy(3), Copy(4), Mean(vec![2, 3]), Mean(vec![1, 0])]);
        assert!(e.dropped.is_empty());
        let old_rows: Vec<f32> = (0..12).map(|x| x as f32).collect(); // 6 rows of 2
        let got = e.apply(&old_rows, 2);
        assert_eq!(&got[..4], &[2.0, 3.0, 0.0, 1.0]);
        assert_eq!(&got[10..], &[5.0, 6.0, 1.0, 2.0]); // mean of rows 2,3 and of rows 1,0
        // An old id past the model's rows is an error naming the tokenizer file.
        let e = plan(&old, Path::new("old.json"), 4, &new, p).unwrap_err();
        assert!(e.to_string().contains("old.json") && e.to_string().contains("4 embedding rows"), "{e}");
    }
}
