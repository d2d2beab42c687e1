//! Megatron-LM indexed dataset: the `.bin`/`.idx` token-shard format that Megatron's
//! `preprocess_data.py` writes and every Megatron-style trainer reads. `.bin` holds the raw token ids
//! of all sequences back to back; `.idx` (little-endian) holds the magic `MMIDIDX\0\0`, version 1,
//! a dtype code, the sequence and document counts, then i32 sequence lengths, i64 byte pointers into
//! `.bin` and i64 document indices (sequence index where each document starts, ending with the
//! sequence count). [`IndexedDataset`] memory-maps both files and validates the index against the
//! data before anything is read; [`IndexedWriter`] writes one sequence per document, to temporary
//! files that are renamed into place only when both are complete.

use anyhow::{anyhow, bail, Context, Result};
use memmap2::Mmap;
use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// First 9 bytes of every `.idx` file.
pub const MAGIC: &[u8; 9] = b"MMIDIDX\x00\x00";
/// The only index version Megatron has written so far.
pub const VERSION: u64 = 1;
/// Bytes before the sizes array: magic, version, dtype code, sequence count, document count.
pub const HEADER_LEN: usize = 9 + 8 + 1 + 8 + 8;

/// Element type of the token ids in `.bin`, with Megatron's dtype codes (1..=8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TokenDtype {
    U8,
    I8,
    I16,
    I32,
    I64,
    F64,
    F32,
    U16,
}

impl TokenDtype {
    pub const ALL: [TokenDtype; 8] = [
        TokenDtype::U8,
        TokenDtype::I8,
        TokenDtype::I16,
        TokenDtype::I32,
        TokenDtype::I64,
        TokenDtype::F64,
        TokenDtype::F32,
        TokenDtype::U16,
    ];

    /// Megatron's dtype code as stored in the `.idx` header.
    pub fn code(self) -> u8 {
        match self {
            TokenDtype::U8 => 1,
            TokenDtype::I8 => 2,
            TokenDtype::I16 => 3,
            TokenDtype::I32 => 4,
            TokenDtype::I64 => 5,
            TokenDtype::F64 => 6,
            TokenDtype::F32 => 7,
            TokenDtype::U16 => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.iter().copied().find(|d| d.code() == code)
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            TokenDtype::U8 | TokenDtype::I8 => 1,
            TokenDtype::I16 | TokenDtype::U16 => 2,
            TokenDtype::I32 | TokenDtype::F32 => 4,
            TokenDtype::I64 | TokenDtype::F64 => 8,
        }
    }

    /// Short name as numpy spells it ("u16", "i32", ...).
    pub fn name(self) -> &'static str {
        match self {
            TokenDtype::U8 => "u8",
            TokenDtype::I8 => "i8",
            TokenDtype::I16 => "i16",
            TokenDtype::I32 => "i32",
            TokenDtype::I64 => "i64",
            TokenDtype::F64 => "f64",
            TokenDtype::F32 => "f32",
            TokenDtype::U16 => "u16",
        }
    }

    /// The dtype `preprocess_data.py` picks: u16 when the vocabulary has < 65,500 entries, else i32.
    pub fn for_vocab(vocab: usize) -> Self {
        if vocab < 65_500 {
            TokenDtype::U16
        } else {
            TokenDtype::I32
        }
    }

    /// Largest token id this dtype stores exactly (ids are u32 here).
    pub fn max_id(self) -> u32 {
        match self {
            TokenDtype::U8 => u8::MAX as u32,
            TokenDtype::I8 => i8::MAX as u32,
            TokenDtype::I16 => i16::MAX as u32,
            TokenDtype::U16 => u16::MAX as u32,
            TokenDtype::I32 => i32::MAX as u32,
            TokenDtype::F32 => 1 << 24,
            TokenDtype::I64 | TokenDtype::F64 => u32::MAX,
        }
    }

    /// Append `id` in this dtype, little-endian. The caller has checked `id <= max_id()`.
    fn push(self, id: u32, buf: &mut Vec<u8>) {
        match self {
            TokenDtype::U8 | TokenDtype::I8 => buf.push(id as u8),
            TokenDtype::I16 | TokenDtype::U16 => buf.extend_from_slice(&(id as u16).to_le_bytes()),
            TokenDtype::I32 => buf.extend_from_slice(&(id as i32).to_le_bytes()),
            TokenDtype::I64 => buf.extend_from_slice(&(id as i64).to_le_bytes()),
            TokenDtype::F32 => buf.extend_from_slice(&(id as f32).to_le_bytes()),
            TokenDtype::F64 => buf.extend_from_slice(&(id as f64).to_le_bytes()),
        }
    }

    /// Convert `bytes` (exactly `out.len() * size()` long) into ids. On a value that is not a
    /// token id (negative, fractional, > u32::MAX) returns its position and value.
    pub(crate) fn decode(self, bytes: &[u8], out: &mut [u32]) -> std::result::Result<(), (usize, f64)> {
        fn each<const N: usize>(
            bytes: &[u8],
            out: &mut [u32],
            f: impl Fn([u8; N]) -> Option<u32>,
            raw: impl Fn([u8; N]) -> f64,
        ) -> std::result::Result<(), (usize, f64)> {
            for (k, (o, c)) in out.iter_mut().zip(bytes.chunks_exact(N)).enumerate() {
                let a: [u8; N] = c.try_into().unwrap();
                *o = f(a).ok_or((k, raw(a)))?;
            }
            Ok(())
        }
        fn float_id(v: f64) -> Option<u32> {
            (v >= 0.0 && v <= u32::MAX as f64 && v.fract() == 0.0).then_some(v as u32)
        }
        match self {
            TokenDtype::U8 => each(bytes, out, |a: [u8; 1]| Some(a[0] as u32), |a| a[0] as f64),
            TokenDtype::U16 => each(
                bytes,
                out,
                |a| Some(u16::from_le_bytes(a) as u32),
                |a| u16::from_le_bytes(a) as f64,
            ),
            TokenDtype::I8 => each(
                bytes,
                out,
                |a: [u8; 1]| u32::try_from(a[0] as i8).ok(),
                |a| a[0] as i8 as f64,
            ),
            TokenDtype::I16 => each(
                bytes,
                out,
                |a| u32::try_from(i16::from_le_bytes(a)).ok(),
                |a| i16::from_le_bytes(a) as f64,
            ),
            TokenDtype::I32 => each(
                bytes,
                out,
                |a| u32::try_from(i32::from_le_bytes(a)).ok(),
                |a| i32::from_le_bytes(a) as f64,
            ),
            TokenDtype::I64 => each(
                bytes,
                out,
                |a| u32::try_from(i64::from_le_bytes(a)).ok(),
                |a| i64::from_le_bytes(a) as f64,
            ),
            TokenDtype::F32 => each(
                bytes,
                out,
                |a| float_id(f32::from_le_bytes(a) as f64),
                |a| f32::from_le_bytes(a) as f64,
            ),
            TokenDtype::F64 => each(
                bytes,
                out,
                |a| float_id(f64::from_le_bytes(a)),
                f64::from_le_bytes,
            ),
        }
    }
}

impl fmt::Display for TokenDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

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

/// What [`IndexedWriter::finish`] wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub prefix: PathBuf,
    pub dtype: TokenDtype,
    pub documents: u64,
    pub sequences: u64,
    pub tokens: u64,
    pub bin_bytes: u64,
    pub idx_bytes: u64,
}

/// Writes a Megatron indexed dataset, one sequence per document (as `preprocess_data.py` does
/// without `--split-sentences`). Output goes to `PREFIX.bin.tmp-<pid>` / `PREFIX.idx.tmp-<pid>` and
/// is renamed into place by [`finish`](Self::finish); dropping the writer unfinished removes the
/// temporaries and leaves any existing `PREFIX.bin`/`.idx` untouched.
pub struct IndexedWriter {
    prefix: PathBuf,
    dtype: TokenDtype,
    bin_tmp: PathBuf,
    idx_tmp: PathBuf,
    bin: Option<BufWriter<File>>,
    sizes: Vec<i32>,
    /// Megatron's document index: the sequence where each document starts, plus the end.
    doc_index: Vec<i64>,
    tokens: u64,
    buf: Vec<u8>,
}

impl IndexedWriter {
    pub fn create(prefix: &Path, dtype: TokenDtype) -> Result<Self> {
        let dir = match prefix.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if prefix.file_name().is_none() {
            bail!(
                "output prefix {} has no file name (expected e.g. out/corpus)",
                prefix.display()
            );
        }
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(|e| {
                anyhow!(
                    "cannot create output directory {} for prefix {}: {e}",
                    dir.display(),
                    prefix.display()
                )
            })?;
        }
        let tag = format!(".tmp-{}", std::process::id());
        let bin_tmp = with_suffix(prefix, &format!(".bin{tag}"));
        let idx_tmp = with_suffix(prefix, &format!(".idx{tag}"));
        let file = File::create(&bin_tmp).map_err(|e| {
            anyhow!(
                "cannot write to output directory {} (creating {}): {e}",
                dir.display(),
                bin_tmp.display()
            )
        })?;
        Ok(IndexedWriter {
            prefix: prefix.to_path_buf(),
            dtype,
            bin_tmp,
            idx_tmp,
            bin: Some(BufWriter::with_capacity(1 << 20, file)),
            sizes: Vec::new(),
            doc_index: vec![0],
            tokens: 0,
            buf: Vec::new(),
        })
    }

    pub fn dtype(&self) -> TokenDtype {
        self.dtype
    }

    /// Append one document as one sequence. Errors if an id does not fit the dtype.
    pub fn add_document(&mut self, ids: &[u32]) -> Result<()> {
        let max = self.dtype.max_id();
        if let Some(k) = ids.iter().position(|&t| t > max) {
            bail!(
                "token id {} (position {k} of document {}) does not fit the {} data of {} (max {max})",
                ids[k],
                self.sizes.len(),
                self.dtype,
                self.prefix.display()
            );
        }
        let len = i32::try_from(ids.len()).map_err(|_| {
            anyhow!(
                "document {} has {} tokens, more than the i32 lengths of the index allow",
                self.sizes.len(),
                ids.len()
            )
        })?;
        self.buf.clear();
        self.buf.reserve(ids.len() * self.dtype.size());
        for &t in ids {
            self.dtype.push(t, &mut self.buf);
        }
        let bin = self.bin.as_mut().expect("writer already finished");
        bin.write_all(&self.buf)
            .with_context(|| format!("writing {}", self.bin_tmp.display()))?;
        self.sizes.push(len);
        self.doc_index.push(self.sizes.len() as i64);
        self.tokens += ids.len() as u64;
        Ok(())
    }

    /// Append a whole dataset as Megatron's `add_index` does: its token bytes copied unchanged,
    /// its sequence lengths, and its document index shifted past the sequences written so far
    /// (so multi-sentence documents stay intact). The dtypes must match.
    pub fn append_dataset(&mut self, ds: &IndexedDataset) -> Result<()> {
        if ds.dtype() != self.dtype {
            bail!(
                "{} holds {} tokens but {} is being written as {}: shards of different dtypes cannot be concatenated",
                ds.prefix().display(),
                ds.dtype(),
                self.prefix.display(),
                self.dtype
            );
        }
        let offset = self.sizes.len() as i64;
        let bin = self.bin.as_mut().expect("writer already finished");
        for s in 0..ds.num_sequences() {
            bin.write_all(ds.sequence_bytes(s))
                .with_context(|| format!("writing {}", self.bin_tmp.display()))?;
            self.sizes.push(ds.sequence_len(s) as i32);
        }
        for k in 1..=ds.num_documents() {
            self.doc_index.push(offset + ds.document_index(k) as i64);
        }
        self.tokens += ds.num_tokens();
        Ok(())
    }

    /// Documents added so far.
    pub fn documents(&self) -> u64 {
        self.doc_index.len() as u64 - 1
    }

    /// Write `.idx`, then rename both files into place.
    pub fn finish(mut self) -> Result<Summary> {
        let bin = self.bin.take().expect("writer already finished");
        let file = bin
            .into_inner()
            .map_err(|e| anyhow!("writing {}: {}", self.bin_tmp.display(), e.error()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", self.bin_tmp.display()))?;
        drop(file);
        let idx = index_bytes_with_documents(self.dtype, &self.sizes, &self.doc_index);
        fs::write(&self.idx_tmp, &idx)
            .with_context(|| format!("writing {}", self.idx_tmp.display()))?;
        let bin_path = with_suffix(&self.prefix, ".bin");
        let idx_path = with_suffix(&self.prefix, ".idx");
        fs::rename(&self.bin_tmp, &bin_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.bin_tmp.display(),
                bin_path.display()
            )
        })?;
        fs::rename(&self.idx_tmp, &idx_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.idx_tmp.display(),
                idx_path.display()
            )
        })?;
        Ok(Summary {
            prefix: self.prefix.clone(),
            dtype: self.dtype,
            documents: self.doc_index.len() as u64 - 1,
            sequences: self.sizes.len() as u64,
            tokens: self.tokens,
            bin_bytes: self.tokens * self.dtype.size() as u64,
            idx_bytes: idx.len() as u64,
        })
    }
}

impl Drop for IndexedWriter {
    fn drop(&mut self) {
        // Unfinished (error or early return): remove the temporaries; a finished writer has
        // renamed them already, so these removals fail harmlessly.
        self.bin.take();
        let _ = fs::remove_file(&self.bin_tmp);
        let _ = fs::remove_file(&self.idx_tmp);
    }
}

/// The `.idx` bytes for contiguous sequences of `sizes` tokens, one document per sequence.
pub fn index_bytes(dtype: TokenDtype, sizes: &[i32]) -> Vec<u8> {
    let docs: Vec<i64> = (0..=sizes.len() as i64).collect();
    index_bytes_with_documents(dtype, sizes, &docs)
}

/// The `.idx` bytes for contiguous sequences of `sizes` tokens and the document index `docs`
/// (sequence where each document starts, then the sequence count).
pub fn index_bytes_with_documents(dtype: TokenDtype, sizes: &[i32], docs: &[i64]) -> Vec<u8> {
    let n = sizes.len();
    let mut out = Vec::with_capacity(HEADER_LEN + 12 * n + 8 * docs.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(dtype.code());
    out.extend_from_slice(&(n as u64).to_le_bytes());
    out.extend_from_slice(&(docs.len() as u64).to_le_bytes());
    for &s in sizes {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let mut ptr = 0i64;
    for &s in sizes {
        out.extend_from_slice(&ptr.to_le_bytes());
        ptr += s as i64 * dtype.size() as i64;
    }
    for d in docs {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swallow-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn write(prefix: &Path, dtype: TokenDtype, docs: &[Vec<u32>]) -> Summary {
        let mut w = IndexedWriter::create(prefix, dtype).unwrap();
        for d in docs {
            w.add_document(d).unwrap();
        }
        w.finish().unwrap()
    }

    fn err_of<T: fmt::Debug>(r: Result<T>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn dtype_codes_and_sizes() {
        for (i, d) in TokenDtype::ALL.iter().enumerate() {
            assert_eq!(d.code() as usize, i + 1);
            assert_eq!(TokenDtype::from_code(d.code()), Some(*d));
        }
        assert_eq!(TokenDtype::from_code(0), None);
        assert_eq!(TokenDtype::from_code(9), None);
        assert_eq!(TokenDtype::for_vocab(43_176), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab(65_499), TokenDtype::U16);
        assert_eq!(TokenDtype::for_vocab(65_500), TokenDtype::I32);
        assert_eq!(TokenDtype::for_vocab(128_256), TokenDtype::I32);
        assert_eq!(TokenDtype::U16.size(), 2);
        assert_eq!(TokenDtype::F64.size(), 8);
    }

    #[test]
    fn round_trip_u16_and_i32() {
        let dir = tmpdir("roundtrip");
        let docs = vec![vec![1, 2, 3], vec![], vec![65_535, 0, 7, 7], vec![42]];
        for dtype in [TokenDtype::U16, TokenDtype::I32] {
            let p = dir.join(format!("rt_{dtype}"));
            let s = write(&p, dtype, &docs);
            assert_eq!((s.documents, s.tokens), (4, 8));
            let ds = IndexedDataset::open(&p).unwrap();
            assert_eq!(ds.dtype(), dtype);
            assert_eq!(ds.num_sequences(), 4);
            assert_eq!(ds.num_documents(), 4);
            assert_eq!(ds.num_tokens(), 8);
            assert_eq!(ds.document_boundaries(), vec![0, 1, 2, 3, 4]);
            for (i, d) in docs.iter().enumerate() {
                assert_eq!(ds.sequence_len(i), d.len());
                assert_eq!(&ds.document(i).unwrap(), d);
            }
            let mut two = [0u32; 2];
            ds.read_tokens(2, 1, &mut two).unwrap();
            assert_eq!(two, [0, 7]);
            assert!(ds.read_tokens(2, 3, &mut two).is_err());
            assert_eq!(ds.document_of_sequence(3), 3);
            // The prefix may be given with an extension too.
            let ds2 = IndexedDataset::open(&with_suffix(&p, ".bin")).unwrap();
            assert_eq!(ds2.num_tokens(), 8);
            // No temporaries left behind.
            let left: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("tmp"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// The .idx layout written out by hand from the spec, compared byte for byte.
    #[test]
    fn idx_layout_byte_exact() {
        let dir = tmpdir("layout");
        let p = dir.join("x");
        write(&p, TokenDtype::U16, &[vec![5, 6, 7], vec![8, 9]]);
        let mut want: Vec<u8> = vec![b'M', b'M', b'I', b'D', b'I', b'D', b'X', 0, 0];
        want.extend([1, 0, 0, 0, 0, 0, 0, 0]); // version 1, u64 LE
        want.push(8); // dtype code: u16
        want.extend([2, 0, 0, 0, 0, 0, 0, 0]); // sequence count
        want.extend([3, 0, 0, 0, 0, 0, 0, 0]); // document index entries
        want.extend([3, 0, 0, 0, 2, 0, 0, 0]); // sizes, i32
        want.extend([0, 0, 0, 0, 0, 0, 0, 0]); // pointer 0, i64
        want.extend([6, 0, 0, 0, 0, 0, 0, 0]); // pointer 6 bytes (3 u16 tokens)
        want.extend([0, 0, 0, 0, 0, 0, 0, 0]); // document index 0, 1, 2
        want.extend([1, 0, 0, 0, 0, 0, 0, 0]);
        want.extend([2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(fs::read(with_suffix(&p, ".idx")).unwrap(), want);
        assert_eq!(
            fs::read(with_suffix(&p, ".bin")).unwrap(),
            vec![5, 0, 6, 0, 7, 0, 8, 0, 9, 0]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A hand-built index with a multi-sequence document and i64 data, as Megatron's
    /// `--split-sentences` would write it.
    #[test]
    fn reads_multi_sequence_documents() {
        let dir = tmpdir("multiseq");
        let p = dir.join("m");
        let mut idx = MAGIC.to_vec();
        idx.extend(1u64.to_le_bytes());
        idx.push(5); // i64
        idx.extend(3u64.to_le_bytes());
        idx.extend(3u64.to_le_bytes());
        for s in [2i32, 1, 2] {
            idx.extend(s.to_le_bytes());
        }
        for ptr in [0i64, 16, 24] {
            idx.extend(ptr.to_le_bytes());
        }
        for d in [0i64, 2, 3] {
            idx.extend(d.to_le_bytes());
        }
        fs::write(with_suffix(&p, ".idx"), idx).unwrap();
        let bin: Vec<u8> = [10i64, 11, 12, 13, 14]
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        fs::write(with_suffix(&p, ".bin"), bin).unwrap();
        let ds = IndexedDataset::open(&p).unwrap();
        assert_eq!(ds.num_documents(), 2);
        assert_eq!(ds.document(0).unwrap(), vec![10, 11, 12]);
        assert_eq!(ds.document(1).unwrap(), vec![13, 14]);
        assert_eq!(ds.document_of_sequence(1), 0);
        assert_eq!(ds.document_of_sequence(2), 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Shards written by megatron-core's own IndexedDatasetBuilder
    /// (tests/fixtures/make_megatron_shard.py), against the token lists the script recorded.
    #[test]
    fn reads_megatron_core_fixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let expected: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("megatron_shard.json")).unwrap()).unwrap();
        for (name, want_dtype) in [
            ("megatron_shard", TokenDtype::U16),
            ("megatron_shard_i32", TokenDtype::I32),
        ] {
            let ds = IndexedDataset::open(&dir.join(name)).unwrap();
            let e = &expected[name];
            assert_eq!(ds.dtype(), want_dtype);
            let docs = e["documents"].as_array().unwrap();
            assert_eq!(ds.num_documents(), docs.len());
            let mut seq = 0;
            let mut tokens = 0;
            for (d, doc) in docs.iter().enumerate() {
                let seqs = doc.as_array().unwrap();
                assert_eq!(
                    ds.document_sequences(d),
                    seq..seq + seqs.len(),
                    "{name} doc {d}"
                );
                for s in seqs {
                    let want: Vec<u32> = s
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_u64().unwrap() as u32)
                        .collect();
                    assert_eq!(ds.sequence(seq).unwrap(), want, "{name} sequence {seq}");
                    assert_eq!(ds.document_of_sequence(seq), d);
                    tokens += want.len() as u64;
                    seq += 1;
                }
            }
            assert_eq!(ds.num_sequences(), seq);
            assert_eq!(ds.num_tokens(), tokens);
        }
    }

    #[test]
    fn truncated_and_corrupt_files_are_named() {
        let dir = tmpdir("trunc");
        let p = dir.join("t");
        write(&p, TokenDtype::U16, &[vec![1, 2, 3, 4], vec![5, 6]]);
        let (bin, idx) = (with_suffix(&p, ".bin"), with_suffix(&p, ".idx"));
        let full_bin = fs::read(&bin).unwrap();
        let full_idx = fs::read(&idx).unwrap();

        fs::write(&bin, &full_bin[..7]).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(
            e.contains("t.bin is truncated: index needs 12 bytes, file has 7"),
            "{e}"
        );
        // An .idx that says u16 over a .bin of i32 tokens (the same ids, twice the bytes).
        let wide: Vec<u8> = full_bin.chunks(2).flat_map(|c| (u16::from_le_bytes([c[0], c[1]]) as i32).to_le_bytes()).collect();
        fs::write(&bin, &wide).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(e.contains("t.bin has 24 bytes") && e.contains("describes exactly 12") && e.contains("as if its tokens had 4 bytes each"), "{e}");
        let mut extra = full_bin.clone();
        extra.push(0);
        fs::write(&bin, &extra).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(e.contains("t.bin has 13 bytes") && e.contains("do not belong together"), "{e}");
        fs::write(&bin, &full_bin).unwrap();

        fs::write(&idx, &full_idx[..full_idx.len() - 3]).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(e.contains("t.idx is truncated"), "{e}");
        assert!(e.contains("need 82 bytes, file has 79"), "{e}");
        fs::write(&idx, &full_idx[..20]).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(
            e.contains("t.idx is truncated: the header needs 34 bytes"),
            "{e}"
        );

        let mut bad = full_idx.clone();
        bad[0] = b'X';
        fs::write(&idx, &bad).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(e.contains("t.idx: bad magic"), "{e}");

        let mut bad = full_idx.clone();
        bad[9] = 2;
        fs::write(&idx, &bad).unwrap();
        assert!(err_of(IndexedDataset::open(&p)).contains("unsupported index version 2"));

        let mut bad = full_idx.clone();
        bad[17] = 9;
        fs::write(&idx, &bad).unwrap();
        assert!(err_of(IndexedDataset::open(&p)).contains("unknown dtype code 9"));

        fs::remove_file(&idx).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(e.contains("t.idx: no such file"), "{e}");
        fs::write(&idx, &full_idx).unwrap();
        fs::remove_file(&bin).unwrap();
        let e = err_of(IndexedDataset::open(&p));
        assert!(e.contains("t.bin: no such file"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn negative_ids_are_rejected_on_read() {
        let dir = tmpdir("negative");
        let p = dir.join("n");
        fs::write(with_suffix(&p, ".idx"), index_bytes(TokenDtype::I32, &[2])).unwrap();
        let bin: Vec<u8> = [3i32, -1].iter().flat_map(|t| t.to_le_bytes()).collect();
        fs::write(with_suffix(&p, ".bin"), bin).unwrap();
        let ds = IndexedDataset::open(&p).unwrap();
        let e = err_of(ds.sequence(0));
        assert!(e.contains("n.bin: sequence 0 token 1 is -1"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn writer_rejects_ids_too_large_and_keeps_old_files() {
        let dir = tmpdir("writer");
        let p = dir.join("w");
        write(&p, TokenDtype::U16, &[vec![1, 2]]);
        let before = fs::read(with_suffix(&p, ".bin")).unwrap();
        {
            let mut w = IndexedWriter::create(&p, TokenDtype::U16).unwrap();
            w.add_document(&[3, 4, 5]).unwrap();
            let e = err_of(w.add_document(&[1, 70_000]));
            assert!(
                e.contains("token id 70000 (position 1 of document 1)"),
                "{e}"
            );
            assert!(e.contains("u16"), "{e}");
        } // dropped unfinished
        assert_eq!(fs::read(with_suffix(&p, ".bin")).unwrap(), before);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_output_directory_is_named() {
        let dir = tmpdir("unwritable");
        let file = dir.join("not_a_dir");
        fs::write(&file, b"x").unwrap();
        let e = err_of(IndexedWriter::create(&file.join("out"), TokenDtype::U16).map(|_| ()));
        assert!(e.contains("not_a_dir"), "{e}");
        assert!(e.contains("output directory"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
