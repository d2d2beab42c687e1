//! A fast encoder for GPT-2-style byte-level BPE tokenizers (the sample tokenizer's kind), giving
//! exactly the ids the `tokenizers` crate gives — checked against it on a corpus in the tests and
//! on the whole benchmark corpus by scripts/bench_prep.py — at several times its speed, because it
//! skips the general machinery (normalized strings with alignments, offsets, per-piece allocations)
//! and caches the ids of frequent pieces per thread.
//!
//! Applies when tokenizer.json is: model BPE (no dropout, no subword prefix/suffix, no byte
//! fallback, merges not ignored), no normalizer, pre-tokenizer ByteLevel without prefix space using
//! its regex, no post-processor or a ByteLevel one (offsets only). Anything else, and any document
//! containing an added token's text (those are split out by the tokenizer first) or a byte without a
//! vocabulary entry, goes through `tokenizers` itself ([`FastBpe::encode`] returns `None`).
//!
//! The pieces: the ByteLevel regex
//! `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` run with the
//! `regex` crate (the engine behind the tokenizer's own regex) without the look-ahead, which is
//! emulated: a whitespace run of two or more characters followed by a non-space gives back its
//! last character. Merging: repeatedly the adjacent pair of lowest merge rank, leftmost first —
//! the order of the tokenizer's priority queue.

use anyhow::{Context, Result};
use regex::Regex;
use serde_json::Value;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::path::Path;

const PATTERN: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";
/// Pieces up to this many bytes are cached per thread (English words, short Japanese runs).
const CACHED_PIECE: usize = 48;
/// Cache entries per thread before it is cleared.
const CACHE_ENTRIES: usize = 200_000;

/// Multiply-xorshift hashing of small integer keys and short byte strings (no DoS concern here).
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for c in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(26);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

pub struct FastBpe {
    regex: Regex,
    /// Id of each single byte (`u32::MAX`: not in the vocabulary).
    byte_ids: [u32; 256],
    /// (left id << 32 | right id) -> (merge rank, merged id).
    merges: FastMap<u64, (u32, u32)>,
    /// Texts of the added tokens, which the tokenizer splits out before anything else.
    added: Vec<String>,
    /// Set per instance so that caches of different tokenizers never mix.
    id: u64,
}

/// Ids of recently seen pieces, tagged with the [`FastBpe::id`] they belong to.
type PieceCache = (u64, FastMap<Box<[u8]>, Box<[u32]>>);

thread_local! {
    static CACHE: RefCell<PieceCache> = RefCell::new((0, FastMap::default()));
}

/// GPT-2's byte <-> printable character table (`bytes_to_unicode`).
fn byte_chars() -> [char; 256] {
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

impl FastBpe {
    /// The encoder for `path`, or `None` when the tokenizer is not of the kind handled here.
    pub fn from_file(path: &Path) -> Result<Option<Self>> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        Ok(Self::from_json(&v))
    }

    fn from_json(v: &Value) -> Option<Self> {
        let m = &v["model"];
        let empty = |x: &Value| x.is_null() || x.as_str() == Some("");
        let byte_level = |x: &Value| {
            x["type"] == "ByteLevel" && x["add_prefix_space"] == false && x["use_regex"] != false
        };
        let ok = m["type"] == "BPE"
            && m["dropout"].is_null()
            && empty(&m["continuing_subword_prefix"])
            && empty(&m["end_of_word_suffix"])
            && m["byte_fallback"] != true
            && m["ignore_merges"] != true
            && v["normalizer"].is_null()
            && byte_level(&v["pre_tokenizer"])
            && (v["post_processor"].is_null() || v["post_processor"]["type"] == "ByteLevel");
        if !ok {
            return None;
        }
        let vocab: HashMap<&str, u32> = m["vocab"]
            .as_object()?
            .iter()
            .map(|(k, id)| Some((k.as_str(), id.as_u64()? as u32)))
            .collect::<Option<_>>()?;
        let chars = byte_chars();
        let byte_ids = chars.map(|c| vocab.get(c.to_string().as_str()).copied().unwrap_or(u32::MAX));
        let mut merges = FastMap::default();
        for (rank, mv) in m["merges"].as_array()?.iter().enumerate() {
            let (a, b) = match mv {
                Value::String(s) => s.split_once(' ')?,
                Value::Array(p) if p.len() == 2 => (p[0].as_str()?, p[1].as_str()?),
                _ => return None,
            };
            let (ia, ib, inew) = (vocab.get(a)?, vocab.get(b)?, vocab.get(format!("{a}{b}").as_str())?);
            merges.entry((*ia as u64) << 32 | *ib as u64).or_insert((rank as u32, *inew));
        }
        let added = v["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["content"].as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Some(FastBpe {
            regex: Regex::new(PATTERN).ok()?,
            byte_ids,
            merges,
            added,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        })
    }

    /// The ids of `text`, or `None` when it must go through `tokenizers` (see the module docs).
    pub fn encode(&self, text: &str) -> Option<Vec<u32>> {
        if self.added.iter().any(|a| !a.is_empty() && text.contains(a.as_str())) {
            return None;
        }
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut scratch = Scratch::default();
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != self.id {
                *c = (self.id, FastMap::default());
            }
            let cache = &mut c.1;
            let mut at = 0;
            while at < text.len() {
                let m = self.regex.find_at(text, at).expect("the pattern matches every character");
                let mut end = m.end();
                let piece = &text[m.start()..end];
                // `\s+(?!\S)`: a whitespace run before a non-space leaves its last character.
                if end < text.len() && piece.chars().all(char::is_whitespace) {
                    let last = piece.chars().next_back().unwrap();
                    if piece.len() > last.len_utf8() {
                        end -= last.len_utf8();
                    }
                }
                let piece = &text.as_bytes()[m.start()..end];
                at = end;
                if piece.len() <= CACHED_PIECE {
                    if let Some(ids) = cache.get(piece) {
                        out.extend_from_slice(ids);
                        continue;
                    }
                }
                let start = out.len();
                self.merge_piece(piece, &mut scratch, &mut out)?;
                if piece.len() <= CACHED_PIECE {
                    if cache.len() >= CACHE_ENTRIES {
                        cache.clear();
                    }
                    cache.insert(piece.into(), out[start..].into());
                }
            }
            Some(out)
        })
    }

    /// BPE of one piece's bytes, appended to `out`.
    fn merge_piece(&self, piece: &[u8], s: &mut Scratch, out: &mut Vec<u32>) -> Option<()> {
        let n = piece.len();
        s.sym.clear();
        for &b in piece {
            let id = self.byte_ids[b as usize];
            if id == u32::MAX {
                return None;
            }
            s.sym.push(id);
        }
        if n == 1 {
            out.push(s.sym[0]);
            return Some(());
        }
        s.next.clear();
        s.next.extend((1..=n).map(|i| i as u32));
        s.prev.clear();
        s.prev.extend((0..n).map(|i| i.saturating_sub(1) as u32)); // prev[0] unused
        s.alive.clear();
        s.alive.resize(n, true);
        s.heap.clear();
        let pair = |a: u32, b: u32| self.merges.get(&((a as u64) << 32 | b as u64)).copied();
        for i in 0..n - 1 {
            if let Some((rank, _)) = pair(s.sym[i], s.sym[i + 1]) {
                s.heap.push(Reverse((rank as u64) << 32 | i as u64));
            }
        }
        while let Some(Reverse(key)) = s.heap.pop() {
            let (rank, pos) = ((key >> 32) as u32, (key & 0xFFFF_FFFF) as usize);
            if !s.alive[pos] || s.next[pos] as usize >= n {
                continue;
            }
            let right = s.next[pos] as usize;
            let Some((r, new)) = pair(s.sym[pos], s.sym[right]) else { continue };
            if r != rank {
                continue; // stale: the pair at `pos` has changed
            }
            s.sym[pos] = new;
            s.alive[right] = false;
            let after = s.next[right] as usize;
            s.next[pos] = after as u32;
            if after < n {
                s.prev[after] = pos as u32;
                if let Some((r, _)) = pair(new, s.sym[after]) {
                    s.heap.push(Reverse((r as u64) << 32 | pos as u64));
                }
            }
            if pos > 0 {
                let before = s.prev[pos] as usize;
                if let Some((r, _)) = pair(s.sym[before], new) {
                    s.heap.push(Reverse((r as u64) << 32 | before as u64));
                }
            }
        }
        let mut i = 0;
        while i < n {
            out.push(s.sym[i]);
            i = s.next[i] as usize;
        }
        Some(())
    }
}

/// Buffers of one piece's merge, reused across pieces.
#[derive(Default)]
struct Scratch {
    sym: Vec<u32>,
    next: Vec<u32>,
    prev: Vec<u32>,
    alive: Vec<bool>,
    heap: BinaryHeap<Reverse<u64>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::Tokenizer;

    /// Every document of the sample corpus, and awkward strings, encode exactly as `tokenizers`.
    #[test]
    fn ids_equal_the_tokenizers_crate() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample");
        let path = root.join("tokenizer.json");
        let fast = FastBpe::from_file(&path).unwrap().expect("the sample tokenizer is byte-level BPE");
        let hf = Tokenizer::from_file(&path).unwrap();
        let mut texts: Vec<String> = Vec::new();
        for f in ["ja.jsonl", "en.jsonl"] {
            for line in std::fs::read_to_string(root.join(f)).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                texts.push(v["text"].as_str().unwrap().to_string());
            }
        }
        for s in [
            "", " ", "  ", "a  b", "a\n\n b", "end   ", "\t\tx", " \u{3000}日本", "it's I'M we'll 'd",
            "x 12345 ٣٤ ½", "🚄🚄 ok", "é\u{301}", "a\r\nb", "  \n  x", "100,000.5円", "<s> and </s> inside",
            "no\u{0}nul", "ｶﾀｶﾅ ＡＢＣ", "  leading", "mixed日本語and English文章。",
        ] {
            texts.push(s.to_string());
        }
        let mut fell_back = 0;
        for t in &texts {
            let want = hf.encode_fast(t.as_str(), true).unwrap().get_ids().to_vec();
            match fast.encode(t) {
                Some(got) => assert_eq!(got, want, "{t:?}"),
                None => fell_back += 1,
            }
            // Twice: the second time from the cache.
            if let Some(got) = fast.encode(t) {
                assert_eq!(got, want, "{t:?} (cached)");
            }
        }
        assert_eq!(fell_back, 1, "only the text with added tokens goes to tokenizers");
    }

    #[test]
    fn other_tokenizer_kinds_are_left_to_tokenizers() {
        let v: Value = serde_json::json!({
            "normalizer": null, "post_processor": null,
            "pre_tokenizer": {"type": "Whitespace"},
            "model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}
        });
        assert!(FastBpe::from_json(&v).is_none());
    }
}
