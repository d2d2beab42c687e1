//! Writes a Megatron indexed dataset (the format indexed.rs reads): one sequence per document, to
//! temporary files renamed into place only when both are complete; and the `.idx` bytes of given
//! sequence sizes, for tools and tests. The format round-trip tests live here.

use super::indexed::{with_suffix, IndexedDataset, HEADER_LEN, MAGIC, VERSION};
use super::token_dtype::TokenDtype;
use anyhow::{anyhow, bail, Context, Result};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

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

    fn err_of<T: std::fmt::Debug>(r: Result<T>) -> String {
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
