//! The fast exact encoder for SentencePiece BPE tokenizers with byte fallback (Llama 2, Swallow,
//! Mistral/Mixtral and most Japanese Llama derivatives) in their tokenizer.json forms: the text
//! normalized by Prepend("▁") + Replace(" ", "▁") (Llama 2's file), or by the Metaspace
//! pre-tokenizer (newer files: ' ' -> '▁', a '▁' prepended unless the text starts with one,
//! `prepend_scheme` always/first/never, `split` cutting before every '▁'), optionally followed by
//! the Digits pre-tokenizer; then BPE over characters, a character missing from the vocabulary
//! becoming its UTF-8 bytes' `<0xNN>` tokens (byte fallback) or the unknown token (consecutive ones
//! fused with `fuse_unk`). The ids are exactly those of the `tokenizers` crate (tokenize/mod.rs
//! tests compare them on real text and an edge-case corpus).
//!
//! Speed: the normalized text is cut wherever no merge can join two characters
//! ([`crate::tokenize::bpe::Joins`]) and each segment is merged once per thread and cached.

use crate::tokenize::bpe::{cache_tag, with_cache, Joins, Merges, Model};
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;

/// How the text becomes the string the model splits.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    /// Prepend normalizer: `prefix` before any non-empty text.
    Prepend(String),
    /// Replace normalizer with a string pattern.
    Replace(String, String),
    /// Metaspace pre-tokenizer: ' ' -> `replacement`, prepended unless already first (not with
    /// `prepend = false`); `split` cuts before every `replacement`.
    Metaspace { replacement: char, prepend: bool, split: bool },
    /// Digits pre-tokenizer: numeric characters isolated one by one, or in runs.
    Digits { individual: bool },
}

pub struct SentencePieceBpe {
    steps: Vec<Step>,
    /// Id of each single-character token.
    char_ids: FxHashMap<u32, u32>,
    ascii_ids: [u32; 128],
    /// `<0xNN>` ids when byte fallback is on and all 256 exist.
    byte_ids: Option<[u32; 256]>,
    /// Ids of the `<0xNN>` tokens that exist (with byte fallback on but some missing, a character
    /// falls back only if all of its bytes have one).
    partial_bytes: FxHashMap<u8, u32>,
    byte_fallback: bool,
    unk: Option<u32>,
    fuse_unk: bool,
    /// Whole pieces looked up first (`ignore_merges`).
    whole: Option<FxHashMap<String, u32>>,
    merges: Merges,
    /// Where segments may be cut; `None` when cutting could change the result (see `from_json`).
    joins: Option<Joins>,
    tag: u64,
}

const NONE: u32 = u32::MAX;

fn parse_steps(v: &Value) -> Result<Vec<Step>, String> {
    let mut steps = Vec::new();
    let mut normalizers: Vec<&Value> = match v["normalizer"]["type"].as_str() {
        None if v["normalizer"].is_null() => vec![],
        Some("Sequence") => v["normalizer"]["normalizers"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        _ => vec![&v["normalizer"]],
    };
    for n in normalizers.drain(..) {
        match n["type"].as_str() {
            Some("Prepend") => steps.push(Step::Prepend(n["prepend"].as_str().ok_or("Prepend without a string")?.into())),
            Some("Replace") => match (n["pattern"]["String"].as_str(), n["content"].as_str()) {
                (Some(p), Some(c)) if !p.is_empty() => steps.push(Step::Replace(p.into(), c.into())),
                _ => return Err(format!("normalizer Replace {} (only a string pattern is handled)", n["pattern"])),
            },
            t => return Err(format!("normalizer {}", t.unwrap_or("?"))),
        }
    }
    let pre: Vec<&Value> = match v["pre_tokenizer"]["type"].as_str() {
        None if v["pre_tokenizer"].is_null() => vec![],
        Some("Sequence") => v["pre_tokenizer"]["pretokenizers"].as_array().map(|a| a.iter().collect()).unwrap_or_default(),
        _ => vec![&v["pre_tokenizer"]],
    };
    for (i, p) in pre.iter().enumerate() {
        match p["type"].as_str() {
            // First only: a Metaspace after a split would prepend to every piece.
            Some("Metaspace") if i == 0 => {
                let replacement = p["replacement"].as_str().and_then(|s| {
                    let mut c = s.chars();
                    c.next().filter(|_| c.next().is_none())
                });
                let scheme = p["prepend_scheme"].as_str().unwrap_or("always");
                let prepend = match (scheme, p["add_prefix_space"].as_bool()) {
                    (_, Some(false)) => false,
                    ("always" | "first", _) => true,
                    _ => false,
                };
                steps.push(Step::Metaspace {
                    replacement: replacement.ok_or("Metaspace replacement is not one character")?,
                    prepend,
                    split: p["split"].as_bool().unwrap_or(true),
                });
            }
            Some("Digits") => steps.push(Step::Digits { individual: p["individual_digits"].as_bool().unwrap_or(false) }),
            t => return Err(format!("pre-tokenizer {}", t.unwrap_or("?"))),
        }
    }
    Ok(steps)
}

/// Ok when tokenizer.json `v` turns text into what Llama 2's SentencePiece model splits (" " ->
/// "▁", a "▁" prepended, nothing cut into pieces): normalizer Prepend("▁") + Replace(" ", "▁")
/// and no pre-tokenizer, or the Metaspace pre-tokenizer (prepending, not splitting) and no
/// normalizer. `swallow vocab` learns pieces for that text.
pub fn normalizes_as_llama(v: &Value) -> Result<(), String> {
    match parse_steps(v)?.as_slice() {
        [Step::Prepend(p), Step::Replace(a, b)] if p == "▁" && a == " " && b == "▁" => Ok(()),
        [Step::Metaspace { replacement: '▁', prepend: true, split: false }] => Ok(()),
        steps => Err(format!(
            "its normalization {steps:?} is not SentencePiece's: expected normalizer Sequence[Prepend(\"▁\"), Replace(\" \", \"▁\")] and no pre-tokenizer, or pre-tokenizer Metaspace(replacement \"▁\", prepending, split false) and no normalizer"
        )),
    }
}

fn byte_token(b: u8) -> String {
    format!("<0x{b:02X}>")
}

impl SentencePieceBpe {
    /// The encoder for tokenizer.json `v` (a BPE model without a byte-level pre-tokenizer), or why
    /// not.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let m = &v["model"];
        let empty = |x: &Value| x.is_null() || x.as_str() == Some("");
        if m["type"] != "BPE" {
            return Err(format!("model {}", m["type"]));
        }
        if !(m["dropout"].is_null() || m["dropout"].as_f64() == Some(0.0)) {
            return Err("BPE dropout".into());
        }
        if !empty(&m["continuing_subword_prefix"]) || !empty(&m["end_of_word_suffix"]) {
            return Err("BPE subword prefix/suffix".into());
        }
        let steps = parse_steps(v)?;
        let model = Model::from_json(m)?;
        let byte_fallback = m["byte_fallback"] == true;
        let fuse_unk = m["fuse_unk"] == true;
        let unk = m["unk_token"].as_str().and_then(|u| model.vocab.get(u).copied());
        if !m["unk_token"].is_null() && unk.is_none() {
            return Err(format!("unk_token {} is not in the vocabulary", m["unk_token"]));
        }
        let mut char_ids = FxHashMap::default();
        let mut ascii_ids = [NONE; 128];
        for (tok, &id) in &model.vocab {
            let mut cs = tok.chars();
            if let (Some(c), None) = (cs.next(), cs.next()) {
                char_ids.insert(c as u32, id);
                if c.is_ascii() {
                    ascii_ids[c as usize] = id;
                }
            }
        }
        let partial_bytes: FxHashMap<u8, u32> = if byte_fallback {
            (0..=255u8).filter_map(|b| model.vocab.get(&byte_token(b)).map(|&id| (b, id))).collect()
        } else {
            FxHashMap::default()
        };
        let byte_ids = (partial_bytes.len() == 256).then(|| std::array::from_fn(|b| partial_bytes[&(b as u8)]));
        // Cutting is exact when every merge joins characters (no byte or unknown token takes part,
        // so a merged token's string is its characters) and no unknown token is held back across
        // a cut (none occurs when byte fallback covers every byte).
        let special: FxHashSet<u32> = partial_bytes.values().copied().chain(unk).collect();
        let merges_chars = !model.merges.iter().any(|(a, b, _)| special.contains(a) || special.contains(b));
        let unk_possible = unk.is_some() && byte_ids.is_none();
        let joins = (merges_chars && !unk_possible).then(|| {
            let by_id = model.tokens_by_id();
            Joins::new(model.merges.iter().map(|(_, _, new)| by_id[new].chars().map(|c| c as u32).collect()))
        });
        let whole = (m["ignore_merges"] == true).then(|| model.vocab.iter().map(|(s, &id)| (s.clone(), id)).collect());
        Ok(SentencePieceBpe {
            steps,
            char_ids,
            ascii_ids,
            byte_ids,
            partial_bytes,
            byte_fallback,
            unk,
            fuse_unk,
            whole,
            merges: Merges::new(&model),
            joins,
            tag: cache_tag(),
        })
    }

    /// What the tokenizer.json's steps do, for the encoder's name.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .steps
            .iter()
            .map(|s| match s {
                Step::Prepend(p) => format!("Prepend({p})"),
                Step::Replace(a, b) => format!("Replace({a:?}->{b})"),
                Step::Metaspace { prepend, split, .. } => format!("Metaspace(prepend {prepend}, split {split})"),
                Step::Digits { individual } => format!("Digits(individual {individual})"),
            })
            .collect();
        if self.byte_fallback {
            parts.push("byte fallback".into());
        }
        parts.join(" + ")
    }

    /// Characters the normalization may introduce (added tokens matched after it are looked for
    /// without them: [`crate::tokenize::special::AddedTokens`]).
    pub fn changed_chars(&self) -> Vec<char> {
        let mut out = Vec::new();
        for step in &self.steps {
            match step {
                Step::Prepend(p) => out.extend(p.chars()),
                Step::Replace(a, b) => out.extend(a.chars().chain(b.chars())),
                Step::Metaspace { replacement, .. } => out.extend([' ', *replacement]),
                Step::Digits { .. } => {}
            }
        }
        out
    }

    /// The normalized text and, for each of its characters, whether a piece must start there.
    fn normalize(&self, text: &str) -> (String, Vec<bool>) {
        let mut s = text.to_string();
        let mut metaspace_split = None;
        let mut digits = None;
        for step in &self.steps {
            match step {
                Step::Prepend(p) => {
                    if !s.is_empty() {
                        s.insert_str(0, p);
                    }
                }
                Step::Replace(a, b) => {
                    if s.contains(a.as_str()) {
                        s = s.replace(a.as_str(), b);
                    }
                }
                Step::Metaspace { replacement, prepend, split } => {
                    if s.contains(' ') {
                        s = s.replace(' ', replacement.encode_utf8(&mut [0; 4]));
                    }
                    if *prepend && !s.is_empty() && !s.starts_with(*replacement) {
                        s.insert(0, *replacement);
                    }
                    if *split {
                        metaspace_split = Some(*replacement);
                    }
                }
                Step::Digits { individual } => digits = Some(*individual),
            }
        }
        let mut starts = Vec::new();
        if metaspace_split.is_some() || digits.is_some() {
            let mut prev: Option<char> = None;
            for c in s.chars() {
                let mut cut = Some(c) == metaspace_split;
                if let (Some(individual), Some(p)) = (digits, prev) {
                    let (a, b) = (p.is_numeric(), c.is_numeric());
                    cut |= if individual { a || b } else { a != b };
                }
                starts.push(cut && prev.is_some());
                prev = Some(c);
            }
        }
        (s, starts)
    }

    /// Append the initial symbols of `seg` to `sym`, as tokenizers' `BPE::merge_word` makes them:
    /// an unknown character's token is held back until the next known character or the end (so
    /// byte-fallback tokens in between come first), and fused with the next unknown one.
    fn symbols(&self, seg: &str, sym: &mut Vec<u32>) {
        let mut pending_unk = false;
        for c in seg.chars() {
            let id = if c.is_ascii() { self.ascii_ids[c as usize] } else { self.char_ids.get(&(c as u32)).copied().unwrap_or(NONE) };
            if id != NONE {
                if pending_unk {
                    sym.push(self.unk.unwrap());
                    pending_unk = false;
                }
                sym.push(id);
                continue;
            }
            if self.byte_fallback {
                let mut buf = [0u8; 4];
                let bytes = c.encode_utf8(&mut buf).as_bytes();
                if let Some(t) = &self.byte_ids {
                    sym.extend(bytes.iter().map(|&b| t[b as usize]));
                    continue;
                }
                if bytes.iter().all(|b| self.partial_bytes.contains_key(b)) {
                    sym.extend(bytes.iter().map(|b| self.partial_bytes[b]));
                    continue;
                }
            }
            if let Some(u) = self.unk {
                if pending_unk && !self.fuse_unk {
                    sym.push(u);
                }
                pending_unk = true;
            }
        }
        if pending_unk {
            sym.push(self.unk.unwrap());
        }
    }

    /// Append the ids of `text` (no special tokens) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let (s, starts) = self.normalize(text);
        // Pieces (cut by the pre-tokenizers), then segments (cut where nothing joins).
        let mut pieces: Vec<(usize, usize)> = Vec::new();
        let mut begin = 0;
        for (i, (at, _)) in s.char_indices().enumerate() {
            if starts.get(i) == Some(&true) {
                pieces.push((begin, at));
                begin = at;
            }
        }
        if begin < s.len() {
            pieces.push((begin, s.len()));
        }
        with_cache(self.tag, |cache, scratch| {
            for (a, b) in pieces {
                let piece = &s[a..b];
                if let Some(id) = self.whole.as_ref().and_then(|w| w.get(piece)) {
                    out.push(*id);
                    continue;
                }
                let mut seg_start = 0;
                let mut prev: Option<char> = None;
                let mut emit = |seg: &str, out: &mut Vec<u32>| {
                    if seg.chars().nth(1).is_none() {
                        self.symbols(seg, out); // one character: nothing to merge
                    } else if !cache.extend(seg.as_bytes(), out) {
                        scratch.symbols.clear();
                        let mut sym = std::mem::take(&mut scratch.symbols);
                        self.symbols(seg, &mut sym);
                        self.merges.merge(&mut sym, scratch);
                        cache.insert(seg.as_bytes(), &sym);
                        out.extend_from_slice(&sym);
                        scratch.symbols = sym;
                    }
                };
                match &self.joins {
                    None => emit(piece, out),
                    Some(joins) => {
                        for (at, c) in piece.char_indices() {
                            if let Some(p) = prev {
                                if !joins.joined(p as u32, c as u32) {
                                    emit(&piece[seg_start..at], out);
                                    seg_start = at;
                                }
                            }
                            prev = Some(c);
                        }
                        emit(&piece[seg_start..], out);
                    }
                }
            }
        });
    }
}
