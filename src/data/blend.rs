//! Blending several datasets by weight into one endless training stream (Megatron's BlendedDataset).
//! Each entry of a [`DataSpec`] becomes its own [`GptSampler`] (its shards concatenated, shuffled
//! with a seed derived from (seed, entry index)). Position `i` of the blended stream takes the entry
//! `d` with the largest `w_d * (i + 1) - c_d` (normalised weight times the number of samples after
//! this one, minus the samples `d` has had so far; ties go to the lowest index) and reads that
//! entry's sample number `c_d`. So every prefix of the stream holds each entry's share up to about
//! one sample (within one for two or three entries, under two for up to eight — see the tests), and
//! sample `i` is a pure function of (seed, i, spec): the same for every parallel layout and for a
//! run resumed at any consumed-sample count (design principle 2). Megatron uses `max(i, 1)` in place
//! of `i + 1`, which drifts further from the shares; the order is therefore not bit-identical to it.
//!
//! A [`Split`] (Megatron's `--split 969,30,1`) divides every shard's documents into contiguous
//! train / valid / test ranges by ratio, with megatron-core's rounding, so the three parts never
//! share a document; a sampler built for one [`Part`] reads only its documents.
//!
//! No table of the whole stream is built: the per-entry counts are remembered every [`BLOCK`]
//! samples (computed lazily, ~10 ns per sample and entry), and the block last read is kept decoded,
//! so reading the stream in order costs O(entries) per sample and random access O(BLOCK).

use crate::data::indexed::IndexedDataset;
use crate::data::sampler::GptSampler;
use crate::mix::mix64;
use crate::data::spec::DataSpec;
use anyhow::{anyhow, bail, Context, Result};
use std::fmt;
use std::ops::Range;
use std::sync::Mutex;

/// Samples between remembered per-entry counts.
pub const BLOCK: u64 = 4096;

/// Weighted interleave of several [`GptSampler`]s; same reading interface as `GptSampler`.
pub struct BlendedSampler {
    samplers: Vec<GptSampler>,
    weights: Vec<f64>,
    spec: DataSpec,
    seq_len: usize,
    seed: u64,
    vocab_size: usize,
    /// Prefix sums of the entries' samples per epoch (for [`sequential`](Self::sequential)).
    offsets: Vec<u64>,
    cursor: Mutex<Cursor>,
}

/// Lazily computed blending state, shared by all readers of one sampler.
struct Cursor {
    /// Per-entry counts at the start of each block computed so far, flattened (entries per row).
    checkpoints: Vec<u64>,
    /// The block last decoded, and for each of its positions (entry, that entry's sample number).
    block: Option<u64>,
    decoded: Vec<(u32, u64)>,
}

/// The shuffle seed of blend entry `d`: the run's seed itself for the first entry (so a one-entry
/// spec reads exactly what a plain [`GptSampler`] would), an independent stream for the others.
pub fn entry_seed(seed: u64, d: usize) -> u64 {
    if d == 0 {
        seed
    } else {
        mix64(seed ^ mix64(0xB1E0_D000 ^ d as u64))
    }
}

/// One step of the blending rule: the entry that position `i` reads, given the counts before it.
fn pick(weights: &[f64], counts: &[u64], i: u64) -> usize {
    let target = (i + 1) as f64;
    let mut best = 0;
    let mut best_err = weights[0] * target - counts[0] as f64;
    for d in 1..weights.len() {
        let err = weights[d] * target - counts[d] as f64;
        if err > best_err {
            best = d;
            best_err = err;
        }
    }
    best
}

/// One part of a train / valid / test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Train,
    Valid,
    Test,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::Train, Part::Valid, Part::Test];

    pub fn name(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Valid => "valid",
            Part::Test => "test",
        }
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Train / valid / test ratios over each shard's documents (normalised to sum 1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Split {
    pub ratios: [f64; 3],
}

impl Split {
    /// Megatron's `--split`: one to three non-negative numbers separated by `,` or `/`, missing
    /// ones 0, e.g. "98,1,1", "969/30/1", "1" (everything is training data).
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split([',', '/']).map(str::trim).collect();
        if parts.len() > 3 {
            bail!(
                "split {s:?}: {} numbers, expected at most 3 (train,valid,test)",
                parts.len()
            );
        }
        let mut ratios = [0.0; 3];
        for (r, p) in ratios.iter_mut().zip(&parts) {
            *r = p
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| anyhow!("split {s:?}: {p:?} is not a non-negative number"))?;
        }
        let sum: f64 = ratios.iter().sum();
        if sum <= 0.0 {
            bail!("split {s:?}: the ratios sum to 0");
        }
        Ok(Split {
            ratios: ratios.map(|r| r / sum),
        })
    }

    /// The documents of `part` among `n`: `round(lo * n)..round(hi * n)` for the cumulative ratio
    /// bounds, rounding halves to even as megatron-core (Python's `round`) does.
    pub fn documents(&self, n: usize, part: Part) -> Range<usize> {
        let k = part as usize;
        let lo: f64 = self.ratios[..k].iter().sum();
        let hi: f64 = lo + self.ratios[k];
        let at = |x: f64| ((x * n as f64).round_ties_even() as usize).min(n);
        if part == Part::Test {
            return at(lo)..n;
        }
        at(lo)..at(hi)
    }
}

impl BlendedSampler {
    /// Open every shard of `spec` and build one sampler per entry.
    pub fn new(spec: &DataSpec, seq_len: usize, seed: u64, vocab_size: usize) -> Result<Self> {
        Self::build(spec, None, seq_len, seed, vocab_size)
    }

    /// Like [`new`](Self::new), reading only the documents of `part` of every shard under `split`.
    pub fn new_part(
        spec: &DataSpec,
        split: &Split,
        part: Part,
        seq_len: usize,
        seed: u64,
        vocab_size: usize,
    ) -> Result<Self> {
        Self::build(spec, Some((split, part)), seq_len, seed, vocab_size)
            .with_context(|| format!("{part} part of the split {:?}", split.ratios))
    }

    fn build(
        spec: &DataSpec,
        split: Option<(&Split, Part)>,
        seq_len: usize,
        seed: u64,
        vocab_size: usize,
    ) -> Result<Self> {
        if spec.entries.is_empty() {
            bail!("empty data spec: no datasets to read");
        }
        let mut samplers = Vec::with_capacity(spec.entries.len());
        for (d, e) in spec.entries.iter().enumerate() {
            let mut parts = Vec::with_capacity(e.prefixes.len());
            for p in &e.prefixes {
                let ds = IndexedDataset::open(p)?;
                let n = ds.num_documents();
                let docs = split.map_or(0..n, |(s, part)| s.documents(n, part));
                parts.push((ds, docs));
            }
            let s = GptSampler::with_documents(parts, seq_len, entry_seed(seed, d), vocab_size);
            samplers.push(if spec.is_single() {
                s?
            } else {
                s.with_context(|| format!("blend entry {d} (weight {})", e.weight))?
            });
        }
        let mut offsets = vec![0u64];
        for s in &samplers {
            offsets.push(offsets.last().unwrap() + s.num_samples());
        }
        Ok(BlendedSampler {
            weights: spec.normalized_weights(),
            spec: spec.clone(),
            samplers,
            seq_len,
            seed,
            vocab_size,
            offsets,
            cursor: Mutex::new(Cursor {
                checkpoints: vec![0; spec.entries.len()],
                block: None,
                decoded: Vec::new(),
            }),
        })
    }

    /// Parse a `--data` value and open it ([`DataSpec::parse`] + [`new`](Self::new)).
    pub fn open(spec: &str, seq_len: usize, seed: u64, vocab_size: usize) -> Result<Self> {
        Self::new(&DataSpec::parse(spec)?, seq_len, seed, vocab_size)
    }

    /// Samples in one epoch of every entry together (the entries' `num_samples` summed).
    pub fn num_samples(&self) -> u64 {
        *self.offsets.last().unwrap()
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

    /// Tokens over all entries.
    pub fn num_tokens(&self) -> u64 {
        self.samplers.iter().map(|s| s.num_tokens()).sum()
    }

    pub fn spec(&self) -> &DataSpec {
        &self.spec
    }

    /// Normalised weights, one per entry.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The per-entry samplers, in spec order.
    pub fn samplers(&self) -> &[GptSampler] {
        &self.samplers
    }

    /// Where sample `i` of the blended stream comes from: (entry, sample number in that entry).
    pub fn source(&self, i: u64) -> (usize, u64) {
        let n = self.samplers.len();
        if n == 1 {
            return (0, i);
        }
        let mut c = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let block = i / BLOCK;
        if c.block != Some(block) {
            // Extend the checkpoints up to this block, then decode it.
            let mut have = (c.checkpoints.len() / n) as u64;
            let mut counts = c.checkpoints[c.checkpoints.len() - n..].to_vec();
            while have <= block {
                for j in (have - 1) * BLOCK..have * BLOCK {
                    let d = pick(&self.weights, &counts, j);
                    counts[d] += 1;
                }
                c.checkpoints.extend_from_slice(&counts);
                have += 1;
            }
            let start = block as usize * n;
            let mut counts = c.checkpoints[start..start + n].to_vec();
            let mut decoded = std::mem::take(&mut c.decoded);
            decoded.clear();
            for j in block * BLOCK..(block + 1) * BLOCK {
                let d = pick(&self.weights, &counts, j);
                decoded.push((d as u32, counts[d]));
                counts[d] += 1;
            }
            c.decoded = decoded;
            c.block = Some(block);
        }
        let (d, k) = c.decoded[(i % BLOCK) as usize];
        (d as usize, k)
    }

    /// Sample `i` of the endless blended stream; `out` holds `seq_len + 1` tokens.
    pub fn sample(&self, i: u64, out: &mut [u32]) -> Result<()> {
        let (d, k) = self.source(i);
        self.samplers[d].sample(k, out)
    }

    /// Sample `j` in data order, ignoring weights: every window of entry 0 in stream order, then
    /// entry 1's, ... (for evaluation, which reads the data whole). `j < num_samples()`.
    pub fn sequential(&self, j: u64, out: &mut [u32]) -> Result<()> {
        if j >= self.num_samples() {
            bail!(
                "sample {j} out of range: the data has {} samples of sequence length {}",
                self.num_samples(),
                self.seq_len
            );
        }
        let d = self.offsets.partition_point(|&o| o <= j) - 1;
        self.samplers[d].sequential(j - self.offsets[d], out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule run from 0 with no caching: the reference the cached cursor must equal.
    fn naive(weights: &[f64], n: u64) -> Vec<(usize, u64)> {
        let mut counts = vec![0u64; weights.len()];
        (0..n)
            .map(|i| {
                let d = pick(weights, &counts, i);
                counts[d] += 1;
                (d, counts[d] - 1)
            })
            .collect()
    }

    #[test]
    fn pick_follows_the_largest_deficit() {
        let w = [0.5, 0.3, 0.2];
        let s: Vec<usize> = naive(&w, 10).into_iter().map(|x| x.0).collect();
        assert_eq!(s, vec![0, 1, 2, 0, 0, 1, 0, 2, 1, 0]);
        // Equal weights: round robin, lowest index first.
        let s: Vec<usize> = naive(&[0.25; 4], 8).into_iter().map(|x| x.0).collect();
        assert_eq!(s, vec![0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn split_ranges_follow_megatron_core() {
        let s = Split::parse("969, 30, 1").unwrap();
        let r = |n| Part::ALL.map(|p| s.documents(n, p));
        assert_eq!(r(1000), [0..969, 969..999, 999..1000]);
        assert_eq!(r(10), [0..10, 10..10, 10..10]); // 9.69 -> 10: tiny shards train only
        assert_eq!(r(0), [0..0, 0..0, 0..0]);
        // Halves round to even, like Python's round(): 0.5 * 5 = 2.5 -> 2, 0.5 * 7 = 3.5 -> 4.
        let h = Split::parse("1/1").unwrap();
        assert_eq!(h.ratios, [0.5, 0.5, 0.0]);
        assert_eq!(h.documents(5, Part::Train), 0..2);
        assert_eq!(h.documents(7, Part::Train), 0..4);
        assert_eq!(h.documents(7, Part::Test), 7..7);
        assert_eq!(Split::parse("1").unwrap().documents(3, Part::Train), 0..3);
        for bad in ["", "1,2,3,4", "a", "-1,2", "0,0"] {
            assert!(Split::parse(bad).is_err(), "{bad:?}");
        }
        let e = format!("{:#}", Split::parse("98,x").unwrap_err());
        assert!(e.contains("\"x\" is not a non-negative number"), "{e}");
    }
}
