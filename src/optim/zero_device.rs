//! ZeRO-1's exchange on device buffers, for groups with a device communicator (`--comm mpi|nccl`
//! on the CUDA backend): the same buckets, blocks and segments as zero.rs's host path, but the
//! gradients are copied from the parameters' buffers into a padded device bucket, reduce-scattered
//! into this rank's part of it, taken by each segment for the norm, clipping and AdamW on the
//! device, and the updated masters all-gathered back into the weights (the model's bf16 copies)
//! — no host copy of gradients or weights, and no block-sized buffer beyond the segments.

use super::zero::{Bucket, Segment};
use crate::backend::{Backend, Role};
use crate::dist::Collectives;

/// The device staging of the exchange: per distinct bucket length, a padded bucket and this
/// rank's block-sized part of it.
pub(super) struct DeviceBuckets<B: Backend> {
    staging: Vec<(usize, B::Buf, B::Buf)>,
}

/// The parameters overlapping `range` of the flat vector: (parameter, offset in it, offset in
/// the range, elements).
fn overlaps(offsets: &[usize], range: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
    let start = range.start;
    (0..offsets.len() - 1).filter_map(move |p| {
        let (a, b) = (offsets[p].max(range.start), offsets[p + 1].min(range.end));
        (a < b).then(|| (p, a - offsets[p], a - start, b - a))
    })
}

/// The segments inside bucket `bk`'s part of this rank's block (a segment never spans buckets),
/// with their offsets in that part.
fn in_bucket<'s, B: Backend>(segments: &'s mut [Segment<B>], bk: &Bucket) -> impl Iterator<Item = (usize, &'s mut Segment<B>)> + 's {
    let (lo, hi) = (bk.block_offset, bk.block_offset + bk.block_len);
    segments.iter_mut().filter(move |s| s.block_offset >= lo && s.block_offset < hi).map(move |s| (s.block_offset - lo, s))
}

impl<B: Backend> DeviceBuckets<B> {
    pub(super) fn new(be: &B, buckets: &[Bucket], dp: usize) -> Self {
        let mut staging: Vec<(usize, B::Buf, B::Buf)> = Vec::new();
        for bk in buckets {
            if !staging.iter().any(|(len, _, _)| *len == bk.block_len) {
                staging.push((bk.block_len, be.zeros_as(bk.block_len * dp, Role::Grad), be.zeros_as(bk.block_len, Role::Grad)));
            }
        }
        DeviceBuckets { staging }
    }

    fn staging(&mut self, block_len: usize) -> (&mut B::Buf, &mut B::Buf) {
        let (_, padded, part) = self.staging.iter_mut().find(|(len, _, _)| *len == block_len).expect("staging for every bucket length");
        (padded, part)
    }

    /// Reduce-scatters every bucket of `grads`; each segment takes its summed gradient.
    pub(super) fn reduce_scatter(&mut self, be: &B, grads: &[B::Buf], segments: &mut [Segment<B>], offsets: &[usize], buckets: &[Bucket], dp: &dyn Collectives) {
        for bk in buckets {
            let (padded, part) = self.staging(bk.block_len);
            be.fill_zero(padded);
            for (p, at, to, n) in overlaps(offsets, bk.range.clone()) {
                be.copy_range(padded, to, &grads[p], at, n);
            }
            assert!(be.reduce_scatter_on_device(padded, part, dp), "ZeRO-1 on the device needs the DP group's device communicator");
            for (at, s) in in_bucket(segments, bk) {
                be.copy_range(&mut s.grad, 0, part, at, s.len);
            }
        }
    }

    /// Each segment's updated master into its bucket's part, every bucket all-gathered into `weights`.
    pub(super) fn all_gather(&mut self, be: &B, segments: &mut [Segment<B>], weights: &mut [B::Buf], offsets: &[usize], buckets: &[Bucket], dp: &dyn Collectives) {
        for bk in buckets {
            let (padded, part) = self.staging(bk.block_len);
            for (at, s) in in_bucket(segments, bk) {
                be.copy_range(part, at, &s.master, 0, s.len);
            }
            assert!(be.all_gather_on_device(part, padded, dp), "ZeRO-1 on the device needs the DP group's device communicator");
            for (p, at, from, n) in overlaps(offsets, bk.range.clone()) {
                be.copy_range(&mut weights[p], at, padded, from, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_cut_a_range_at_parameter_boundaries() {
        // Parameters of 3, 5 and 4 elements: [0,3) [3,8) [8,12).
        let offsets = [0, 3, 8, 12];
        assert_eq!(overlaps(&offsets, 2..9).collect::<Vec<_>>(), [(0, 2, 0, 1), (1, 0, 1, 5), (2, 0, 6, 1)]);
        assert_eq!(overlaps(&offsets, 3..8).collect::<Vec<_>>(), [(1, 0, 0, 5)]);
    }
}
