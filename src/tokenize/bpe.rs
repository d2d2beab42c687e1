//! The BPE merge engine shared by the fast encoders: the merge table of a tokenizer.json BPE model,
//! the merge of one piece's symbols exactly as the `tokenizers` crate does it, where a piece may be
//! cut without changing the result ([`Joins`]), and a per-thread cache of merged segments.
//!
//! Merging (tokenizers' `Word::merge_all`): repeatedly the adjacent pair of lowest merge rank,
//! leftmost first; a queued pair is stale when the pair at its position no longer makes the same
//! token. Ranks are the merges' positions in the file; a pair listed twice keeps its last rank, as
//! the crate's merge map (a hash map filled in order) does.
//!
//! Cutting: every symbol a merge makes is a vocabulary token, so a merge can only ever join two
//! units (characters or bytes) that stand next to each other inside some merged token. Where two
//! adjacent units never do, no symbol can span the gap, and the merges on either side run
//! independently: the piece is cut there and each segment merged (or found in the cache) alone.
//! The result is identical to merging the whole piece. This is what makes long Japanese pieces
//! cheap: most of their segments are short and repeat.

use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;
use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

fn pair_key(a: u32, b: u32) -> u64 {
    (a as u64) << 32 | b as u64
}

/// A BPE model's vocabulary and merges, as tokenizer.json holds them.
pub struct Model {
    pub vocab: FxHashMap<String, u32>,
    /// The merges in file order, as (left, right, merged) ids.
    pub merges: Vec<(u32, u32, u32)>,
}

impl Model {
    /// The model of a tokenizer.json; `Err` says what the file lacks.
    pub fn from_json(model: &Value) -> Result<Self, String> {
        let vocab: FxHashMap<String, u32> = model["vocab"]
            .as_object()
            .ok_or("model.vocab is not a map")?
            .iter()
            .map(|(k, id)| Ok((k.clone(), id.as_u64().filter(|&i| i < u32::MAX as u64).ok_or_else(|| format!("token {k:?} has no valid id"))? as u32)))
            .collect::<Result<_, String>>()?;
        let raw = model["merges"].as_array().ok_or("model.merges is not a list")?;
        let mut merges = Vec::with_capacity(raw.len());
        for m in raw {
            let (a, b) = match m {
                Value::String(s) => s.split_once(' ').ok_or_else(|| format!("merge {s:?} is not two tokens"))?,
                Value::Array(p) if p.len() == 2 => match (p[0].as_str(), p[1].as_str()) {
                    (Some(a), Some(b)) => (a, b),
                    _ => return Err(format!("merge {m} is not two strings")),
                },
                _ => return Err(format!("merge {m} is neither \"a b\" nor [a, b]")),
            };
            let id = |t: &str| vocab.get(t).copied().ok_or_else(|| format!("merge ({a:?}, {b:?}): {t:?} is not in the vocabulary"));
            merges.push((id(a)?, id(b)?, id(&format!("{a}{b}"))?));
        }
        Ok(Model { vocab, merges })
    }

    /// Tokens by id (for ids that have one).
    pub fn tokens_by_id(&self) -> FxHashMap<u32, &str> {
        self.vocab.iter().map(|(s, &id)| (id, s.as_str())).collect()
    }
}

/// The merge table: (left, right) -> (rank, merged id).
pub struct Merges {
    table: FxHashMap<u64, (u32, u32)>,
}

impl Merges {
    pub fn new(model: &Model) -> Self {
        let mut table = FxHashMap::default();
        for (rank, &(a, b, new)) in model.merges.iter().enumerate() {
            table.insert(pair_key(a, b), (rank as u32, new));
        }
        Merges { table }
    }

    fn get(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.table.get(&pair_key(a, b)).copied()
    }

    /// Merge `sym` (the initial symbols of one piece) in place.
    pub fn merge(&self, sym: &mut Vec<u32>, s: &mut Scratch) {
        let n = sym.len();
        if n < 2 {
            return;
        }
        s.next.clear();
        s.next.extend(1..=n as u32);
        s.prev.clear();
        s.prev.extend((0..n as u32).map(|i| i.wrapping_sub(1)));
        s.heap.clear();
        for i in 0..n - 1 {
            if let Some((rank, _)) = self.get(sym[i], sym[i + 1]) {
                s.heap.push(Reverse((rank as u64) << 32 | i as u64));
            }
        }
        const GONE: u32 = u32::MAX;
        while let Some(Reverse(key)) = s.heap.pop() {
            let (rank, pos) = ((key >> 32) as u32, (key & 0xFFFF_FFFF) as usize);
            let right = s.next[pos] as usize;
            if s.next[pos] == GONE || right >= n {
                continue;
            }
            let Some((r, new)) = self.get(sym[pos], sym[right]) else { continue };
            if r != rank {
                continue; // stale: the pair at `pos` has changed
            }
            sym[pos] = new;
            let after = s.next[right];
            s.next[right] = GONE;
            s.next[pos] = after;
            if (after as usize) < n {
                s.prev[after as usize] = pos as u32;
                if let Some((r, _)) = self.get(new, sym[after as usize]) {
                    s.heap.push(Reverse((r as u64) << 32 | pos as u64));
                }
            }
            if pos > 0 {
                let before = s.prev[pos] as usize;
                if let Some((r, _)) = self.get(sym[before], new) {
                    s.heap.push(Reverse((r as u64) << 32 | before as u64));
                }
            }
        }
        let mut w = 0;
        let mut i = 0;
        while i < n {
            sym[w] = sym[i];
            w += 1;
            i = s.next[i] as usize;
        }
        sym.truncate(w);
    }
}

/// Buffers of one piece's merge, reused across pieces.
#[derive(Default)]
pub struct Scratch {
    next: Vec<u32>,
    prev: Vec<u32>,
    heap: BinaryHeap<Reverse<u64>>,
    pub symbols: Vec<u32>,
}

/// Which adjacent units (characters or bytes, as u32) stand next to each other inside some token
/// a merge makes: a piece may be cut between any other two ([module docs](self)).
pub struct Joins {
    pairs: FxHashSet<u64>,
}

impl Joins {
    /// From the units of every token a merge makes.
    pub fn new<I: IntoIterator<Item = Vec<u32>>>(merged_tokens: I) -> Self {
        let mut pairs = FxHashSet::default();
        for units in merged_tokens {
            for w in units.windows(2) {
                pairs.insert(pair_key(w[0], w[1]));
            }
        }
        Joins { pairs }
    }

    pub fn joined(&self, a: u32, b: u32) -> bool {
        self.pairs.contains(&pair_key(a, b))
    }
}

/// Segments shorter than this many bytes are cached per thread (as `tokenizers` caches words).
pub const CACHED_PIECE: usize = 256;
/// Bytes of cached keys and ids per thread before the cache is cleared.
const CACHE_BYTES: usize = 64 << 20;

/// One thread's cache of merged segments (tagged with the encoder they belong to) and merge buffers.
#[derive(Default)]
struct ThreadState {
    tag: u64,
    map: FxHashMap<Box<[u8]>, Box<[u32]>>,
    bytes: usize,
    scratch: Scratch,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

/// A fresh tag for an encoder's cache entries (caches of different tokenizers never mix).
pub fn cache_tag() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Run `f` with this thread's segment cache for encoder `tag` and its merge buffers.
pub fn with_cache<T>(tag: u64, f: impl FnOnce(&mut SegmentMemo, &mut Scratch) -> T) -> T {
    STATE.with(|c| {
        let state = &mut *c.borrow_mut();
        if state.tag != tag {
            state.tag = tag;
            state.map.clear();
            state.bytes = 0;
        }
        f(&mut SegmentMemo { map: &mut state.map, bytes: &mut state.bytes }, &mut state.scratch)
    })
}

/// The cache as an encoder sees it.
pub struct SegmentMemo<'a> {
    map: &'a mut FxHashMap<Box<[u8]>, Box<[u32]>>,
    bytes: &'a mut usize,
}

impl SegmentMemo<'_> {
    /// Append the cached ids of `key` to `out`; false when not cached.
    pub fn extend(&self, key: &[u8], out: &mut Vec<u32>) -> bool {
        match self.map.get(key) {
            Some(ids) => {
                out.extend_from_slice(ids);
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, key: &[u8], ids: &[u32]) {
        if key.len() >= CACHED_PIECE {
            return;
        }
        if *self.bytes >= CACHE_BYTES {
            self.map.clear();
            *self.bytes = 0;
        }
        *self.bytes += key.len() + 4 * ids.len() + 48;
        self.map.insert(key.into(), ids.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(vocab: &[&str], merges: &[(&str, &str)]) -> Model {
        let v: serde_json::Map<String, Value> = vocab.iter().enumerate().map(|(i, t)| (t.to_string(), (i as u64).into())).collect();
        let m: Vec<Value> = merges.iter().map(|(a, b)| serde_json::json!([a, b])).collect();
        Model::from_json(&serde_json::json!({"vocab": v, "merges": m})).unwrap()
    }

    /// Lowest rank first, leftmost among equals; a pair listed twice keeps its last rank.
    #[test]
    fn merges_follow_rank_then_position() {
        let m = model(&["a", "b", "c", "ab", "bc", "abc"], &[("b", "c"), ("a", "b"), ("ab", "c")]);
        let merges = Merges::new(&m);
        let mut s = Scratch::default();
        let mut sym = vec![0, 1, 2]; // a b c: "bc" (rank 0) first, then nothing joins a + bc
        merges.merge(&mut sym, &mut s);
        assert_eq!(sym, vec![0, 4]);
        let mut sym = vec![0, 1, 0, 1]; // a b a b: both "ab", leftmost first, same result
        merges.merge(&mut sym, &mut s);
        assert_eq!(sym, vec![3, 3]);
        let twice = model(&["a", "b", "c", "ab", "bc"], &[("a", "b"), ("b", "c"), ("a", "b")]);
        let mut sym = vec![0, 1, 2]; // "ab" now ranks after "bc"
        Merges::new(&twice).merge(&mut sym, &mut Scratch::default());
        assert_eq!(sym, vec![0, 4]);
    }

    #[test]
    fn bad_models_say_what_is_wrong() {
        let e = Model::from_json(&serde_json::json!({"vocab": {"a": 0}, "merges": ["a b"]})).err().unwrap();
        assert!(e.contains("\"b\" is not in the vocabulary"), "{e}");
        let e = Model::from_json(&serde_json::json!({"vocab": {"a": 0}, "merges": [5]})).err().unwrap();
        assert!(e.contains("neither"), "{e}");
    }
}
