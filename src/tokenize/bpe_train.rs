//! SentencePiece's BPE trainer for a Llama-2-kind vocabulary, exact and fast: text -> sentences ->
//! words -> characters -> merged pieces, in the order SentencePiece (0.2.3) learns them with the
//! settings Llama 2 was trained with (identity normalization, dummy prefix, split by whitespace,
//! whitespace-only pieces allowed, split by Unicode script, split digits, at most 16 characters a
//! piece). Owns the text-to-words step ([`sentence_words`]), the character coverage
//! ([`char_counts`], [`covered_chars`]), the piece rules (`Shape`) and the merge loop
//! ([`Trainer`]); `vocab.rs` owns everything around it.
//!
//! What SentencePiece does, and so this: a line of text is a sentence; it becomes "▁" + the line
//! with every space replaced by "▁", and the text of SentencePiece's meta pieces (`<unk>`, `<s>`,
//! `</s>`, `<0x00>`..`<0xFF>`) replaced by U+001F, a boundary no piece crosses (in 0.2.3; the tab
//! is an ordinary character). Lines longer than 4,192 bytes, or holding U+2585 (its unknown mark),
//! are skipped. Each "▁" that follows a non-"▁" starts a new word; words are counted. Characters
//! are kept in order of frequency until they cover `character_coverage` of all characters; the
//! rest can be in no piece. Then, again and again, the most frequent pair of adjacent symbols
//! becomes one symbol: highest frequency first, then the shorter piece, then the smaller piece in
//! byte order; a pair whose piece was already learned through other halves is dropped, as
//! SentencePiece drops it. A piece is valid when it has at most 16 characters, "▁" only at its
//! start (or only "▁"s), a digit only alone, and one script (Hiragana, Katakana and "ー" count as
//! Han; combining marks take the script before them; unassigned code points are Common).
//!
//! Exactness: SentencePiece looks for the best pair only among an "active" set (the top 5% by
//! frequency, rebuilt every 100 merges, plus every new pair), an approximation of the global best
//! whose ties at the set's edge fall by hash order. This trainer takes the global best every time,
//! with every tie broken by the piece itself (and, for two pairs spelling the same piece, the
//! shorter left half), so its output is a function of the word counts alone: the same for any
//! thread or rank count and any order of the words. On real text the two agree: every piece at
//! the same id on the fixtures and on 13 MB of Debian's Japanese documentation
//! (scripts/bench_vocab.py compares them).
//!
//! Algorithm: words are cut where no piece can cross (script changes, digits, "x▁", characters
//! outside the coverage) and the distinct segments, counted, are laid end to end as slots (symbol,
//! neighbours, count, the pair starting there). Every pair keeps its exact frequency and the slots
//! where it was seen. A merge sorts its slots, drops the stale ones, reads ahead what it will
//! touch, and at each occurrence takes one off the two neighbouring pairs and adds the two new
//! ones; new pairs all hold the new symbol, so two small maps find them. Whether two pieces may
//! join is decided in O(1) from a summary of each (`Shape`). The best pair comes from a 4-ary
//! max-heap with lazy updates: a popped entry whose frequency is stale goes back with the current
//! one (the frequencies of existing pairs only fall).

use memchr::memmem;
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use std::cmp::Ordering;
use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, UnicodeScript};

/// SentencePiece's whitespace mark.
const WS: char = '\u{2581}';
/// SentencePiece's unknown mark: a line holding it is skipped.
const UNK_MARK: &str = "\u{2585}";
/// What meta-piece text becomes: a boundary that no piece crosses and no piece holds.
const BOUNDARY: char = '\u{1F}';
/// SentencePiece's `max_sentence_length` (bytes): longer lines are skipped.
const MAX_SENTENCE_BYTES: usize = 4192;
/// SentencePiece's `max_sentencepiece_length` (characters).
const MAX_PIECE_CHARS: usize = 16;

/// The words SentencePiece's trainer makes of one line (`nfkc`: NFKC-normalized first), passed to
/// `f`; nothing for a skipped line. `buf` is scratch space, reused from line to line.
pub fn sentence_words(line: &str, nfkc: bool, buf: &mut String, f: impl FnMut(&str)) {
    if line.is_empty() || line.len() > MAX_SENTENCE_BYTES || memmem::find(line.as_bytes(), UNK_MARK.as_bytes()).is_some() {
        return;
    }
    let normalized: String;
    let line = if nfkc {
        normalized = line.nfkc().collect();
        &normalized
    } else {
        line
    };
    buf.clear();
    buf.push(WS);
    for (i, part) in line.split(' ').enumerate() {
        if i > 0 {
            buf.push(WS);
        }
        let mut rest = part;
        while let Some(at) = rest.find('<') {
            buf.push_str(&rest[..at]);
            rest = &rest[at..];
            let n = match meta_piece_len(rest) {
                Some(n) => {
                    buf.push(BOUNDARY);
                    n
                }
                None => {
                    buf.push('<');
                    1
                }
            };
            rest = &rest[n..];
        }
        buf.push_str(rest);
    }
    split_words(buf, f)
}

/// Bytes of the meta piece `s` starts with: `<unk>`, `<s>`, `</s>` or `<0xHH>` (upper-case hex).
fn meta_piece_len(s: &str) -> Option<usize> {
    for m in ["<unk>", "<s>", "</s>"] {
        if s.starts_with(m) {
            return Some(m.len());
        }
    }
    let b = s.as_bytes();
    let hex = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
    (b.len() >= 6 && b.starts_with(b"<0x") && hex(b[3]) && hex(b[4]) && b[5] == b'>').then_some(6)
}

/// SentencePiece's `SplitIntoWords` with whitespace-only pieces allowed: a word starts at the
/// beginning and at every "▁" that follows a non-"▁".
fn split_words(s: &str, mut f: impl FnMut(&str)) {
    let mut start = 0;
    for i in memmem::find_iter(s.as_bytes(), WS.encode_utf8(&mut [0; 3]).as_bytes()) {
        if i > 0 && !s[..i].ends_with(WS) {
            f(&s[start..i]);
            start = i;
        }
    }
    if start < s.len() {
        f(&s[start..]);
    }
}

/// Every character of the words with its count (words weighted by theirs), most frequent first,
/// ties by code point: SentencePiece's order. NUL is not counted, as in SentencePiece.
pub fn char_counts(words: &[(&str, u64)]) -> Vec<(char, u64)> {
    // Basic Multilingual Plane characters counted in a table, the others in a map.
    let chunk = words.len() / (4 * rayon::current_num_threads()) + 1;
    let (bmp, other) = words
        .par_chunks(chunk)
        .map(|ws| {
            let (mut bmp, mut other) = (vec![0u64; 0x10000], FxHashMap::<char, u64>::default());
            for &(w, n) in ws {
                for c in w.chars() {
                    match bmp.get_mut(c as usize) {
                        Some(b) => *b += n,
                        None => *other.entry(c).or_default() += n,
                    }
                }
            }
            (bmp, other)
        })
        .reduce(
            || (vec![0u64; 0x10000], FxHashMap::default()),
            |(mut a, x), (b, y)| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                (a, merge_counts(x, y))
            },
        );
    let mut v: Vec<(char, u64)> = (1..0x10000u32)
        .filter(|&c| bmp[c as usize] > 0)
        .filter_map(|c| Some((char::from_u32(c)?, bmp[c as usize])))
        .chain(other)
        .collect();
    v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// `b` added into `a` (the larger map kept).
pub fn merge_counts<K: std::hash::Hash + Eq>(
    mut a: FxHashMap<K, u64>,
    mut b: FxHashMap<K, u64>,
) -> FxHashMap<K, u64> {
    if a.len() < b.len() {
        std::mem::swap(&mut a, &mut b);
    }
    for (k, n) in b {
        *a.entry(k).or_default() += n;
    }
    a
}

/// The characters SentencePiece keeps for `coverage` (its `character_coverage`), in frequency
/// order: the most frequent ones while those before cover less than `coverage` of all
/// (compared in f32, as SentencePiece does); the boundary mark is never kept.
pub fn covered_chars(counts: &[(char, u64)], coverage: f32) -> Vec<(char, u64)> {
    let all: u64 = counts.iter().map(|c| c.1).sum();
    let mut covered = 0u64;
    let mut out = Vec::new();
    for &(c, n) in counts {
        if (covered as f64 / all as f64) as f32 >= coverage {
            break;
        }
        covered += n;
        if c != BOUNDARY {
            out.push((c, n));
        }
    }
    out
}

fn is_digit(c: char) -> bool {
    c.is_ascii_digit() || ('\u{FF10}'..='\u{FF19}').contains(&c)
}

/// The script SentencePiece gives a character other than "▁": kana and "ー" are Han, unassigned
/// code points Common; `None` for combining marks (Inherited), which take the script before them.
fn script(c: char) -> Option<Script> {
    match c.script() {
        Script::Hiragana | Script::Katakana => Some(Script::Han),
        _ if c == '\u{30FC}' => Some(Script::Han),
        Script::Inherited => None,
        Script::Unknown => Some(Script::Common),
        s => Some(s),
    }
}

/// What SentencePiece's `IsValidSentencePiece` (Llama 2's settings, see the module doc) needs to
/// know of a valid piece to tell whether it can be joined to another. Valid pieces are closed
/// under substrings, so a piece is valid exactly when its two halves are and their shapes join;
/// the trainer checks a new pair in O(1). (The characters SentencePiece also refuses — NUL, space,
/// U+2585, the boundary — never reach a piece here: they are outside the coverage, replaced, or
/// skip their line.)
#[derive(Clone, Copy, Debug, PartialEq)]
struct Shape {
    chars: u32,
    only_ws: bool,
    has_ws: bool,
    digit: bool,
    /// Script of the first and of the last character that has one (not "▁", not a combining mark).
    first: Option<Script>,
    last: Option<Script>,
}

impl Shape {
    fn of(c: char) -> Shape {
        let ws = c == WS;
        let s = if ws { None } else { script(c) };
        Shape { chars: 1, only_ws: ws, has_ws: ws, digit: is_digit(c), first: s, last: s }
    }

    /// The shape of `self` followed by `r`, when that is a valid piece: at most 16 characters,
    /// "▁" only first (or only "▁"s), no digit beside anything, one script.
    fn join(&self, r: &Shape) -> Option<Shape> {
        let chars = self.chars + r.chars;
        let ws = (self.only_ws && r.only_ws) || (!r.has_ws && (!self.only_ws || self.chars == 1));
        let script = !matches!((self.last, r.first), (Some(a), Some(b)) if a != b);
        (chars as usize <= MAX_PIECE_CHARS && ws && !self.digit && !r.digit && script).then_some(Shape {
            chars,
            only_ws: self.only_ws && r.only_ws,
            has_ws: self.has_ws || r.has_ws,
            digit: false,
            first: self.first.or(r.first),
            last: r.last.or(self.last),
        })
    }
}

/// The covered characters' symbol ids and shapes: a table for the Basic Multilingual Plane, a map
/// above it.
struct Alphabet {
    bmp: Vec<u32>,
    other: FxHashMap<char, u32>,
    shapes: Vec<Shape>,
}

impl Alphabet {
    fn new(chars: &[char]) -> Alphabet {
        let mut a = Alphabet { bmp: vec![NONE; 0x10000], other: FxHashMap::default(), shapes: Vec::new() };
        for (i, &c) in chars.iter().enumerate() {
            match a.bmp.get_mut(c as usize) {
                Some(id) => *id = i as u32,
                None => {
                    a.other.insert(c, i as u32);
                }
            }
            a.shapes.push(Shape::of(c));
        }
        a
    }

    fn get(&self, c: char) -> Option<(u32, Shape)> {
        let id = match self.bmp.get(c as usize) {
            Some(&id) => id,
            None => *self.other.get(&c)?,
        };
        (id != NONE).then(|| (id, self.shapes[id as usize]))
    }
}

/// The parts of `word` that pieces can span: maximal runs of covered characters (`alphabet`)
/// where every two neighbours can be in one piece, of two characters or more (one forms no pair).
fn segments<'w>(word: &'w str, alphabet: &Alphabet, mut f: impl FnMut(&'w str)) {
    let mut emit = |from: usize, to: usize| {
        let s = &word[from..to];
        if s.chars().nth(1).is_some() {
            f(s);
        }
    };
    let mut start: Option<usize> = None;
    let mut prev: Option<Shape> = None;
    for (i, c) in word.char_indices() {
        let Some((_, shape)) = alphabet.get(c) else {
            if let Some(s) = start.take() {
                emit(s, i);
            }
            prev = None;
            continue;
        };
        match (start, prev) {
            (Some(s), Some(p)) if p.join(&shape).is_none() => {
                emit(s, i);
                start = Some(i);
            }
            (None, _) => start = Some(i),
            _ => {}
        }
        prev = Some(shape);
    }
    if let Some(s) = start {
        emit(s, word.len());
    }
}

/// A piece learned by one merge, with the frequency of its pair when it was chosen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub piece: String,
    pub freq: u64,
}

const NONE: u32 = u32::MAX;
/// Occurrences read ahead at a time by [`Trainer::prefetch`].
const PREFETCH: usize = 32;
/// Children per node of the heap (four 16-byte entries: one cache line).
const ARITY: usize = 4;

/// One character position of the concatenated segments.
#[derive(Clone, Copy)]
struct Slot {
    /// Occurrences of this slot's segment.
    count: u64,
    /// Symbol here (NONE once merged into the symbol on its left).
    sym: u32,
    /// Neighbouring live slots (NONE at the segment's ends).
    next: u32,
    prev: u32,
    /// The pair of this symbol and the next (NONE: none, or no valid piece).
    pair: u32,
}

struct Pair {
    left: u32,
    right: u32,
    /// Slots where the pair was seen; stale ones (`slot.pair` changed) are skipped when merged.
    occurrences: Vec<u32>,
    /// Merged, or dropped as a second spelling of a learned piece.
    done: bool,
}

/// The merge loop over counted words; an iterator of the learned pieces, in order. It ends when
/// no pair of at least `min_frequency` (and at least 1) occurrences is left.
pub struct Trainer {
    /// Symbol id -> its piece and shape (the covered characters first, then one per merge).
    pieces: Vec<Box<str>>,
    shapes: Vec<Shape>,
    slots: Vec<Slot>,
    pairs: Vec<Pair>,
    /// Exact frequency of each pair (apart from `pairs` for locality).
    freq: Vec<u64>,
    /// Max-heap of (frequency when pushed, characters, pair) under [`ranks_before`]; an entry whose
    /// frequency is stale is pushed again with the current one when it comes to the top.
    heap: Vec<(u64, u32, u32)>,
    /// The pairs the merge in progress makes with the symbol before / after the new one.
    with_left: FxHashMap<u32, u32>,
    with_right: FxHashMap<u32, u32>,
    learned: FxHashSet<Box<str>>,
    min_frequency: u64,
}

/// Whether heap entry `a` ranks before `b`: higher frequency, then fewer characters, then the
/// smaller piece (bytes), then the shorter left half (two spellings of one piece).
fn ranks_before(pairs: &[Pair], shapes: &[Shape], pieces: &[Box<str>], a: (u64, u32, u32), b: (u64, u32, u32)) -> bool {
    if (a.0, b.1) != (b.0, a.1) {
        return (a.0, b.1) > (b.0, a.1);
    }
    let (pa, pb) = (&pairs[a.2 as usize], &pairs[b.2 as usize]);
    let bytes = |p: &Pair| pieces[p.left as usize].bytes().chain(pieces[p.right as usize].bytes());
    match bytes(pa).cmp(bytes(pb)) {
        Ordering::Equal => shapes[pa.left as usize].chars < shapes[pb.left as usize].chars,
        o => o == Ordering::Less,
    }
}

impl Trainer {
    /// `words` with their counts (any order); `alphabet`: the covered characters, whose order
    /// numbers the symbols.
    pub fn new(words: &[(&str, u64)], alphabet: &[char], min_frequency: u64) -> Trainer {
        let chars = Alphabet::new(alphabet);
        let per_thread = |n: usize| n.div_ceil(2 * rayon::current_num_threads()).max(1);
        let segs: Vec<(&str, u64)> = words
            .par_chunks(per_thread(words.len()))
            .map(|ws| {
                let mut m = FxHashMap::<&str, u64>::default();
                for &(w, n) in ws {
                    segments(w, &chars, |s| *m.entry(s).or_default() += n);
                }
                m
            })
            .reduce(FxHashMap::default, merge_counts)
            .into_iter()
            .collect();
        let n_slots = segs.par_iter().map(|(s, _)| s.chars().count()).sum();
        let mut t = Trainer {
            pieces: alphabet.iter().map(|c| c.to_string().into()).collect(),
            shapes: chars.shapes.clone(),
            slots: Vec::with_capacity(n_slots),
            pairs: Vec::new(),
            freq: Vec::new(),
            heap: Vec::new(),
            with_left: FxHashMap::default(),
            with_right: FxHashMap::default(),
            learned: FxHashSet::default(),
            min_frequency: min_frequency.max(1),
        };
        let mut pair_of: FxHashMap<(u32, u32), u32> = FxHashMap::default();
        for (s, count) in segs {
            let first = t.slots.len() as u32;
            for c in s.chars() {
                let pos = t.slots.len() as u32;
                let sym = chars.get(c).expect("segments hold covered characters").0;
                t.slots.push(Slot { count, sym, next: pos + 1, prev: if pos == first { NONE } else { pos - 1 }, pair: NONE });
            }
            t.slots.last_mut().expect("segments have two characters or more").next = NONE;
            for pos in first..t.slots.len() as u32 - 1 {
                let (l, r) = (t.slots[pos as usize].sym, t.slots[pos as usize + 1].sym);
                let id = *pair_of.entry((l, r)).or_insert_with(|| t.new_pair(l, r));
                t.occur(pos, id);
            }
        }
        for p in 0..t.pairs.len() as u32 {
            t.push(p);
        }
        t
    }

    /// A new pair id for (l, r), or NONE when they form no valid piece.
    fn new_pair(&mut self, l: u32, r: u32) -> u32 {
        if self.shapes[l as usize].join(&self.shapes[r as usize]).is_none() {
            return NONE;
        }
        self.pairs.push(Pair { left: l, right: r, occurrences: Vec::new(), done: false });
        self.freq.push(0);
        self.pairs.len() as u32 - 1
    }

    /// Pair `id` (or NONE) now starts at slot `pos`.
    fn occur(&mut self, pos: u32, id: u32) {
        let slot = &mut self.slots[pos as usize];
        slot.pair = id;
        if id != NONE {
            self.freq[id as usize] += slot.count;
            self.pairs[id as usize].occurrences.push(pos);
        }
    }

    /// The pair starting at slot `pos` loses that occurrence.
    fn unoccur(&mut self, pos: u32) {
        let slot = self.slots[pos as usize];
        if slot.pair != NONE {
            self.freq[slot.pair as usize] -= slot.count;
        }
    }

    /// Push pair `p` with its current frequency, when that is enough to be merged.
    fn push(&mut self, p: u32) {
        let freq = self.freq[p as usize];
        if freq < self.min_frequency {
            return;
        }
        let pair = &self.pairs[p as usize];
        let chars = self.shapes[pair.left as usize].chars + self.shapes[pair.right as usize].chars;
        let (heap, before) = (&mut self.heap, |a, b| ranks_before(&self.pairs, &self.shapes, &self.pieces, a, b));
        heap.push((freq, chars, p));
        let mut i = heap.len() - 1;
        while i > 0 && before(heap[i], heap[(i - 1) / ARITY]) {
            heap.swap(i, (i - 1) / ARITY);
            i = (i - 1) / ARITY;
        }
    }

    fn pop(&mut self) -> Option<(u64, u32, u32)> {
        let (heap, before) = (&mut self.heap, |a, b| ranks_before(&self.pairs, &self.shapes, &self.pieces, a, b));
        let top = (!heap.is_empty()).then(|| heap.swap_remove(0))?;
        let mut i = 0;
        loop {
            let mut best = i;
            for c in ARITY * i + 1..(ARITY * i + ARITY + 1).min(heap.len()) {
                if before(heap[c], heap[best]) {
                    best = c;
                }
            }
            if best == i {
                return Some(top);
            }
            heap.swap(i, best);
            i = best;
        }
    }

    /// Read what merging at `positions` will touch (their slots, the neighbours' and the
    /// neighbouring pairs' frequencies) in one pass of independent loads, which the processor
    /// overlaps; the merge loop, which waits on each of its reads, then finds them in cache.
    fn prefetch(&self, positions: &[u32]) {
        let mut touched = 0u64;
        for &pos in positions {
            let s = self.slots[pos as usize];
            for n in [s.prev, s.next] {
                if let Some(t) = self.slots.get(n as usize) {
                    touched ^= self.freq.get(t.pair as usize).copied().unwrap_or(t.count);
                }
            }
        }
        std::hint::black_box(touched);
    }

    /// Merge every occurrence of pair `id` into the new symbol `piece`, left to right within each
    /// segment. The pairs with the new symbol are all new: found in two small maps by the other
    /// symbol.
    fn merge(&mut self, id: u32, piece: Box<str>) {
        let x = self.pieces.len() as u32;
        let (a, b) = (self.pairs[id as usize].left, self.pairs[id as usize].right);
        self.pieces.push(piece);
        let shape = self.shapes[a as usize].join(&self.shapes[b as usize]).expect("pairs are valid pieces");
        self.shapes.push(shape);
        self.pairs[id as usize].done = true;
        let first_new = self.pairs.len() as u32;
        self.with_left.clear();
        self.with_right.clear();
        let mut occurrences = std::mem::take(&mut self.pairs[id as usize].occurrences);
        occurrences.sort_unstable();
        occurrences.retain(|&pos| self.slots[pos as usize].pair == id); // drop the stale ones
        for (i, &pos) in occurrences.iter().enumerate() {
            if i % PREFETCH == 0 {
                self.prefetch(&occurrences[i..(i + PREFETCH).min(occurrences.len())]);
            }
            let s = self.slots[pos as usize];
            if s.pair != id {
                continue; // stale, or taken by the merge just before (a run of a == b)
            }
            if s.prev != NONE {
                self.unoccur(s.prev);
            }
            self.unoccur(s.next);
            let after = self.slots[s.next as usize].next;
            self.slots[s.next as usize].sym = NONE;
            self.slots[s.next as usize].pair = NONE;
            self.slots[pos as usize].sym = x;
            self.slots[pos as usize].next = after;
            if s.prev != NONE {
                let l = self.slots[s.prev as usize].sym;
                let p = match self.with_left.get(&l) {
                    Some(&p) => p,
                    None => {
                        let p = self.new_pair(l, x);
                        self.with_left.insert(l, p);
                        p
                    }
                };
                self.occur(s.prev, p);
            }
            if after != NONE {
                self.slots[after as usize].prev = pos;
                let r = self.slots[after as usize].sym;
                let p = match self.with_right.get(&r) {
                    Some(&p) => p,
                    None => {
                        let p = self.new_pair(x, r);
                        self.with_right.insert(r, p);
                        p
                    }
                };
                self.occur(pos, p);
            } else {
                self.slots[pos as usize].pair = NONE;
            }
        }
        for p in first_new..self.pairs.len() as u32 {
            self.push(p);
        }
    }
}

impl Iterator for Trainer {
    type Item = Learned;

    fn next(&mut self) -> Option<Learned> {
        while let Some((freq, _, p)) = self.pop() {
            let pair = &self.pairs[p as usize];
            if pair.done {
                continue;
            }
            if freq != self.freq[p as usize] {
                self.push(p);
                continue;
            }
            let piece: Box<str> = format!("{}{}", self.pieces[pair.left as usize], self.pieces[pair.right as usize]).into();
            if !self.learned.insert(piece.clone()) {
                self.pairs[p as usize].done = true; // learned through other halves
                continue;
            }
            self.merge(p, piece.clone());
            return Some(Learned { piece: piece.into(), freq });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words_of(lines: &[&str]) -> Vec<(String, u64)> {
        let mut m: FxHashMap<String, u64> = FxHashMap::default();
        for l in lines {
            sentence_words(l, false, &mut String::new(), |w| *m.entry(w.to_string()).or_default() += 1);
        }
        let mut v: Vec<_> = m.into_iter().collect();
        v.sort();
        v
    }

    fn borrowed(w: &[(String, u64)]) -> Vec<(&str, u64)> {
        w.iter().map(|(s, n)| (s.as_str(), *n)).collect()
    }

    fn train(words: &[(&str, u64)], min_frequency: u64) -> Vec<Learned> {
        let alphabet: Vec<char> = covered_chars(&char_counts(words), 1.0).into_iter().map(|c| c.0).collect();
        Trainer::new(words, &alphabet, min_frequency).collect()
    }

    #[test]
    fn sentences_become_words_as_sentencepiece_splits_them() {
        let mut got = Vec::new();
        sentence_words(" this is  a<s>pen", false, &mut String::new(), |w| got.push(w.to_string()));
        assert_eq!(got, ["▁▁this", "▁is", "▁▁a\u{1F}pen"]);
        got.clear();
        sentence_words("x<0x41><0xg1></s><unk>", false, &mut String::new(), |w| got.push(w.to_string()));
        assert_eq!(got, ["▁x\u{1F}<0xg1>\u{1F}\u{1F}"]);
        got.clear();
        sentence_words("ＡＢ　ｶﾞ", true, &mut String::new(), |w| got.push(w.to_string()));
        assert_eq!(got, ["▁AB", "▁ガ"]);
        for skipped in ["", "a▅b", &"あ".repeat(1398)] {
            sentence_words(skipped, false, &mut String::new(), |w| panic!("{w:?} from a skipped line"));
        }
        sentence_words(&"あ".repeat(1397), false, &mut String::new(), |w| assert_eq!(w.chars().count(), 1398));
    }

    /// Whether SentencePiece (Llama 2's settings) accepts `piece`, from the shapes of its characters.
    fn valid_piece(piece: &str) -> bool {
        let mut shapes = piece.chars().map(Shape::of);
        shapes.next().is_some_and(|first| shapes.try_fold(first, |s, c| s.join(&c)).is_some())
    }

    /// SentencePiece's `IsValidSentencePiece` restated directly (Llama 2's settings).
    fn reference_valid(piece: &str) -> bool {
        let n = piece.chars().count();
        if n == 0 || n > MAX_PIECE_CHARS {
            return false;
        }
        let only_ws = piece.chars().all(|c| c == WS);
        let mut prev: Option<Script> = None; // any
        for (i, c) in piece.chars().enumerate() {
            if c == WS {
                if i > 0 && !only_ws {
                    return false;
                }
                continue;
            }
            if is_digit(c) && n > 1 {
                return false;
            }
            let s = script(c).or(prev);
            if matches!((s, prev), (Some(s), Some(p)) if s != p) {
                return false;
            }
            prev = s;
        }
        true
    }

    #[test]
    fn joined_shapes_decide_validity_as_sentencepiece_does() {
        let alphabet: Vec<char> = "▁a1あア漢ーか\u{3099}\u{301}。)\tＡ".chars().collect();
        let mut x = 88172645463325252u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 1 + (x % 18) as usize;
            let s: String = (0..len).map(|i| alphabet[((x >> (3 * i)) % alphabet.len() as u64) as usize]).collect();
            assert_eq!(valid_piece(&s), reference_valid(&s), "{s:?}");
        }
    }

    #[test]
    fn pieces_follow_sentencepiece_rules() {
        let ok = valid_piece;
        for good in ["▁あ", "ひらがなカタカナ漢字", "ラーメン", "▁▁", "▁▁▁", "abc", "か\u{3099}", "\u{301}a", "9", "。、", ")\t"] {
            assert!(ok(good), "{good:?} should be valid");
        }
        for bad in ["あa", "a1", "12", "a▁", "▁▁a", "▁a▁", "a。", "1234567890123456", &"a".repeat(17), "かa\u{301}"] {
            assert!(!ok(bad), "{bad:?} should be invalid");
        }
        assert!(ok(&"a".repeat(16)));
    }

    #[test]
    fn coverage_keeps_the_most_frequent_characters_in_order() {
        let counts = vec![('a', 50), ('\u{1F}', 30), ('b', 15), ('c', 4), ('d', 1)];
        let chars = |cov: f32| covered_chars(&counts, cov).into_iter().map(|c| c.0).collect::<String>();
        assert_eq!(chars(1.0), "abcd");
        assert_eq!(chars(0.995), "abcd");
        assert_eq!(chars(0.99), "abc"); // 99 of 100 covered: enough
        assert_eq!(chars(0.96), "abc");
        assert_eq!(chars(0.95), "ab");
        assert_eq!(chars(0.5), "a");
        let w = words_of(&["ba ab", "a"]);
        assert_eq!(char_counts(&borrowed(&w)), [('a', 3), ('▁', 3), ('b', 2)]);
    }

    /// The merge loop restated naively: every step recounts every pair of every word.
    fn naive(words: &[(&str, u64)], min_frequency: u64) -> Vec<Learned> {
        let alphabet: FxHashSet<char> = covered_chars(&char_counts(words), 1.0).into_iter().map(|c| c.0).collect();
        let mut ws: Vec<(Vec<Option<String>>, u64)> = words
            .iter()
            .map(|&(w, n)| (w.chars().map(|c| alphabet.contains(&c).then(|| c.to_string())).collect(), n))
            .collect();
        let mut learned = Vec::new();
        let mut dropped: FxHashSet<(String, String)> = FxHashSet::default();
        loop {
            let mut freq: FxHashMap<(String, String), u64> = FxHashMap::default();
            for (w, n) in &ws {
                for p in w.windows(2) {
                    if let [Some(l), Some(r)] = p {
                        let s = format!("{l}{r}");
                        if valid_piece(&s) && !dropped.contains(&(l.clone(), r.clone())) {
                            *freq.entry((l.clone(), r.clone())).or_default() += n;
                        }
                    }
                }
            }
            let best = freq.into_iter().filter(|p| p.1 >= min_frequency.max(1)).max_by(|(a, fa), (b, fb)| {
                let (sa, sb) = (format!("{}{}", a.0, a.1), format!("{}{}", b.0, b.1));
                fa.cmp(fb)
                    .then(sb.chars().count().cmp(&sa.chars().count()))
                    .then(sb.cmp(&sa))
                    .then(b.0.chars().count().cmp(&a.0.chars().count()))
            });
            let Some(((l, r), f)) = best else { return learned };
            let piece = format!("{l}{r}");
            if learned.iter().any(|x: &Learned| *x.piece == *piece) {
                dropped.insert((l, r));
                continue;
            }
            learned.push(Learned { piece: piece.clone(), freq: f });
            for (w, _) in &mut ws {
                let mut out = Vec::with_capacity(w.len());
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && w[i].as_deref() == Some(&l) && w[i + 1].as_deref() == Some(&r) {
                        out.push(Some(piece.clone()));
                        i += 2;
                    } else {
                        out.push(w[i].take());
                        i += 1;
                    }
                }
                *w = out;
            }
        }
    }

    /// A little random corpus over an alphabet that exercises every rule.
    fn corpus(seed: u64, lines: usize) -> Vec<String> {
        let alphabet: Vec<char> = "aab ba  の日本語アーカ\u{3099}1２。、 xyz\t<s>".chars().collect();
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut rnd = |m: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % m as u64) as usize
        };
        (0..lines)
            .map(|_| {
                let len = 1 + rnd(24);
                (0..len).map(|_| alphabet[rnd(alphabet.len())]).collect()
            })
            .collect()
    }

    #[test]
    fn merges_equal_the_naive_restatement() {
        for seed in 0..40 {
            let lines = corpus(seed, 30 + seed as usize * 5);
            let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
            let w = words_of(&refs);
            let w = borrowed(&w);
            for min_frequency in [0, 3] {
                assert_eq!(train(&w, min_frequency), naive(&w, min_frequency), "seed {seed}, min frequency {min_frequency}");
            }
        }
    }

    #[test]
    fn runs_of_one_symbol_merge_left_to_right_and_duplicates_are_dropped() {
        let w = [("aaaaa", 4), ("▁aaa", 1)];
        let got: Vec<String> = train(&w, 0).into_iter().map(|l| l.piece.to_string()).collect();
        assert_eq!(got, ["aa", "aaa", "aaaaa", "▁aaa"]);
        assert_eq!(train(&w, 0), naive(&w, 0));
        // "abc" through "ab" + "c" first; "a" + "bc" is then dropped, never merged.
        let w = [("abc", 10), ("bc", 8), ("ab", 9), ("abcz", 1), ("xa", 1)];
        assert_eq!(train(&w, 0), naive(&w, 0));
    }

    #[test]
    fn output_depends_only_on_the_word_counts() {
        let lines = corpus(7, 400);
        let refs: Vec<&str> = lines.iter().map(|s| s.as_str()).collect();
        let w = words_of(&refs);
        let mut w = borrowed(&w);
        let want = train(&w, 0);
        assert!(want.len() > 50);
        w.reverse();
        assert_eq!(train(&w, 0), want);
        // The same counts split over repeated entries (as ranks would hold them).
        let split: Vec<(&str, u64)> = w.iter().flat_map(|&(s, n)| (0..n).map(move |_| (s, 1))).collect();
        assert_eq!(train(&split, 0), want);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            assert_eq!(pool.install(|| train(&w, 0)), want);
        }
    }
}
