//! Where each gradient lies in the one gradient buffer of a rank, and the buckets the
//! data-parallel exchange cuts it into (Megatron's grad buffer): buckets hold whole parameters,
//! gathered from the end of the parameter table (the backward pass finishes the last ones
//! first, so that is the order buckets become ready and are exchanged), each closed once it
//! holds `bucket_size` elements. Inside a bucket the parameters keep table order, each starting
//! on a `GRAD_ALIGN` boundary (at least 256 bytes, what cuBLASLt assumes of its operands, in the
//! fp32 gradients and in the bf16 weight copies ZeRO-1 lays out the same way); a bucket is padded
//! to DP blocks of a multiple of `GRAD_ALIGN` elements, so under ZeRO-1 rank r owns block r of
//! every bucket. The host path (zero.rs) uses the same layout in a host vector, and
//! parallel/traffic.rs and the CPU planner count from it.

use std::ops::Range;

/// Alignment of every parameter's and every DP block's start, in elements: 256 bytes of bf16
/// (the weight copies under ZeRO-1), 512 of fp32 (the gradients).
pub const GRAD_ALIGN: usize = 128;

/// One bucket: whole parameters exchanged by one collective.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    /// The parameters it holds (table indices).
    pub params: Range<usize>,
    /// Its first element in the buffer; it spans `dp * block_len` elements.
    pub start: usize,
    /// Elements of each rank's block.
    pub block_len: usize,
    /// Where this bucket's block starts among a rank's blocks of all buckets (in bucket order).
    pub block_offset: usize,
}

impl Bucket {
    /// The whole bucket in buffer coordinates.
    pub fn range(&self, dp: usize) -> Range<usize> {
        self.start..self.start + dp * self.block_len
    }
}

/// The gradient buffer of one rank.
#[derive(Clone, Debug)]
pub struct GradLayout {
    /// Start of each parameter's gradient in the buffer.
    pub places: Vec<usize>,
    /// Elements of each parameter on this rank (0 for parameters it does not hold).
    pub lens: Vec<usize>,
    /// In exchange order: the one holding the last parameters first.
    pub buckets: Vec<Bucket>,
    /// Elements of the whole buffer (every bucket with its padding).
    pub total: usize,
}

impl GradLayout {
    /// The layout of parameters of `lens` elements in buckets of about `bucket_size` elements,
    /// padded for a DP group of `dp`.
    pub fn new(lens: &[usize], bucket_size: usize, dp: usize) -> Self {
        let (bucket_size, dp) = (bucket_size.max(1), dp.max(1));
        let mut groups: Vec<Range<usize>> = Vec::new();
        let (mut end, mut held) = (lens.len(), 0);
        for p in (0..lens.len()).rev() {
            held += lens[p];
            if held >= bucket_size || p == 0 {
                groups.push(p..end);
                (end, held) = (p, 0);
            }
        }
        let mut places = vec![0; lens.len()];
        let (mut buckets, mut start, mut block_offset) = (Vec::new(), 0, 0);
        for params in groups {
            let mut at: usize = 0;
            for p in params.clone() {
                if lens[p] > 0 {
                    at = at.next_multiple_of(GRAD_ALIGN);
                }
                places[p] = start + at;
                at += lens[p];
            }
            let block_len = at.div_ceil(dp).next_multiple_of(GRAD_ALIGN);
            buckets.push(Bucket { params, start, block_len, block_offset });
            start += dp * block_len;
            block_offset += block_len;
        }
        GradLayout { places, lens: lens.to_vec(), buckets, total: start }
    }

    /// Parameter `p`'s gradient in buffer coordinates.
    pub fn param_range(&self, p: usize) -> Range<usize> {
        self.places[p]..self.places[p] + self.lens[p]
    }

    /// Elements of one rank's blocks of all buckets.
    pub fn block_total(&self) -> usize {
        self.buckets.iter().map(|b| b.block_len).sum()
    }

    /// Rank `rank`'s part of each bucket (its ZeRO-1 block) cut at parameter boundaries, as
    /// (bucket, parameter, first element in the buffer, elements).
    pub fn block_parts(&self, rank: usize) -> Vec<(usize, usize, usize, usize)> {
        let mut parts = Vec::new();
        for (i, bk) in self.buckets.iter().enumerate() {
            let lo = bk.start + rank * bk.block_len;
            let hi = lo + bk.block_len;
            for p in bk.params.clone() {
                let r = self.param_range(p);
                let (a, b) = (r.start.max(lo), r.end.min(hi));
                if a < b {
                    parts.push((i, p, a, b - a));
                }
            }
        }
        parts
    }

    /// The bucket holding parameter `p`.
    pub fn bucket_of(&self, p: usize) -> usize {
        self.buckets.iter().position(|b| b.params.contains(&p)).expect("every parameter is in a bucket")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_whole_parameters_from_the_end_aligned_and_padded() {
        // Five parameters, buckets of 100 elements, DP 2.
        let lens = [30, 0, 70, 50, 100];
        let l = GradLayout::new(&lens, 100, 2);
        let params: Vec<_> = l.buckets.iter().map(|b| b.params.clone()).collect();
        assert_eq!(params, [4..5, 2..4, 0..2], "from the end; closed at 100 elements");
        // Bucket 0: [100] -> 100 elements, blocks of 128 (50 rounded up).
        assert_eq!((l.buckets[0].start, l.buckets[0].block_len, l.places[4]), (0, 128, 0));
        // Bucket 1 at 256: param 2 there, param 3 at 256 + 128 (70 rounded up); 178 -> blocks of 128.
        assert_eq!((l.buckets[1].start, l.places[2], l.places[3], l.buckets[1].block_len), (256, 256, 384, 128));
        // Bucket 2 at 512: param 0 there, the empty param 1 right after it; 30 -> blocks of 128.
        assert_eq!((l.buckets[2].start, l.places[0], l.places[1], l.buckets[2].block_len), (512, 512, 542, 128));
        assert_eq!(l.total, 512 + 256);
        assert_eq!(l.buckets.iter().map(|b| b.block_offset).collect::<Vec<_>>(), [0, 128, 256]);
        assert_eq!(l.block_total(), 384);
        // Every parameter inside its bucket, none overlapping, every start aligned.
        for (i, b) in l.buckets.iter().enumerate() {
            for p in b.params.clone() {
                let r = l.param_range(p);
                assert!(r.start >= b.range(2).start && r.end <= b.range(2).end, "param {p} in bucket {i}");
                assert_eq!(l.bucket_of(p), i);
                if lens[p] > 0 {
                    assert_eq!(r.start % GRAD_ALIGN, 0);
                }
            }
        }
    }

    #[test]
    fn every_element_of_every_parameter_is_in_exactly_one_ranks_block() {
        let lens = [300, 0, 70, 5, 1000, 64];
        for (size, dp) in [(100, 2), (100, 3), (10_000, 4), (1, 8)] {
            let l = GradLayout::new(&lens, size, dp);
            let mut seen: Vec<Vec<bool>> = lens.iter().map(|&n| vec![false; n]).collect();
            for rank in 0..dp {
                for (b, p, at, n) in l.block_parts(rank) {
                    let bk = &l.buckets[b];
                    assert!(at >= bk.start + rank * bk.block_len && at + n <= bk.start + (rank + 1) * bk.block_len);
                    for e in at - l.places[p]..at - l.places[p] + n {
                        assert!(!seen[p][e], "param {p} element {e} twice");
                        seen[p][e] = true;
                    }
                }
            }
            assert!(seen.iter().all(|s| s.iter().all(|&x| x)), "size {size} dp {dp}: an element in no block");
        }
    }

    #[test]
    fn one_bucket_when_the_size_exceeds_the_model() {
        let l = GradLayout::new(&[10, 20, 30], 1_000_000, 4);
        assert_eq!(l.buckets.len(), 1);
        assert_eq!(l.buckets[0].params, 0..3);
        // 10 at 0, 20 at 128, 30 at 256: 286 elements in 4 blocks of 128.
        assert_eq!((l.places.clone(), l.buckets[0].block_len, l.total), (vec![0, 128, 256], 128, 512));
    }
}
