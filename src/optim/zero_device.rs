//! ZeRO-1's exchange on device buffers, for groups with a device communicator (`--comm mpi|nccl`
//! on the CUDA backend): the same buckets, blocks and segments as zero.rs's host path, but the
//! gradients are copied from the parameters' buffers into a padded device bucket, reduce-scattered
//! into this rank's device block, taken by each segment for the norm, clipping and AdamW on the
//! device, and the updated block all-gathered back into the weights (master and bf16 copy) — no
//! host copy of gradients or weights.

use super::zero::{Bucket, Segment};
use crate::backend::{Backend, Role};
use crate::dist::Collectives;

/// The device staging of the exchange: this rank's block (every bucket's part, in order) and,
/// per distinct bucket length, a padded bucket with its block-sized part.
pub(super) struct DeviceBlock<B: Backend> {
    block: B::Buf,
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

impl<B: Backend> DeviceBlock<B> {
    pub(super) fn new(be: &B, buckets: &[Bucket], dp: usize) -> Self {
        let block = be.zeros_as(buckets.iter().map(|b| b.block_len).sum(), Role::Grad);
        let mut staging: Vec<(usize, B::Buf, B::Buf)> = Vec::new();
        for bk in buckets {
            if !staging.iter().any(|(len, _, _)| *len == bk.block_len) {
                staging.push((bk.block_len, be.zeros_as(bk.block_len * dp, Role::Grad), be.zeros_as(bk.block_len, Role::Grad)));
            }
        }
        DeviceBlock { block, staging }
    }

    fn staging(&mut self, block_len: usize) -> (&mut B::Buf, &mut B::Buf, &mut B::Buf) {
        let (_, padded, part) = self.staging.iter_mut().find(|(len, _, _)| *len == block_len).expect("staging for every bucket length");
        (padded, part, &mut self.block)
    }

    /// Reduce-scatters every bucket of `grads` into this rank's block.
    pub(super) fn reduce_scatter(&mut self, be: &B, grads: &[B::Buf], offsets: &[usize], buckets: &[Bucket], dp: &dyn Collectives) {
        for bk in buckets {
            let (padded, part, block) = self.staging(bk.block_len);
            be.fill_zero(padded);
            for (p, at, to, n) in overlaps(offsets, bk.range.clone()) {
                be.copy_range(padded, to, &grads[p], at, n);
            }
            assert!(be.reduce_scatter_on_device(padded, part, dp), "ZeRO-1 on the device needs the DP group's device communicator");
            be.copy_range(block, bk.block_offset, part, 0, bk.block_len);
        }
    }

    /// Each segment's gradient from the block.
    pub(super) fn load_grads(&self, be: &B, segments: &mut [Segment<B>]) {
        for s in segments {
            be.copy_range(&mut s.grad, 0, &self.block, s.block_offset, s.len);
        }
    }

    /// Each segment's updated master into the block, then every bucket all-gathered into `weights`.
    pub(super) fn all_gather(&mut self, be: &B, segments: &[Segment<B>], weights: &mut [B::Buf], offsets: &[usize], buckets: &[Bucket], dp: &dyn Collectives) {
        for s in segments {
            be.copy_range(&mut self.block, s.block_offset, &s.master, 0, s.len);
        }
        for bk in buckets {
            let (padded, part, block) = self.staging(bk.block_len);
            be.copy_range(part, 0, block, bk.block_offset, bk.block_len);
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
