//! Megatron-LM indexed dataset: the `.bin`/`.idx` token-shard format that Megatron's
//! `preprocess_data.py` writes and every Megatron-style trainer reads. `.bin` holds the raw token ids
//! of all sequences back to back; `.idx` (little-endian) holds the magic `MMIDIDX\0\0`, version 1,
//! a dtype code, the sequence and document counts, then i32 sequence lengths, i64 byte pointers into
//! `.bin` and i64 document indices (sequence index where each document starts, ending with the
//! sequence count). [`IndexedDataset`] memory-maps both files and validates the index against the
//! data before anything is read. The writer is indexed_writer.rs, the id types token_dtype.rs.

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::token_dtype::TokenDtype;

/// First 9 bytes of every `.idx` file.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only index version Megatron has written so far.
pub const VERSION: u64 = 1;
/// Bytes before the sizes array: magic, version, dtype code, sequence count, document count.
pub const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// `PREFIX` + `suffix` (appended, never replacing an extension: "data/ja.v2" -> "data/ja.v2.bin").
pub fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = prefix.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn read_i64(b: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn read_i32(b: &[u8], at: usize) -> i32 {
    i32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn map_file(path: &Path, what: &str) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow!("{}: no such file (expected the {what})", path.display())
        } else {
            anyhow!("{}: cannot open the {what}: {e}", path.display())
        }
    })?;
    // SAFETY: the map is read-only; as with any mmap, truncating the file underneath a running
    // reader is not supported (Megatron has the same contract).
    unsafe { Mmap::map(&file) }.with_context(|| format!("{}: cannot memory-map", path.display()))
}

/// A memory-mapped Megatron indexed dataset (`PREFIX.bin` + `PREFIX.idx`).
pub struct IndexedDataset {
    prefix: PathBuf,
    dtype: TokenDtype,
    num_sequences: usize,
    /// Entries in the document index (= documents + 1).
    doc_entries: usize,
    idx: Mmap,
    bin: Mmap,
    num_tokens: u64,
}

impl fmt::Debug for IndexedDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IndexedDataset")
            .field("prefix", &self.prefix)
            .field("dtype", &self.dtype)
            .field("sequences", &self.num_sequences)
            .field("documents", &self.num_documents())
            .field("tokens", &self.num_tokens)
            .finish()
    }
}

impl IndexedDataset {
    /// Open `PREFIX.idx` and `PREFIX.bin` and check the index against the data. A path ending in
    /// `.bin` or `.idx` is accepted for the prefix too.
    pub fn open(prefix: &Path) -> Result<Self> {
        let prefix = normalize_prefix(prefix);
        let idx_path = with_suffix(&prefix, ".idx");
        let bin_path = with_suffix(&prefix, ".bin");
        let idx = map_file(&idx_path, "Megatron index (.idx) of the dataset")?;
        let ip = idx_path.display();
        let len = idx.len();
        if len < HEADER_LEN {
            bail!("{ip} is truncated: the header needs {HEADER_LEN} bytes, file has {len}");
        }
        if &idx[..9] != MAGIC {
            bail!(
                "{ip}: bad magic {:?}, expected \"MMIDIDX\\0\\0\" (not a Megatron indexed dataset index)",
                String::from_utf8_lossy(&idx[..9])
            );
        }
        let version = read_u64(&idx, 9);
        if version != VERSION {
            bail!("{ip}: unsupported index version {version}, expected {VERSION}");
        }
        let code = idx[17];
        let dtype = TokenDtype::from_code(code)
            .ok_or_else(|| anyhow!("{ip}: unknown dtype code {code}, expected 1..=8"))?;
        let seqs = read_u64(&idx, 18);
        let docs = read_u64(&idx, 26);
        let need = (seqs as u128) * 12 + (docs as u128) * 8 + HEADER_LEN as u128;
        if (len as u128) < need {
            bail!(
                "{ip} is truncated: {seqs} sequences and {docs} document indices need {need} bytes, file has {len}"
            );
        }
        let (seqs, docs, need) = (seqs as usize, docs as usize, need as usize);
        // Multimodal Megatron indices carry one extra i8 "mode" per sequence; tolerate exactly that.
        if len != need && len != need + seqs {
            bail!(
                "{ip}: {} unexpected trailing bytes after the document index ({need} bytes expected)",
                len - need
            );
        }
        if docs == 0 {
            bail!("{ip}: the document index is empty, expected at least the leading 0");
        }
        let mut ds = IndexedDataset {
            prefix: prefix.clone(),
            dtype,
            num_sequences: seqs,
            doc_entries: docs,
            idx,
            bin: map_file(&bin_path, "Megatron token data (.bin) of the dataset")?,
            num_tokens: 0,
        };
        // Document index: starts at 0, non-decreasing, within the sequence count.
        let mut prev = 0i64;
        for k in 0..docs {
            let d = read_i64(&ds.idx, ds.doc_offset() + 8 * k);
            if (k == 0 && d != 0) || d < prev || d as u64 > seqs as u64 {
                bail!(
                    "{ip}: document index entry {k} is {d}, expected {} (non-decreasing, starting at 0, at most {seqs} sequences)",
                    if k == 0 { "0".to_string() } else { format!(">= {prev}") }
                );
            }
            prev = d;
        }
        // Sizes and pointers: non-negative and inside .bin.
        let esize = dtype.size() as u128;
        let mut needed: u128 = 0;
        let mut tokens: u64 = 0;
        for i in 0..seqs {
            let size = read_i32(&ds.idx, HEADER_LEN + 4 * i);
            let ptr = read_i64(&ds.idx, ds.pointer_offset() + 8 * i);
            if size < 0 || ptr < 0 {
                bail!("{ip}: sequence {i} has length {size} at byte {ptr}, expected both >= 0");
            }
            tokens += size as u64;
            needed = needed.max(ptr as u128 + size as u128 * esize);
        }
        // Exactly: a .bin with bytes past its last sequence belongs to another index (the .idx of
        // another shard, or one whose dtype disagrees: i32 data read as u16 is twice as long).
        let have = ds.bin.len() as u128;
        if have < needed {
            bail!(
                "{} is truncated: index needs {needed} bytes, file has {have}",
                bin_path.display()
            );
        }
        if have > needed {
            let hint = match (needed > 0 && have % needed == 0).then(|| have / needed * esize) {
                Some(bytes) if bytes != esize && [1, 2, 4, 8].contains(&bytes) => format!(
                    "; it is {}x as long, as if its tokens had {bytes} bytes each: the .idx and .bin do not belong together (was the .idx written with another dtype?)",
                    have / needed
                ),
                _ => ": the .idx and .bin do not belong together".to_string(),
            };
            bail!(
                "{} has {have} bytes, but {ip} ({seqs} sequences of {} tokens) describes exactly {needed}{hint}",
                bin_path.display(),
                dtype
            );
        }
        ds.num_tokens = tokens;
        Ok(ds)
    }

    fn pointer_offset(&self) -> usize {
        HEADER_LEN + 4 * self.num_sequences
    }

    fn doc_offset(&self) -> usize {
        HEADER_LEN + 12 * self.num_sequences
    }

    /// The prefix this dataset was opened with (without `.bin`/`.idx`).
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    pub fn num_sequences(&self) -> usize {
        self.num_sequences
    }

    /// Number of documents (= document index length - 1).
    pub fn num_documents(&self) -> usize {
        self.doc_entries - 1
    }

    /// Total tokens over all sequences.
    pub fn num_tokens(&self) -> u64 {
        self.num_tokens
    }

    /// Length in tokens of sequence `i` (panics if `i >= num_sequences()`).
    pub fn sequence_len(&self, i: usize) -> usize {
        assert!(i < self.num_sequences, "sequence {i} out of range");
        read_i32(&self.idx, HEADER_LEN + 4 * i) as usize
    }

    /// Byte offset of sequence `i` in `.bin`.
    pub fn sequence_pointer(&self, i: usize) -> u64 {
        assert!(i < self.num_sequences, "sequence {i} out of range");
        read_i64(&self.idx, self.pointer_offset() + 8 * i) as u64
    }

    /// Entry `k` of the document index (sequence where document `k` starts; entry
    /// `num_documents()` is where the last one ends).
    pub fn document_index(&self, k: usize) -> usize {
        assert!(
            k < self.doc_entries,
            "document index entry {k} out of range"
        );
        read_i64(&self.idx, self.doc_offset() + 8 * k) as usize
    }

    /// The whole document index: `num_documents() + 1` sequence boundaries.
    pub fn document_boundaries(&self) -> Vec<usize> {
        (0..self.doc_entries)
            .map(|k| self.document_index(k))
            .collect()
    }

    /// Sequences making up document `doc`.
    pub fn document_sequences(&self, doc: usize) -> Range<usize> {
        self.document_index(doc)..self.document_index(doc + 1)
    }

    /// The document containing sequence `seq` (the last one if several documents are empty).
    pub fn document_of_sequence(&self, seq: usize) -> usize {
        let (mut lo, mut hi) = (0usize, self.doc_entries - 1);
        // Largest k with document_index(k) <= seq, among 0..num_documents().
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if self.document_index(mid) <= seq {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Read `out.len()` tokens of sequence `seq` starting at token `offset`, converted to u32.
    pub fn read_tokens(&self, seq: usize, offset: usize, out: &mut [u32]) -> Result<()> {
        if seq >= self.num_sequences {
            bail!(
                "{}: sequence {seq} out of range ({} sequences)",
                self.prefix.display(),
                self.num_sequences
            );
        }
        let len = self.sequence_len(seq);
        if offset + out.len() > len {
            bail!(
                "{}: tokens {offset}..{} requested from sequence {seq} of length {len}",
                self.prefix.display(),
                offset + out.len()
            );
        }
        let es = self.dtype.size();
        let start = self.sequence_pointer(seq) as usize + offset * es;
        let bytes = &self.bin[start..start + out.len() * es];
        self.dtype.decode(bytes, out).map_err(|(k, v)| {
            anyhow!(
                "{}: sequence {seq} token {} is {v}, not a valid token id ({} data)",
                with_suffix(&self.prefix, ".bin").display(),
                offset + k,
                self.dtype
            )
        })
    }

    /// The whole `.bin` (exactly the bytes its sequences span: `open` checks the size).
    pub fn bin_bytes(&self) -> &[u8] {
        &self.bin
    }

    /// The raw `.bin` bytes of sequence `seq` (in this dataset's dtype).
    pub fn sequence_bytes(&self, seq: usize) -> &[u8] {
        let start = self.sequence_pointer(seq) as usize;
        &self.bin[start..start + self.sequence_len(seq) * self.dtype.size()]
    }

    /// All tokens of sequence `seq`.
    pub fn sequence(&self, seq: usize) -> Result<Vec<u32>> {
        let mut v = vec![0; self.sequence_len(seq)];
        self.read_tokens(seq, 0, &mut v)?;
        Ok(v)
    }

    /// All tokens of document `doc` (its sequences concatenated).
    pub fn document(&self, doc: usize) -> Result<Vec<u32>> {
        let mut v = Vec::new();
        for s in self.document_sequences(doc) {
            v.extend(self.sequence(s)?);
        }
        Ok(v)
    }
}

fn normalize_prefix(p: &Path) -> PathBuf {
    let s = p.to_string_lossy();
    for ext in [".bin", ".idx"] {
        if let Some(stem) = s.strip_suffix(ext) {
            let stem = PathBuf::from(stem);
            if !with_suffix(p, ".idx").exists() && with_suffix(&stem, ".idx").exists() {
                return stem;
            }
        }
    }
    p.to_path_buf()
}
