//! The document order of one epoch, as Megatron's GPTDataset builds it: the sequences ("documents"
//! of the sampler) of an epoch in a seeded shuffled order, with the token offset where each one
//! starts in that order's concatenation. A sample is then a binary search in `starts` plus reads.
//!
//! Built from (key, lengths) alone — no files, no communication — so every rank computes the same
//! index; 12 bytes per document (a u32 position and a u64 prefix sum) and O(documents) time: a
//! Fisher-Yates shuffle driven by splitmix64 and one pass of prefix sums (1e7 documents in about
//! a second, see `swallow bench data`).

use crate::mix::mix64;

/// One epoch's document order and the token offset where each of its documents starts.
pub struct EpochIndex {
    /// Document ids in reading order; `None` is the stored order (0, 1, 2, ...).
    order: Option<Vec<u32>>,
    /// `starts[k]`: tokens before the `k`-th document of the order; one more entry, the total.
    starts: Vec<u64>,
}

impl EpochIndex {
    /// The stored order of `n` documents whose lengths `len(d)` gives.
    pub fn stored(n: usize, len: impl Fn(usize) -> usize) -> Self {
        EpochIndex { order: None, starts: prefix_sums((0..n).map(len)) }
    }

    /// A shuffled order of `n` documents keyed by `key` (a pure function of it).
    pub fn shuffled(key: u64, n: usize, len: impl Fn(usize) -> usize) -> Self {
        assert!(n <= u32::MAX as usize, "{n} documents: more than 2^32 - 1 per sampler");
        let order = shuffled_order(key, n);
        let starts = prefix_sums(order.iter().map(|&d| len(d as usize)));
        EpochIndex { order: Some(order), starts }
    }

    /// Tokens in the epoch.
    pub fn num_tokens(&self) -> u64 {
        *self.starts.last().unwrap()
    }

    /// The document at position `k` of the order.
    pub fn document(&self, k: usize) -> usize {
        self.order.as_ref().map_or(k, |o| o[k] as usize)
    }

    /// (position in the order, token offset inside that document) of token `pos` of the epoch
    /// (`pos < num_tokens()`); empty documents are never returned.
    pub fn locate(&self, pos: u64) -> (usize, usize) {
        let k = self.starts.partition_point(|&s| s <= pos) - 1;
        (k, (pos - self.starts[k]) as usize)
    }

    /// Number of documents in the order.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn prefix_sums(lens: impl Iterator<Item = usize>) -> Vec<u64> {
    let mut starts = Vec::with_capacity(lens.size_hint().0 + 1);
    let mut t = 0u64;
    starts.push(0);
    for l in lens {
        t += l as u64;
        starts.push(t);
    }
    starts
}

/// A uniformly shuffled `0..n` (Fisher-Yates) from the splitmix64 stream of `key`. Bounded draws use
/// Lemire's multiply-shift: for n < 2^32 the bias is below 2^-32 per draw.
pub fn shuffled_order(key: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut state = mix64(key);
    for i in (1..n).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let r = mix64(state);
        let j = ((r as u128 * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffled_orders_are_permutations_that_depend_on_the_key() {
        for n in [0usize, 1, 2, 7, 1000] {
            let mut o = shuffled_order(5, n);
            o.sort();
            assert_eq!(o, (0..n as u32).collect::<Vec<_>>());
        }
        let a = shuffled_order(1, 1000);
        assert_ne!(a, shuffled_order(2, 1000));
        assert_eq!(a, shuffled_order(1, 1000));
        let fixed = a.iter().enumerate().filter(|(i, &d)| *i as u32 == d).count();
        assert!(fixed < 10, "{fixed} fixed points: barely shuffled");
        // Every document lands in every position about equally often (chi-square over 10 slots).
        let n = 10;
        let trials = 20_000;
        let mut hits = vec![0f64; n];
        for k in 0..trials {
            hits[shuffled_order(k, n).iter().position(|&d| d == 0).unwrap()] += 1.0;
        }
        let e = trials as f64 / n as f64;
        let chi2: f64 = hits.iter().map(|h| (h - e) * (h - e) / e).sum();
        assert!(chi2 < 30.0, "document 0's position is not uniform: chi2 {chi2}, {hits:?}");
    }

    #[test]
    fn locate_skips_empty_documents() {
        let lens = [3usize, 0, 0, 2, 0, 4];
        let ix = EpochIndex::stored(lens.len(), |d| lens[d]);
        assert_eq!(ix.num_tokens(), 9);
        let want = [(0, 0), (0, 1), (0, 2), (3, 0), (3, 1), (5, 0), (5, 1), (5, 2), (5, 3)];
        for (pos, w) in want.iter().enumerate() {
            assert_eq!(ix.locate(pos as u64), *w, "token {pos}");
        }
        let sh = EpochIndex::shuffled(9, lens.len(), |d| lens[d]);
        assert_eq!(sh.num_tokens(), 9);
        for pos in 0..9 {
            let (k, off) = sh.locate(pos);
            assert!(off < lens[sh.document(k)]);
        }
    }
}
