//! `swallow vocab`: Swallow's vocabulary expansion (Fujii et al. 2024) as one command. Owns the
//! base tokenizer's checks, reading and counting the input on every rank, the reduction of the
//! counts to rank 0, the choice of the pieces to append, their merges, the output directory and
//! the held-out report; the pieces themselves come from [`crate::tokenize::bpe_train`].
//!
//! 1. Every rank counts the words of its share of the input ([`pieces_for_rank`]; JSONL, `.txt`,
//!    `.gz`, `.zst`; each line of a document is a sentence), on `workers` threads; the counts go
//!    up a binary tree of ranks to rank 0 and are summed, so what follows depends only on the
//!    input, not on the thread or rank count.
//! 2. Rank 0 learns pieces as SentencePiece's BPE trainer does and appends, after every id of the
//!    base, the ones the base lacks: merged pieces in the order they were learned, then the covered
//!    characters the base lacks, most frequent first (SentencePiece's own id order), until the
//!    vocabulary has the requested size rounded up to a multiple of 8 (Swallow: 32,000 -> 43,176).
//! 3. Each new piece gets the merges transformers' SentencePiece converter gives a piece appended
//!    with a lower score: every split into two vocabulary tokens, by (id of left, id of right),
//!    after all of the base's merges (so text the new pieces do not match is encoded as before).
//! 4. DIR gets tokenizer.json (the base's file with the model's vocab and merges extended,
//!    everything else as it was, byte for byte), tokenizer_config.json (the base's, else a minimal
//!    one) and special_tokens_map.json (if the base has one); each under a temporary name, renamed
//!    when all are written; a directory this run created is removed on error.
//! 5. Held-out files are encoded with the base and the new tokenizer: tokens per character.
//!
//! Byte-level bases (Llama 3 kind) are refused: Swallow's method appends SentencePiece pieces with
//! converter merges, which is defined for SentencePiece-style vocabularies (byte fallback, "▁"
//! for spaces). A byte-level vocabulary would need pieces learned in its byte alphabet over its
//! regex's pre-tokens and a different merge construction; Llama 3's 128k vocabulary already
//! covers Japanese, and Llama 3 Swallow kept it.

use crate::data::prep_input::{check_inputs, expand_inputs, for_each_document, pieces_for_rank, BadLines, Piece};
use crate::parallel::Collectives;
use crate::tokenize::sentencepiece_bpe::normalizes_as_llama;
use crate::tokenize::bpe_train::{char_counts, covered_chars, merge_counts, sentence_words, Trainer};
use anyhow::{anyhow, bail, Context, Result};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::time::Instant;
use tokenizers::Tokenizer;
use unicode_script::{Script, UnicodeScript};

/// Text read per parallel chunk (small under test, to exercise chunking).
const CHUNK_BYTES: usize = if cfg!(test) { 4096 } else { 32 << 20 };

/// How large the vocabulary gets (then rounded up to a multiple of 8).
#[derive(Clone, Copy, Debug)]
pub enum Size {
    /// This many tokens more than the base.
    Add(usize),
    /// This many tokens in all.
    Target(usize),
}

#[derive(Clone, Debug)]
pub struct VocabOptions {
    pub base: PathBuf,
    pub inputs: Vec<PathBuf>,
    /// JSON field holding the text.
    pub field: String,
    pub size: Size,
    pub output: PathBuf,
    /// NFKC-normalize the input before learning (use when the corpus will be NFKC-normalized).
    pub nfkc: bool,
    /// SentencePiece's `character_coverage`.
    pub character_coverage: f32,
    /// Pairs seen fewer times are never merged.
    pub min_frequency: u64,
    /// Threads per rank; 0 = one per core.
    pub workers: usize,
    pub bad_lines: BadLines,
    pub held_out: Vec<PathBuf>,
}

/// Tokens per character of one held-out file, before and after.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HeldOut {
    pub file: PathBuf,
    pub chars: u64,
    /// Share of the characters that are kana or kanji.
    pub japanese: f64,
    pub tokens_before: u64,
    pub tokens_after: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VocabSummary {
    pub output: PathBuf,
    pub base_size: usize,
    pub vocab_size: usize,
    /// New merged pieces and new characters appended.
    pub new_pieces: usize,
    pub new_chars: usize,
    /// Merges the trainer made (new pieces and pieces the base already had).
    pub merges_learned: usize,
    /// Occurrences in the input of the last merged piece appended (how rare the new pieces get).
    pub last_frequency: u64,
    /// Merges added to the tokenizer for the new pieces.
    pub merges_added: usize,
    /// New pieces that `tokenizers` does not give back as one token from their own text (their
    /// characters meet the base's merges first; transformers' converter has the same property).
    pub unreachable: usize,
    pub documents: u64,
    pub bytes: u64,
    /// Input lines skipped as bad records (with [`BadLines::Skip`]).
    pub bad_lines: u64,
    pub distinct_words: usize,
    pub ranks: usize,
    pub count_seconds: f64,
    pub train_seconds: f64,
    pub seconds: f64,
    pub held_out: Vec<HeldOut>,
}

impl fmt::Display for VocabSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "vocab: {} -> {} tokens (+{} merged pieces, the last seen {} times, +{} characters) from {} documents ({:.2} MB, {} distinct words{}{}): counted in {:.2} s, {} merges learned in {:.2} s, {} merges added -> {}",
            self.base_size,
            self.vocab_size,
            self.new_pieces,
            self.last_frequency,
            self.new_chars,
            self.documents,
            self.bytes as f64 / 1e6,
            self.distinct_words,
            if self.ranks > 1 { format!(", {} ranks", self.ranks) } else { String::new() },
            if self.bad_lines > 0 { format!(", {} bad lines skipped", self.bad_lines) } else { String::new() },
            self.count_seconds,
            self.merges_learned,
            self.train_seconds,
            self.merges_added,
            self.output.join("tokenizer.json").display()
        )?;
        for h in &self.held_out {
            writeln!(
                f,
                "held-out {} ({:.0}% kana/kanji, {} chars): {:.4} -> {:.4} tokens/char ({:.1}% of the tokens)",
                h.file.display(),
                100.0 * h.japanese,
                h.chars,
                h.tokens_before as f64 / h.chars.max(1) as f64,
                h.tokens_after as f64 / h.chars.max(1) as f64,
                100.0 * h.tokens_after as f64 / h.tokens_before.max(1) as f64
            )?;
        }
        write!(f, "{}", serde_json::to_string(self).map_err(|_| fmt::Error)?)
    }
}

/// Run on every rank of `comm`; the summary on rank 0, `None` on the others.
pub fn run(opts: &VocabOptions, comm: &dyn Collectives) -> Result<Option<VocabSummary>> {
    let start = Instant::now();
    let base = Base::load(&opts.base)?;
    let target = match opts.size {
        Size::Add(0) => bail!("--add 0: nothing to add; pass --add N with N > 0, or --target-size V"),
        Size::Add(n) => base.size + n,
        Size::Target(v) if v <= base.size => {
            bail!("--target-size {v} is not larger than the base's {} tokens ({})", base.size, opts.base.display())
        }
        Size::Target(v) => v,
    }
    .next_multiple_of(8);
    if !(opts.character_coverage > 0.0 && opts.character_coverage <= 1.0) {
        bail!("--character-coverage {} is not in (0, 1]", opts.character_coverage);
    }
    let inputs = expand_inputs(&opts.inputs)?;
    check_inputs(&inputs)?;
    let held_out = expand_inputs(&opts.held_out)?;
    if !held_out.is_empty() {
        check_inputs(&held_out).context("--held-out")?;
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(opts.workers).build().context("starting worker threads")?;
    let pieces = pieces_for_rank(&inputs, comm.rank(), comm.size())?;
    let (mut counts, mut stats) = pool.install(|| count_words(&pieces, opts))?;
    let to_root = reduce_to_root(comm, &mut counts, &mut stats)?;
    let count_seconds = start.elapsed().as_secs_f64();
    if !to_root {
        comm.all_reduce_sum_f64(&mut [0.0]); // until rank 0 is done
        return Ok(None);
    }
    let words: Vec<(&str, u64)> = counts.iter().map(|(w, &n)| (&**w, n)).collect();
    let expansion = pool.install(|| expand(&base, &words, target, opts, &inputs))?;
    let distinct_words = words.len();
    drop(words);
    pool.spawn(move || drop(counts)); // freeing every word overlaps what follows
    let train_seconds = start.elapsed().as_secs_f64() - count_seconds;
    let json = base.extended(&expansion.pieces, &expansion.merges)?;
    let new_tok = Tokenizer::from_bytes(&json)
        .map_err(|e| anyhow!("the expanded tokenizer does not load in `tokenizers` (a bug): {e}"))?;
    let unreachable = expansion.pieces.iter().filter(|p| !one_token(&new_tok, p)).count();
    write_outputs(&opts.output, &base.files_beside(json)?)?;
    let held_out = pool.install(|| held_out.iter().map(|f| held_out_tokens(f, &opts.field, &base.tok, &new_tok)).collect::<Result<Vec<_>>>())?;
    comm.all_reduce_sum_f64(&mut [0.0]);
    Ok(Some(VocabSummary {
        output: opts.output.clone(),
        base_size: base.size,
        vocab_size: target,
        new_pieces: expansion.pieces.len() - expansion.new_chars,
        new_chars: expansion.new_chars,
        merges_learned: expansion.merges_learned,
        last_frequency: expansion.last_frequency,
        merges_added: expansion.merges.len(),
        unreachable,
        documents: stats[0],
        bytes: stats[1],
        bad_lines: stats[2],
        distinct_words,
        ranks: comm.size(),
        count_seconds,
        train_seconds,
        seconds: start.elapsed().as_secs_f64(),
        held_out,
    }))
}

/// Distinct words with their counts.
type WordCounts = FxHashMap<Box<str>, u64>;

/// Words of this rank's pieces with their counts, and [documents, bytes, bad lines skipped].
fn count_words(pieces: &[Piece], opts: &VocabOptions) -> Result<(WordCounts, [u64; 3])> {
    let mut words = FxHashMap::default();
    let mut stats = [0u64; 3];
    let mut chunk: Vec<String> = Vec::new();
    let mut chunk_bytes = 0;
    let flush = |chunk: &mut Vec<String>, words: &mut WordCounts| {
        let per_thread = chunk.len().div_ceil(2 * rayon::current_num_threads()).max(1);
        let counted = chunk
            .par_chunks(per_thread)
            .map(|docs| {
                let (mut m, mut buf) = (WordCounts::default(), String::new());
                for line in docs.iter().flat_map(|d| d.lines()) {
                    sentence_words(line, opts.nfkc, &mut buf, |w| match m.get_mut(w) {
                        Some(n) => *n += 1,
                        None => {
                            m.insert(w.into(), 1);
                        }
                    });
                }
                m
            })
            .reduce(FxHashMap::default, merge_counts);
        *words = merge_counts(std::mem::take(words), counted);
        chunk.clear();
    };
    let read = AtomicU64::new(0);
    for piece in pieces {
        let skipped = for_each_document(piece, &opts.field, opts.bad_lines, &read, |doc| {
            stats[0] += 1;
            stats[1] += doc.len() as u64;
            chunk_bytes += doc.len();
            chunk.push(doc);
            if chunk_bytes >= CHUNK_BYTES {
                flush(&mut chunk, &mut words);
                chunk_bytes = 0;
            }
            Ok(())
        })?;
        stats[2] += skipped;
    }
    flush(&mut chunk, &mut words);
    Ok((words, stats))
}

/// Sums every rank's word counts and stats into rank 0's, up a binary tree; true on rank 0.
fn reduce_to_root(comm: &dyn Collectives, words: &mut WordCounts, stats: &mut [u64; 3]) -> Result<bool> {
    let (rank, size) = (comm.rank(), comm.size());
    let mut step = 1;
    while step < size {
        if rank % (2 * step) == step {
            let mut bytes = Vec::new();
            for s in stats.iter() {
                bytes.extend_from_slice(&s.to_le_bytes());
            }
            for (w, n) in words.drain() {
                bytes.extend_from_slice(&(w.len() as u32).to_le_bytes());
                bytes.extend_from_slice(w.as_bytes());
                bytes.extend_from_slice(&n.to_le_bytes());
            }
            send_bytes(comm, rank - step, &bytes);
            return Ok(false);
        }
        if rank + step < size {
            let bytes = recv_bytes(comm, rank + step);
            let mut r = Reader(&bytes);
            for s in stats.iter_mut() {
                *s += r.u64()?;
            }
            while !r.0.is_empty() {
                let len = r.take(4)?.try_into().map(u32::from_le_bytes)? as usize;
                let w = std::str::from_utf8(r.take(len)?).context("word counts from another rank: bad UTF-8")?;
                let n = r.u64()?;
                match words.get_mut(w) {
                    Some(c) => *c += n,
                    None => {
                        words.insert(w.into(), n);
                    }
                }
            }
        }
        step *= 2;
    }
    Ok(true)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("word counts from another rank end early");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into()?))
    }
}

const TAG: i32 = 0x766f; // "vo"

/// Bytes to group rank `to`: its length, then the bytes, as f32 messages (MPI moves them bit for
/// bit; f32 is what the group's point-to-point calls carry).
fn send_bytes(comm: &dyn Collectives, to: usize, bytes: &[u8]) {
    let len = bytes.len() as u64;
    comm.send_f32(to, TAG, &[f32::from_bits(len as u32), f32::from_bits((len >> 32) as u32)]);
    let words: Vec<f32> = bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            f32::from_bits(u32::from_le_bytes(w))
        })
        .collect();
    comm.send_f32(to, TAG, &words);
}

fn recv_bytes(comm: &dyn Collectives, from: usize) -> Vec<u8> {
    let mut len = [0f32; 2];
    comm.recv_f32(from, TAG, &mut len);
    let len = len[0].to_bits() as usize | (len[1].to_bits() as usize) << 32;
    let mut words = vec![0f32; len.div_ceil(4)];
    comm.recv_f32(from, TAG, &mut words);
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_bits().to_le_bytes()).collect();
    bytes.truncate(len);
    bytes
}

fn is_japanese(c: char) -> bool {
    matches!(c.script(), Script::Hiragana | Script::Katakana | Script::Han) || c == 'ー'
}

/// What is appended: the new pieces in id order, how many of them (at the end) are characters,
/// their merges, and how many merges the trainer made.
struct Expansion {
    pieces: Vec<String>,
    new_chars: usize,
    merges: Vec<(String, String)>,
    merges_learned: usize,
    /// Occurrences of the pair of the last merged piece appended.
    last_frequency: u64,
}

/// Learn pieces from the counted words until the base plus the new ones reach `target`.
fn expand(base: &Base, words: &[(&str, u64)], target: usize, opts: &VocabOptions, inputs: &[PathBuf]) -> Result<Expansion> {
    let need = target - base.size;
    let counts = char_counts(words);
    let all: u64 = counts.iter().map(|c| c.1).sum();
    if !counts.iter().any(|&(c, _)| is_japanese(c)) {
        bail!(
            "no Japanese text in the input ({}): none of its {all} characters is kana or kanji; swallow vocab learns Japanese pieces",
            inputs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    let covered = covered_chars(&counts, opts.character_coverage);
    let mut new_chars: Vec<char> = covered.iter().map(|c| c.0).filter(|c| !base.has(&c.to_string())).collect();
    if new_chars.len() > need {
        log::warn!(
            "{} characters the base lacks are covered, more than the {need} new tokens: keeping the {need} most frequent, no merged pieces",
            new_chars.len()
        );
        new_chars.truncate(need);
    }
    let keep: FxHashSet<char> = new_chars.iter().copied().collect();
    let alphabet: Vec<char> = covered.iter().map(|c| c.0).filter(|c| keep.contains(c) || base.has(&c.to_string())).collect();
    let want = need - new_chars.len();
    let mut pieces: Vec<String> = Vec::with_capacity(need);
    let mut merges_learned = 0;
    let mut last_frequency = 0;
    let mut trainer = Trainer::new(words, &alphabet, opts.min_frequency);
    while pieces.len() < want {
        let Some(l) = trainer.next() else {
            if pieces.is_empty() && new_chars.is_empty() {
                bail!("the base ({}) already has every piece learned from the input ({merges_learned} merges)", opts.base.display());
            }
            bail!(
                "the input yields only {} new tokens ({} merged pieces after {merges_learned} merges, {} characters); {need} are needed to reach {target} from the base's {}: give more Japanese text, a smaller --add/--target-size{}",
                pieces.len() + new_chars.len(),
                pieces.len(),
                new_chars.len(),
                base.size,
                if opts.min_frequency > 1 { ", or a lower --min-frequency" } else { "" }
            );
        };
        merges_learned += 1;
        if !base.has(&l.piece) {
            pieces.push(l.piece);
            last_frequency = l.freq;
        }
    }
    rayon::spawn(move || drop(trainer)); // freeing its many small lists overlaps what follows
    pieces.extend(new_chars.iter().map(|c| c.to_string()));
    let merges = converter_merges(&base.vocab, base.size, &pieces);
    Ok(Expansion { new_chars: new_chars.len(), pieces, merges, merges_learned, last_frequency })
}

/// Merges for `new` pieces (ids `first`.. in order), as transformers' SentencePiece converter
/// makes them: per piece, every split whose halves are both in the vocabulary, by their ids.
fn converter_merges(vocab: &FxHashMap<String, u32>, first: usize, new: &[String]) -> Vec<(String, String)> {
    let new_ids: FxHashMap<&str, u32> = new.iter().enumerate().map(|(i, p)| (p.as_str(), (first + i) as u32)).collect();
    let id = |s: &str| vocab.get(s).copied().or_else(|| new_ids.get(s).copied());
    let mut out = Vec::new();
    for piece in new {
        let mut splits: Vec<(u32, u32, &str, &str)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(i, _)| {
                let (l, r) = piece.split_at(i);
                Some((id(l)?, id(r)?, l, r))
            })
            .collect();
        splits.sort_unstable();
        out.extend(splits.into_iter().map(|(_, _, l, r)| (l.to_string(), r.to_string())));
    }
    out
}

/// Whether `tokenizers`' model gives `piece` back as one token.
fn one_token(tok: &Tokenizer, piece: &str) -> bool {
    use tokenizers::Model;
    tok.get_model().tokenize(piece).is_ok_and(|t| t.len() == 1 && t[0].value == piece)
}

/// Tokens `tok` makes of `text`, without special tokens: the one place held-out text is encoded.
fn count_tokens(tok: &Tokenizer, text: &str) -> Result<u64> {
    tok.encode_fast(text, false).map(|e| e.len() as u64).map_err(|e| anyhow!("{e}"))
}

fn held_out_tokens(file: &Path, field: &str, before: &Tokenizer, after: &Tokenizer) -> Result<HeldOut> {
    let mut docs = Vec::new();
    let piece = Piece { path: file.to_path_buf(), range: None };
    for_each_document(&piece, field, BadLines::Fail, &AtomicU64::new(0), |d| {
        docs.push(d);
        Ok(())
    })
    .with_context(|| format!("--held-out {}", file.display()))?;
    let per_doc = docs
        .par_iter()
        .map(|d| {
            let chars = d.chars().count() as u64;
            let ja = d.chars().filter(|&c| is_japanese(c)).count() as u64;
            Ok([chars, ja, count_tokens(before, d)?, count_tokens(after, d)?])
        })
        .collect::<Result<Vec<[u64; 4]>>>()
        .with_context(|| format!("encoding --held-out {}", file.display()))?;
    let s = per_doc.iter().fold([0u64; 4], |a, d| std::array::from_fn(|i| a[i] + d[i]));
    Ok(HeldOut {
        file: file.to_path_buf(),
        chars: s[0],
        japanese: s[1] as f64 / s[0].max(1) as f64,
        tokens_before: s[2],
        tokens_after: s[3],
    })
}

/// A JSON object's members in file order, each value as its original text.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Ordered, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry()? {
                    v.push(e);
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// The expanded tokenizer.json as it is written.
enum Out<'a> {
    Raw(&'a RawValue),
    Object(Vec<(&'a str, Out<'a>)>),
    /// Tokens in id order.
    Vocab(Vec<(&'a str, u32)>),
    /// The base's merges as they were, then the new ones in the same form.
    Merges { base: &'a [Value], new: &'a [(String, String)], pairs: bool },
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Out::Raw(r) => r.serialize(s),
            Out::Object(members) => {
                let mut m = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Out::Vocab(tokens) => {
                let mut m = s.serialize_map(Some(tokens.len()))?;
                for (t, id) in tokens {
                    m.serialize_entry(t, id)?;
                }
                m.end()
            }
            Out::Merges { base, new, pairs } => {
                let mut q = s.serialize_seq(Some(base.len() + new.len()))?;
                for m in *base {
                    q.serialize_element(m)?;
                }
                for (l, r) in *new {
                    if *pairs {
                        q.serialize_element(&[l, r])?;
                    } else {
                        q.serialize_element(&format!("{l} {r}"))?;
                    }
                }
                q.end()
            }
        }
    }
}

/// The base tokenizer.json: a SentencePiece-style BPE (Llama 2 kind).
struct Base {
    path: PathBuf,
    doc: Ordered,
    model: Ordered,
    vocab: FxHashMap<String, u32>,
    added: FxHashSet<String>,
    merges: Vec<Value>,
    /// Merges written as ["a", "b"] rather than "a b".
    pairs: bool,
    /// One more than the largest id (vocabulary or added token).
    size: usize,
    tok: Tokenizer,
}

impl Base {
    fn load(path: &Path) -> Result<Base> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read base tokenizer {}", path.display()))?;
        let bad = |why: String| anyhow!("base tokenizer {}: {why}", path.display());
        let v: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e}); expected a Hugging Face tokenizer.json")))?;
        let m = &v["model"];
        if m["type"] != "BPE" {
            return Err(bad(format!(
                "model type {}; swallow vocab expands BPE tokenizers of the SentencePiece kind (Llama 2: byte fallback, \"▁\" for spaces)",
                m["type"]
            )));
        }
        sentencepiece_kind(&v).map_err(bad)?;
        if !(m["continuing_subword_prefix"].is_null() && m["end_of_word_suffix"].is_null()) {
            return Err(bad("its BPE model has a subword prefix or suffix; SentencePiece BPE has none".into()));
        }
        let vocab: FxHashMap<String, u32> = serde_json::from_value(m["vocab"].clone())
            .map_err(|e| bad(format!("model.vocab is not an object of token -> id ({e})")))?;
        let merges = m["merges"].as_array().ok_or_else(|| bad("model.merges is not an array".into()))?.clone();
        let pairs = merges.first().is_none_or(Value::is_array);
        let mut added = FxHashSet::default();
        let mut size = vocab.values().map(|&id| id as usize + 1).max().unwrap_or(0);
        for t in v["added_tokens"].as_array().into_iter().flatten() {
            let (Some(id), Some(content)) = (t["id"].as_u64(), t["content"].as_str()) else {
                return Err(bad(format!("added token {t} has no id or content")));
            };
            size = size.max(id as usize + 1);
            added.insert(content.to_string());
        }
        let tok = Tokenizer::from_bytes(text.as_bytes()).map_err(|e| bad(format!("`tokenizers` cannot load it: {e}")))?;
        let doc: Ordered = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let model_raw = doc.0.iter().find(|(k, _)| k == "model").expect("checked above").1.get();
        let model: Ordered = serde_json::from_str(model_raw).map_err(|e| bad(e.to_string()))?;
        Ok(Base { path: path.to_path_buf(), doc, model, vocab, added, merges, pairs, size, tok })
    }

    fn has(&self, piece: &str) -> bool {
        self.vocab.contains_key(piece) || self.added.contains(piece)
    }

    /// The base's tokenizer.json with `pieces` appended (ids from `size`) and `merges` after its own.
    fn extended(&self, pieces: &[String], merges: &[(String, String)]) -> Result<Vec<u8>> {
        let mut tokens: Vec<(&str, u32)> = self.vocab.iter().map(|(t, &id)| (t.as_str(), id)).collect();
        tokens.sort_unstable_by_key(|&(t, id)| (id, t));
        tokens.extend(pieces.iter().enumerate().map(|(i, p)| (p.as_str(), (self.size + i) as u32)));
        if !self.pairs {
            if let Some((l, r)) = merges.iter().find(|(l, r)| l.contains(' ') || r.contains(' ')) {
                bail!("merge ({l:?}, {r:?}) holds a space, which the base's \"a b\" merge form cannot write");
            }
        }
        let mut vocab = Some(Out::Vocab(tokens));
        let mut new_merges = Some(Out::Merges { base: &self.merges, new: merges, pairs: self.pairs });
        let model = self
            .model
            .0
            .iter()
            .map(|(k, raw)| {
                let out = match k.as_str() {
                    "vocab" => vocab.take(),
                    "merges" => new_merges.take(),
                    _ => None,
                };
                (k.as_str(), out.unwrap_or(Out::Raw(raw)))
            })
            .collect();
        let mut model = Some(Out::Object(model));
        let doc = Out::Object(
            self.doc
                .0
                .iter()
                .map(|(k, raw)| (k.as_str(), if k == "model" { model.take().expect("one model") } else { Out::Raw(raw) }))
                .collect(),
        );
        let mut json = serde_json::to_vec_pretty(&doc)?;
        json.push(b'\n');
        Ok(json)
    }

    /// The output files: tokenizer.json, tokenizer_config.json (the base's, else a minimal one),
    /// special_tokens_map.json if the base has one.
    fn files_beside(&self, tokenizer_json: Vec<u8>) -> Result<Vec<(&'static str, Vec<u8>)>> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let read = |name: &str| -> Result<Option<Vec<u8>>> {
            let p = dir.join(name);
            match std::fs::read(&p) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(anyhow!("cannot read {}: {e}", p.display())),
            }
        };
        let config = match read("tokenizer_config.json")? {
            Some(b) => b,
            None => {
                let mut c = serde_json::json!({ "tokenizer_class": "PreTrainedTokenizerFast" });
                for (key, token) in [("bos_token", "<s>"), ("eos_token", "</s>"), ("unk_token", "<unk>")] {
                    if self.added.contains(token) {
                        c[key] = token.into();
                    }
                }
                serde_json::to_vec_pretty(&c)?
            }
        };
        let mut files = vec![("tokenizer.json", tokenizer_json), ("tokenizer_config.json", config)];
        if let Some(b) = read("special_tokens_map.json")? {
            files.push(("special_tokens_map.json", b));
        }
        Ok(files)
    }
}

/// Ok when `v` is a SentencePiece-kind tokenizer whose text `swallow vocab` can learn pieces for
/// ([`normalizes_as_llama`]); a byte-level one is refused with the reason.
fn sentencepiece_kind(v: &Value) -> std::result::Result<(), String> {
    if v["pre_tokenizer"].to_string().contains("\"ByteLevel\"") {
        return Err("a byte-level BPE tokenizer (Llama 3 kind: ByteLevel pre-tokenizer) is not supported: swallow vocab appends SentencePiece BPE pieces with converter merges, Swallow's method for SentencePiece-style vocabularies (Llama 2 kind); a byte-level vocabulary would need pieces learned over its own regex and byte alphabet, and Llama 3's 128k vocabulary already covers Japanese (Llama 3 Swallow kept it)".into());
    }
    normalizes_as_llama(v)
}

/// Write `files` into `dir` under temporary names, then rename them all; on error remove what was
/// written, and `dir` if this created it.
fn write_outputs(dir: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--output {} exists and is not a directory", dir.display());
    }
    let created = !dir.exists();
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create --output {}", dir.display()))?;
    let tmp = |name: &str| dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = files.iter().try_for_each(|(name, bytes)| {
        std::fs::write(tmp(name), bytes).with_context(|| format!("cannot write {}", dir.join(name).display()))
    });
    let renamed = written.and_then(|()| {
        files.iter().try_for_each(|(name, _)| {
            std::fs::rename(tmp(name), dir.join(name)).with_context(|| format!("cannot write {}", dir.join(name).display()))
        })
    });
    if renamed.is_err() {
        for (name, _) in files {
            let _ = std::fs::remove_file(tmp(name));
        }
        if created {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::LocalGroup;

    fn fixture(p: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizers").join(p)
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swallow-vocab-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn options(dir: &Path, size: Size) -> VocabOptions {
        VocabOptions {
            base: fixture("llama2/tokenizer.json"),
            inputs: vec![fixture("text/ja.jsonl")],
            field: "text".into(),
            size,
            output: dir.join("out"),
            nfkc: false,
            character_coverage: 0.9995,
            min_frequency: 0,
            workers: 2,
            bad_lines: BadLines::Fail,
            held_out: vec![],
        }
    }

    #[test]
    fn converter_merges_take_every_split_in_id_order() {
        let vocab: FxHashMap<String, u32> = [("a", 3), ("b", 4), ("c", 5), ("ab", 6)].iter().map(|&(t, i)| (t.to_string(), i)).collect();
        let new: Vec<String> = ["bc", "abc", "d", "abcd"].iter().map(|s| s.to_string()).collect();
        let m = converter_merges(&vocab, 7, &new);
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        // "abc": (a, bc) = (3, 7) before (ab, c) = (6, 5); "abcd": only (abc, d) = (8, 9).
        assert_eq!(m, [("b", "c"), ("a", "bc"), ("ab", "c"), ("abc", "d")]);
    }

    #[test]
    fn counts_reduce_over_a_group_of_one() {
        let mut words: WordCounts = [("▁a".into(), 2)].into_iter().collect();
        let mut stats = [1, 2, 0];
        assert!(reduce_to_root(&LocalGroup, &mut words, &mut stats).unwrap());
        assert_eq!(words.len(), 1);
    }

    #[test]
    fn expands_the_llama2_fixture_keeping_every_base_token() {
        let dir = tmpdir("expand");
        let s = run(&options(&dir, Size::Add(500)), &LocalGroup).unwrap().unwrap();
        assert_eq!(s.vocab_size, 8504);
        assert_eq!(s.new_pieces + s.new_chars, 504);
        let base = Tokenizer::from_file(fixture("llama2/tokenizer.json")).unwrap();
        let new = Tokenizer::from_file(dir.join("out/tokenizer.json")).unwrap();
        assert_eq!(new.get_vocab_size(true), 8504);
        for id in 0..8000 {
            assert_eq!(base.id_to_token(id), new.id_to_token(id), "id {id}");
        }
        // Everything but the model's vocab and merges is the base's, and its merges come first.
        let (b, n): (Value, Value) = (
            serde_json::from_slice(&std::fs::read(fixture("llama2/tokenizer.json")).unwrap()).unwrap(),
            serde_json::from_slice(&std::fs::read(dir.join("out/tokenizer.json")).unwrap()).unwrap(),
        );
        for k in ["version", "added_tokens", "normalizer", "pre_tokenizer", "post_processor", "decoder"] {
            assert_eq!(b[k], n[k], "{k}");
        }
        let (bm, nm) = (b["model"]["merges"].as_array().unwrap(), n["model"]["merges"].as_array().unwrap());
        assert_eq!(&nm[..bm.len()], &bm[..]);
        assert_eq!(nm.len() - bm.len(), s.merges_added);
        assert!(dir.join("out/tokenizer_config.json").exists() && dir.join("out/special_tokens_map.json").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_requests_are_errors_and_leave_no_output() {
        let dir = tmpdir("bad");
        let err = |o: &VocabOptions| format!("{:#}", run(o, &LocalGroup).unwrap_err());
        assert!(err(&options(&dir, Size::Add(0))).contains("--add 0"));
        assert!(err(&options(&dir, Size::Target(8000))).contains("not larger than the base's 8000"));
        let mut o = options(&dir, Size::Add(8));
        o.inputs = vec![fixture("text/en.jsonl")];
        assert!(err(&o).contains("no Japanese text"), "{}", err(&o));
        let mut o = options(&dir, Size::Add(8));
        o.base = fixture("llama3/tokenizer.json");
        assert!(err(&o).contains("byte-level"), "{}", err(&o));
        let e = err(&options(&dir, Size::Add(1_000_000)));
        assert!(e.contains("yields only"), "{e}");
        assert!(!dir.join("out").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
