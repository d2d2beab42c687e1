//! The fast exact encoder for byte-level BPE tokenizers: GPT-2's kind (the ByteLevel pre-tokenizer
//! with its own regex; the sample tokenizer) and Llama 3's (a Split pre-tokenizer with its regex,
//! behaviour Isolated, then ByteLevel without regex; `ignore_merges`, so a piece that is a whole
//! token is that token). The ids are exactly those of the `tokenizers` crate (tokenize/mod.rs tests).
//!
//! Pieces: [`crate::tokenize::split`] (GPT-2's and Llama 3's patterns scanned by hand, others by
//! the regex crate with the look-ahead emulated).
//!
//! Merging runs on bytes (each byte's token is its GPT-2 printable character); pieces are cut where
//! no merge joins two bytes and the segments are cached ([`crate::tokenize::bpe`]).

use crate::tokenize::bpe::{cache_tag, with_cache, Merges, Model};
use crate::tokenize::split::{Splitter, GPT2};
use rustc_hash::FxHashMap;
use serde_json::Value;

pub struct ByteLevelBpe {
    splitter: Splitter,
    byte_ids: [u32; 256],
    merges: Merges,
    /// Byte pairs (a << 8 | b) that stand next to each other inside a merged token.
    joins: Box<[bool; 65536]>,
    /// Whole pieces that are tokens (`ignore_merges`), by their bytes.
    whole: Option<FxHashMap<Box<[u8]>, u32>>,
    tag: u64,
}

/// GPT-2's byte <-> printable character table (`bytes_to_unicode`).
pub fn byte_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
    }
    table
}

/// The bytes a byte-level token string stands for; `None` if it has a character outside the table.
fn token_bytes(token: &str, byte_of: &FxHashMap<char, u8>) -> Option<Vec<u8>> {
    token.chars().map(|c| byte_of.get(&c).copied()).collect()
}

fn is_byte_level(p: &Value, use_regex: bool) -> bool {
    p["type"] == "ByteLevel" && p["add_prefix_space"] != true && (p["use_regex"] != false) == use_regex
}

/// The split pattern of tokenizer.json `v` if its pre-tokenizer is a byte-level one handled here.
fn split_pattern(v: &Value) -> Result<String, String> {
    let pre = &v["pre_tokenizer"];
    if is_byte_level(pre, true) {
        return Ok(GPT2.into());
    }
    let seq = pre["pretokenizers"].as_array().filter(|_| pre["type"] == "Sequence");
    match seq.map(|s| s.as_slice()) {
        Some([split, bl]) if split["type"] == "Split" && is_byte_level(bl, false) => {
            if split["behavior"] != "Isolated" || split["invert"] == true {
                return Err(format!("Split behaviour {} (invert {})", split["behavior"], split["invert"]));
            }
            split["pattern"]["Regex"].as_str().map(str::to_string).ok_or_else(|| format!("Split pattern {}", split["pattern"]))
        }
        _ => Err(format!("pre-tokenizer {}", pre["type"])),
    }
}

impl ByteLevelBpe {
    /// The encoder for tokenizer.json `v`, or why not.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let m = &v["model"];
        let empty = |x: &Value| x.is_null() || x.as_str() == Some("");
        if m["type"] != "BPE" || !(m["dropout"].is_null() || m["dropout"].as_f64() == Some(0.0)) || m["byte_fallback"] == true {
            return Err("model is not plain BPE".into());
        }
        if !empty(&m["continuing_subword_prefix"]) || !empty(&m["end_of_word_suffix"]) {
            return Err("BPE subword prefix/suffix".into());
        }
        if !v["normalizer"].is_null() {
            return Err(format!("normalizer {}", v["normalizer"]["type"]));
        }
        let pattern = split_pattern(v)?;
        let splitter = Splitter::new(&pattern)?;
        let model = Model::from_json(m)?;
        let chars = byte_chars();
        let byte_of: FxHashMap<char, u8> = chars.iter().enumerate().map(|(b, &c)| (c, b as u8)).collect();
        let mut byte_ids = [u32::MAX; 256];
        for (b, c) in chars.iter().enumerate() {
            byte_ids[b] = *model.vocab.get(c.to_string().as_str()).ok_or_else(|| format!("byte {b:#04x} ({c}) has no token"))?;
        }
        let by_id = model.tokens_by_id();
        let mut joins = Box::new([false; 65536]);
        for (_, _, new) in &model.merges {
            if let Some(bytes) = token_bytes(by_id[new], &byte_of) {
                for w in bytes.windows(2) {
                    joins[(w[0] as usize) << 8 | w[1] as usize] = true;
                }
            }
        }
        let whole = (m["ignore_merges"] == true).then(|| {
            model.vocab.iter().filter_map(|(s, &id)| Some((token_bytes(s, &byte_of)?.into_boxed_slice(), id))).collect()
        });
        Ok(ByteLevelBpe {
            splitter,
            byte_ids,
            merges: Merges::new(&model),
            joins,
            whole,
            tag: cache_tag(),
        })
    }

    pub fn describe(&self) -> String {
        let ignore = if self.whole.is_some() { ", ignore_merges" } else { "" };
        format!("{}{ignore}", self.splitter.describe())
    }

    /// Append the ids of `text` (no special tokens) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        with_cache(self.tag, |cache, scratch| {
            let mut at = 0;
            while at < text.len() {
                let end = self.splitter.piece_end(text, at);
                let piece = &text.as_bytes()[at..end];
                at = end;
                if let Some(&id) = self.whole.as_ref().and_then(|w| w.get(piece)) {
                    out.push(id);
                    continue;
                }
                let mut seg_start = 0;
                for i in 1..=piece.len() {
                    if i < piece.len() && self.joins[(piece[i - 1] as usize) << 8 | piece[i] as usize] {
                        continue;
                    }
                    let seg = &piece[seg_start..i];
                    seg_start = i;
                    if seg.len() == 1 {
                        out.push(self.byte_ids[seg[0] as usize]);
                    } else if !cache.extend(seg, out) {
                        let mut sym = std::mem::take(&mut scratch.symbols);
                        sym.clear();
                        sym.extend(seg.iter().map(|&b| self.byte_ids[b as usize]));
                        self.merges.merge(&mut sym, scratch);
                        cache.insert(seg, &sym);
                        out.extend_from_slice(&sym);
                        scratch.symbols = sym;
                    }
                }
            }
        });
    }
}
