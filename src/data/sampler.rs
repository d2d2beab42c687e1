//! GPT-style training samples from indexed datasets: the datasets are read as one token stream (in
//! the order given, documents back to back), cut into windows of `seq_len + 1` tokens with stride
//! `seq_len` (inputs and shifted targets share the overlapping token; windows cross document
//! boundaries, a last partial window is dropped). Training reads an endless stream of epochs, each a
//! seeded permutation of the windows, so the sample at global index `i` is a pure function of
//! (seed, i, data) and every parallel layout sees the same global batch (design principle 2).
//! Blending several such streams by weight is [`crate::data::blend`]; Megatron's document-level
//! shuffling and train/valid split are a later layer on top of this.

use crate::data::indexed::IndexedDataset;
use anyhow::{bail, Result};
use std::ops::Range;

/// Windows of `seq_len + 1` tokens over the concatenation of `datasets`.
pub struct GptSampler {
    datasets: Vec<IndexedDataset>,
    /// Stream offset of the first token of each dataset, plus the total at the end.
    dataset_starts: Vec<u64>,
    /// Per dataset: stream-relative start of each sequence read, plus the dataset's total at the end.
    sequence_starts: Vec<Vec<u64>>,
    /// Per dataset: the sequences read (all of them, or the documents of one split).
    ranges: Vec<Range<usize>>,
    seq_len: usize,
    seed: u64,
    vocab_size: usize,
    num_samples: u64,
}

impl GptSampler {
    pub fn new(
        datasets: Vec<IndexedDataset>,
        seq_len: usize,
        seed: u64,
        vocab_size: usize,
    ) -> Result<Self> {
        let parts = datasets
            .into_iter()
            .map(|d| {
                let n = d.num_documents();
                (d, 0..n)
            })
            .collect();
        Self::with_documents(parts, seq_len, seed, vocab_size)
    }

    /// Like [`new`](Self::new), reading only the documents `range` of each dataset (a
    /// train/valid/test split, see [`crate::data::blend::Split`]). Sequences outside every document
    /// (after the document index's last entry) are read only when a range ends at the last document.
    pub fn with_documents(
        parts: Vec<(IndexedDataset, Range<usize>)>,
        seq_len: usize,
        seed: u64,
        vocab_size: usize,
    ) -> Result<Self> {
        let mut datasets = Vec::with_capacity(parts.len());
        let mut ranges = Vec::with_capacity(parts.len());
        for (ds, docs) in parts {
            let n = ds.num_documents();
            if docs.start > docs.end || docs.end > n {
                bail!(
                    "{}: documents {}..{} requested, the dataset has {n}",
                    ds.prefix().display(),
                    docs.start,
                    docs.end
                );
            }
            let end = if docs.end == n {
                ds.num_sequences()
            } else {
                ds.document_index(docs.end)
            };
            ranges.push(ds.document_index(docs.start).min(end)..end);
            datasets.push(ds);
        }
        if seq_len == 0 {
            bail!("sequence length must be at least 1");
        }
        if datasets.is_empty() {
            bail!("no datasets given to the sampler");
        }
        let mut dataset_starts = vec![0u64];
        let mut sequence_starts = Vec::with_capacity(datasets.len());
        for (ds, range) in datasets.iter().zip(&ranges) {
            let mut starts = Vec::with_capacity(range.len() + 1);
            let mut t = 0u64;
            for s in range.clone() {
                starts.push(t);
                t += ds.sequence_len(s) as u64;
            }
            starts.push(t);
            sequence_starts.push(starts);
            dataset_starts.push(dataset_starts.last().unwrap() + t);
        }
        let total = *dataset_starts.last().unwrap();
        let need = seq_len as u64 + 1;
        if total < need {
            let names: Vec<String> = datasets
                .iter()
                .map(|d| d.prefix().display().to_string())
                .collect();
            bail!(
                "not enough data for one sample: {} has {total} tokens, a sample of sequence length {seq_len} needs {need}",
                names.join(" + ")
            );
        }
        Ok(GptSampler {
            datasets,
            dataset_starts,
            sequence_starts,
            ranges,
            seq_len,
            seed,
            vocab_size,
            num_samples: (total - 1) / seq_len as u64,
        })
    }

    /// Samples per epoch.
    pub fn num_samples(&self) -> u64 {
        self.num_samples
    }

    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Total tokens in the stream.
    pub fn num_tokens(&self) -> u64 {
        *self.dataset_starts.last().unwrap()
    }

    pub fn datasets(&self) -> &[IndexedDataset] {
        &self.datasets
    }

    /// Which window sample `i` of the endless shuffled stream reads: epoch `i / num_samples` is
    /// a permutation of all windows keyed by (seed, epoch).
    pub fn sample_index(&self, i: u64) -> u64 {
        let n = self.num_samples;
        shuffle_index(self.seed, i / n, n, i % n)
    }

    /// Sample `i` of the endless shuffled stream; `out` holds `seq_len + 1` tokens.
    pub fn sample(&self, i: u64, out: &mut [u32]) -> Result<()> {
        self.window(self.sample_index(i), out)
    }

    /// Window `j` in stream order (no shuffling, no epochs): for evaluation, which reads the data
    /// whole and in order. `j < num_samples()`.
    pub fn sequential(&self, j: u64, out: &mut [u32]) -> Result<()> {
        if j >= self.num_samples {
            bail!(
                "sample {j} out of range: the data has {} samples of sequence length {}",
                self.num_samples,
                self.seq_len
            );
        }
        self.window(j, out)
    }

    /// Stream tokens [j*seq_len, j*seq_len + seq_len + 1) into `out`, checking the vocabulary.
    fn window(&self, j: u64, out: &mut [u32]) -> Result<()> {
        if out.len() != self.seq_len + 1 {
            bail!(
                "sample buffer holds {} tokens, expected seq_len + 1 = {}",
                out.len(),
                self.seq_len + 1
            );
        }
        let mut pos = j * self.seq_len as u64;
        // Dataset containing `pos`: the last start <= pos, skipping empty datasets.
        let mut d = self.dataset_starts.partition_point(|&s| s <= pos) - 1;
        let mut filled = 0;
        while filled < out.len() {
            while pos >= self.dataset_starts[d + 1] {
                d += 1;
            }
            let ds = &self.datasets[d];
            let starts = &self.sequence_starts[d];
            let local = pos - self.dataset_starts[d];
            let range = &self.ranges[d];
            let mut s = range.start + starts.partition_point(|&x| x <= local) - 1;
            let mut offset = (local - starts[s - range.start]) as usize;
            while filled < out.len() && s < range.end {
                let take = (ds.sequence_len(s) - offset).min(out.len() - filled);
                let chunk = &mut out[filled..filled + take];
                ds.read_tokens(s, offset, chunk)?;
                if let Some(&bad) = chunk.iter().find(|&&t| t as usize >= self.vocab_size) {
                    bail!(
                        "{}: token id {bad} in document {} (sequence {s}) is outside the vocabulary of size {}",
                        ds.prefix().display(),
                        ds.document_of_sequence(s),
                        self.vocab_size
                    );
                }
                filled += take;
                pos += take as u64;
                s += 1;
                offset = 0;
            }
        }
        Ok(())
    }
}

/// splitmix64 finalizer: a strong 64-bit mixing function.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Position `i` of a pseudo-random permutation of `0..n` keyed by (seed, epoch). A balanced
/// 4-round Feistel network over the smallest even power of two >= n, with cycle walking to stay
/// below n: a bijection computed in O(1) memory, so no permutation table is built, cached or
/// shared, and any rank can evaluate any index.
pub fn shuffle_index(seed: u64, epoch: u64, n: u64, i: u64) -> u64 {
    assert!(i < n, "shuffle index {i} out of range 0..{n}");
    if n == 1 {
        return 0;
    }
    let bits = (64 - (n - 1).leading_zeros()).max(2);
    let half = bits.div_ceil(2);
    let mask = (1u64 << half) - 1;
    let key = mix64(mix64(seed) ^ epoch.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let round_keys: [u64; 4] = std::array::from_fn(|r| mix64(key ^ (r as u64 + 1)));
    let mut x = i;
    loop {
        let (mut l, mut r) = (x >> half, x & mask);
        for k in round_keys {
            let f = mix64(r ^ k) & mask;
            (l, r) = (r, l ^ f);
        }
        x = (l << half) | r;
        if x < n {
            return x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::indexed::{IndexedWriter, TokenDtype};
    use std::path::{Path, PathBuf};

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swallow-sampler-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn shard(p: &Path, docs: &[&[u32]]) -> IndexedDataset {
        let mut w = IndexedWriter::create(p, TokenDtype::U16).unwrap();
        for d in docs {
            w.add_document(d).unwrap();
        }
        w.finish().unwrap();
        IndexedDataset::open(p).unwrap()
    }

    #[test]
    fn windows_cross_documents_and_datasets() {
        let dir = tmpdir("windows");
        // Stream: 0..=4 | (empty) | 5 6 | 7..=11   then second dataset: 12 13 14 | 15
        let a = shard(
            &dir.join("a"),
            &[&[0, 1, 2, 3, 4], &[], &[5, 6], &[7, 8, 9, 10, 11]],
        );
        let b = shard(&dir.join("b"), &[&[12, 13, 14], &[15]]);
        let s = GptSampler::new(vec![a, b], 4, 7, 100).unwrap();
        assert_eq!(s.num_tokens(), 16);
        assert_eq!(s.num_samples(), 3); // (16 - 1) / 4; the window at 12..17 is partial
        let mut out = [0u32; 5];
        for j in 0..3u64 {
            s.sequential(j, &mut out).unwrap();
            let want: Vec<u32> = (j as u32 * 4..j as u32 * 4 + 5).collect();
            assert_eq!(out.to_vec(), want, "window {j}");
        }
        assert!(s.sequential(3, &mut out).is_err());
        assert!(s.sequential(0, &mut [0u32; 4]).is_err());
        // A window that ends exactly at the last token is kept.
        let c = shard(&dir.join("c"), &[&[1, 2, 3], &[4, 5]]);
        let s = GptSampler::new(vec![c], 2, 0, 10).unwrap();
        assert_eq!(s.num_samples(), 2);
        s.sequential(1, &mut out[..3]).unwrap();
        assert_eq!(out[..3], [3, 4, 5]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn too_little_data_says_how_much() {
        let dir = tmpdir("little");
        let a = shard(&dir.join("a"), &[&[1, 2, 3]]);
        let e = format!("{:#}", GptSampler::new(vec![a], 8, 0, 10).err().unwrap());
        assert!(e.contains("has 3 tokens"), "{e}");
        assert!(e.contains("needs 9"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shuffle_is_a_permutation_and_epochs_differ() {
        for n in [1u64, 2, 3, 5, 16, 17, 100, 1000, 4097] {
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let j = shuffle_index(42, 0, n, i);
                assert!(j < n && !seen[j as usize], "n={n} i={i} j={j}");
                seen[j as usize] = true;
            }
        }
        let n = 1000;
        let e0: Vec<u64> = (0..n).map(|i| shuffle_index(42, 0, n, i)).collect();
        let e1: Vec<u64> = (0..n).map(|i| shuffle_index(42, 1, n, i)).collect();
        let s1: Vec<u64> = (0..n).map(|i| shuffle_index(43, 0, n, i)).collect();
        assert_ne!(e0, e1);
        assert_ne!(e0, s1);
        let fixed = e0
            .iter()
            .enumerate()
            .filter(|(i, &j)| *i as u64 == j)
            .count();
        assert!(fixed < 10, "{fixed} fixed points: barely shuffled");
        assert_ne!(e0, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn samples_are_deterministic_and_cover_each_epoch() {
        let dir = tmpdir("determinism");
        let docs: Vec<Vec<u32>> = (0..20)
            .map(|d| (0..7).map(|k| d * 7 + k).collect())
            .collect();
        let refs: Vec<&[u32]> = docs.iter().map(|d| d.as_slice()).collect();
        let p = dir.join("d");
        shard(&p, &refs);
        let s1 = GptSampler::new(vec![IndexedDataset::open(&p).unwrap()], 6, 1234, 1000).unwrap();
        let s2 = GptSampler::new(vec![IndexedDataset::open(&p).unwrap()], 6, 1234, 1000).unwrap();
        let n = s1.num_samples();
        assert_eq!(n, 23); // 140 tokens: (140 - 1) / 6
        let read = |s: &GptSampler, i: u64| {
            let mut out = vec![0u32; 7];
            s.sample(i, &mut out).unwrap();
            out
        };
        // Same (seed, i) -> same sample, whatever the order of calls.
        let forward: Vec<_> = (0..3 * n).map(|i| read(&s1, i)).collect();
        let backward: Vec<_> = (0..3 * n).rev().map(|i| read(&s2, i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        // Each epoch reads every window exactly once; windows start at multiples of seq_len.
        for e in 0..3 {
            let mut firsts: Vec<u32> = forward[(e * n) as usize..((e + 1) * n) as usize]
                .iter()
                .map(|w| w[0])
                .collect();
            firsts.sort();
            assert_eq!(firsts, (0..n as u32).map(|j| j * 6).collect::<Vec<_>>());
        }
        assert_ne!(forward[..n as usize], forward[n as usize..2 * n as usize]);
        // Another seed, another order.
        let s3 = GptSampler::new(vec![IndexedDataset::open(&p).unwrap()], 6, 99, 1000).unwrap();
        assert_ne!(
            (0..n).map(|i| read(&s3, i)).collect::<Vec<_>>(),
            forward[..n as usize]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ids_outside_the_vocabulary_are_named() {
        let dir = tmpdir("vocab");
        let p = dir.join("v");
        let a = shard(&p, &[&[1, 2, 3], &[4, 50, 6]]);
        let s = GptSampler::new(vec![a], 2, 0, 50).unwrap();
        let mut out = [0u32; 3];
        s.sequential(0, &mut out).unwrap();
        let e = format!("{:#}", s.sequential(1, &mut out).unwrap_err());
        assert!(e.contains(&p.display().to_string()), "{e}");
        assert!(e.contains("token id 50 in document 1 (sequence 1)"), "{e}");
        assert!(e.contains("vocabulary of size 50"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
