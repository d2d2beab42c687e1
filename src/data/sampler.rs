//! GPT-style training samples from indexed datasets, with Megatron GPTDataset's semantics. The
//! sampler's documents are the sequences of its datasets (one per document as `swallow prep` and
//! Megatron's preprocess_data.py write them; megatron-core's GPTDataset shuffles sequences too),
//! restricted to a document range per dataset for train/valid/test splits. Training reads an endless
//! stream of epochs; in epoch `e`:
//! 1. the documents are put in a seeded shuffled order keyed by (seed, e) ([`EpochIndex`]);
//! 2. that order's concatenation is cut into samples of `seq_len + 1` tokens with stride `seq_len`
//!    (inputs and shifted targets share the overlapping token, as with Megatron's
//!    add_extra_token_to_sequence; samples cross document boundaries; the last `< seq_len` tokens
//!    of the epoch are dropped), `(tokens - 1) / seq_len` samples per epoch;
//! 3. the samples are read in a seeded permuted order keyed by (seed, e) ([`shuffle_index`]).
//!
//! So the sample at global index `i` is a pure function of (seed, i, data) and every parallel
//! layout, and a run resumed at any consumed-sample count, sees the same global batches (design
//! principle 2). Each rank builds the index of an epoch itself when it first reads from it (no
//! files, no broadcast; about a second per 1e7 documents, `swallow bench data`) and keeps the two epochs read last. Unlike
//! Megatron, epochs do not share samples across their boundary and the shuffles are ours (not
//! numpy's), so the order is not bit-identical to Megatron's. Blending several such streams by
//! weight is [`crate::data::blend`].

use crate::data::epoch::EpochIndex;
use crate::data::indexed::IndexedDataset;
use crate::mix::mix64;
use anyhow::{bail, Result};
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Epoch indices kept per sampler (a batch can straddle an epoch boundary).
const CACHED_EPOCHS: usize = 2;

/// Samples of `seq_len + 1` tokens over the documents of `datasets`, shuffled per epoch.
pub struct GptSampler {
    datasets: Vec<IndexedDataset>,
    /// Per dataset: the sequences read (all of them, or the documents of one split).
    ranges: Vec<Range<usize>>,
    /// Sampler document id of each dataset's first sequence read, plus the total at the end.
    unit_starts: Vec<usize>,
    num_tokens: u64,
    seq_len: usize,
    seed: u64,
    vocab_size: usize,
    num_samples: u64,
    /// Recently used epoch indices, most recent last; `None` is the stored order.
    epochs: Mutex<Vec<(Option<u64>, Arc<EpochIndex>)>>,
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
        let mut unit_starts = vec![0usize];
        let mut total = 0u64;
        for (ds, range) in datasets.iter().zip(&ranges) {
            unit_starts.push(unit_starts.last().unwrap() + range.len());
            total += range.clone().map(|s| ds.sequence_len(s) as u64).sum::<u64>();
        }
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
            ranges,
            unit_starts,
            num_tokens: total,
            seq_len,
            seed,
            vocab_size,
            num_samples: (total - 1) / seq_len as u64,
            epochs: Mutex::new(Vec::new()),
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

    /// Total tokens per epoch (all documents read).
    pub fn num_tokens(&self) -> u64 {
        self.num_tokens
    }

    /// Documents (sequences) per epoch.
    pub fn num_documents(&self) -> usize {
        *self.unit_starts.last().unwrap()
    }

    pub fn datasets(&self) -> &[IndexedDataset] {
        &self.datasets
    }

    /// (dataset, sequence) of sampler document `u`.
    fn locate_unit(&self, u: usize) -> (usize, usize) {
        let d = self.unit_starts.partition_point(|&s| s <= u) - 1;
        (d, self.ranges[d].start + u - self.unit_starts[d])
    }

    fn unit_len(&self, u: usize) -> usize {
        let (d, s) = self.locate_unit(u);
        self.datasets[d].sequence_len(s)
    }

    /// The document order of `epoch` (`None`: stored order), built on first use and cached.
    pub fn epoch_index(&self, epoch: Option<u64>) -> Arc<EpochIndex> {
        let mut cache = self.epochs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = cache.iter().position(|(e, _)| *e == epoch) {
            let hit = cache.remove(k);
            cache.push(hit.clone());
            return hit.1;
        }
        let n = self.num_documents();
        let ix = Arc::new(match epoch {
            None => EpochIndex::stored(n, |u| self.unit_len(u)),
            Some(e) => EpochIndex::shuffled(document_order_key(self.seed, e), n, |u| self.unit_len(u)),
        });
        if cache.len() == CACHED_EPOCHS {
            cache.remove(0);
        }
        cache.push((epoch, ix.clone()));
        ix
    }

    /// (epoch, sample number within the epoch's stored windows) that sample `i` of the endless
    /// shuffled stream reads.
    pub fn sample_index(&self, i: u64) -> (u64, u64) {
        let n = self.num_samples;
        (i / n, shuffle_index(self.seed, i / n, n, i % n))
    }

    /// Sample `i` of the endless shuffled stream; `out` holds `seq_len + 1` tokens.
    pub fn sample(&self, i: u64, out: &mut [u32]) -> Result<()> {
        let (epoch, j) = self.sample_index(i);
        self.window(&self.epoch_index(Some(epoch)), j, out)
    }

    /// Window `j` of the documents in stored order (no shuffling, no epochs): for evaluation,
    /// which reads the data whole and in order. `j < num_samples()`.
    pub fn sequential(&self, j: u64, out: &mut [u32]) -> Result<()> {
        if j >= self.num_samples {
            bail!(
                "sample {j} out of range: the data has {} samples of sequence length {}",
                self.num_samples,
                self.seq_len
            );
        }
        self.window(&self.epoch_index(None), j, out)
    }

    /// Tokens [j*seq_len, j*seq_len + seq_len + 1) of the order `ix` into `out`, checking the
    /// vocabulary.
    fn window(&self, ix: &EpochIndex, j: u64, out: &mut [u32]) -> Result<()> {
        if out.len() != self.seq_len + 1 {
            bail!(
                "sample buffer holds {} tokens, expected seq_len + 1 = {}",
                out.len(),
                self.seq_len + 1
            );
        }
        let (mut k, mut offset) = ix.locate(j * self.seq_len as u64);
        let mut filled = 0;
        while filled < out.len() {
            let (d, s) = self.locate_unit(ix.document(k));
            let ds = &self.datasets[d];
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
            k += 1;
            offset = 0;
        }
        Ok(())
    }
}

/// The key of epoch `epoch`'s document order (independent of the sample order's key).
fn document_order_key(seed: u64, epoch: u64) -> u64 {
    mix64(mix64(seed ^ 0x0D0C_0D0C_5EED_0000) ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))
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
    use crate::data::indexed_writer::IndexedWriter;
use crate::data::token_dtype::TokenDtype;
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

    /// The GPTDataset recipe written out naively for one epoch: the documents concatenated in the
    /// given order, cut into windows of seq + 1 tokens with stride seq.
    fn naive_epoch(docs: &[Vec<u32>], order: &[usize], seq: usize) -> Vec<Vec<u32>> {
        let stream: Vec<u32> = order.iter().flat_map(|&d| docs[d].iter().copied()).collect();
        (0..(stream.len() - 1) / seq)
            .map(|j| stream[j * seq..j * seq + seq + 1].to_vec())
            .collect()
    }

    #[test]
    fn epochs_shuffle_documents_then_samples_like_gpt_dataset() {
        let dir = tmpdir("epochs");
        // 30 documents of 0..=9 tokens (some empty), every token id unique.
        let mut next = 0u32;
        let docs: Vec<Vec<u32>> = (0..30u32)
            .map(|d| {
                let len = (d * 7) % 10;
                let doc = (next..next + len).collect();
                next += len;
                doc
            })
            .collect();
        let refs: Vec<&[u32]> = docs.iter().map(|d| d.as_slice()).collect();
        let p = dir.join("d");
        shard(&p, &refs);
        let seq = 6;
        let open = |seed| GptSampler::new(vec![IndexedDataset::open(&p).unwrap()], seq, seed, 1000).unwrap();
        let (s1, s2) = (open(1234), open(1234));
        let n = s1.num_samples();
        assert_eq!(s1.num_tokens(), next as u64);
        assert_eq!(n, (next as u64 - 1) / seq as u64);
        let read = |s: &GptSampler, i: u64| {
            let mut out = vec![0u32; seq + 1];
            s.sample(i, &mut out).unwrap();
            out
        };
        // Same (seed, i) -> same sample, whatever the order of calls (and the cache's state).
        let forward: Vec<_> = (0..4 * n).map(|i| read(&s1, i)).collect();
        let backward: Vec<_> = (0..4 * n).rev().map(|i| read(&s2, i)).collect();
        assert!(forward.iter().eq(backward.iter().rev()));
        let mut orders = Vec::new();
        for e in 0..4u64 {
            // The epoch's order is a permutation of the documents ...
            let ix = s1.epoch_index(Some(e));
            let order: Vec<usize> = (0..ix.len()).map(|k| ix.document(k)).collect();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..30).collect::<Vec<_>>(), "epoch {e}");
            // ... and the epoch's samples are exactly the windows of its concatenation, each once,
            // in an order that is not the windows' own.
            let want = naive_epoch(&docs, &order, seq);
            let got = &forward[(e * n) as usize..((e + 1) * n) as usize];
            let mut a = got.to_vec();
            let mut b = want.clone();
            a.sort();
            b.sort();
            assert_eq!(a, b, "epoch {e}");
            assert_ne!(got, want.as_slice(), "epoch {e}: samples not shuffled");
            orders.push(order);
        }
        assert_ne!(orders[0], (0..30).collect::<Vec<_>>(), "documents not shuffled");
        assert!(orders.windows(2).all(|w| w[0] != w[1]), "epochs repeat one document order");
        // Another seed, another document order.
        let s3 = open(99);
        let ix = s3.epoch_index(Some(0));
        assert_ne!((0..30).map(|k| ix.document(k)).collect::<Vec<_>>(), orders[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn split_ranges_shuffle_only_their_documents() {
        let dir = tmpdir("ranges");
        let docs: Vec<Vec<u32>> = (0..10u32).map(|d| (d * 10..d * 10 + 4).collect()).collect();
        let refs: Vec<&[u32]> = docs.iter().map(|d| d.as_slice()).collect();
        let p = dir.join("d");
        shard(&p, &refs);
        let q = dir.join("e");
        shard(&q, &refs[..3]);
        let parts = vec![
            (IndexedDataset::open(&p).unwrap(), 2..6),
            (IndexedDataset::open(&q).unwrap(), 1..3),
        ];
        let s = GptSampler::with_documents(parts, 3, 5, 1000).unwrap();
        assert_eq!((s.num_documents(), s.num_tokens()), (6, 24));
        let mut out = [0u32; 4];
        let mut firsts = std::collections::BTreeSet::new();
        for i in 0..5 * s.num_samples() {
            s.sample(i, &mut out).unwrap();
            for t in out {
                assert!((20..60).contains(&t) || (10..30).contains(&t), "token {t} outside the ranges");
            }
            firsts.insert(out[0]);
        }
        assert!(firsts.len() > 6, "samples start in few places: {firsts:?}");
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
