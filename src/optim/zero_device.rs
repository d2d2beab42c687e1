//! The data-parallel exchange in place in the device's gradient buffer (grad_layout.rs), for
//! backends whose gradients are views into one buffer (the CUDA backend) with a DP group that
//! reaches device memory (`--comm mpi|nccl`) or of one rank: per bucket, an all-reduce
//! (replicated optimizer) or a reduce-scatter into this rank's block, where the ZeRO-1
//! segments' gradients are views; after AdamW each segment's updated master is copied into its
//! place in the block, the bucket all-gathered in place and every parameter's part of it copied
//! into the weights (the model's bf16 copies). No host copy, and no buffer beyond the gradient
//! buffer (CUDA-aware MPI stages one block through the backend's scratch).

use super::grad_layout::GradLayout;
use super::zero::Segment;
use crate::backend::Backend;
use crate::dist::Collectives;

/// Views of the gradient buffer: the whole, and each bucket (in exchange order).
pub(super) struct DeviceGrads<B: Backend> {
    whole: B::Buf,
    buckets: Vec<B::Buf>,
}

impl<B: Backend> DeviceGrads<B> {
    pub(super) fn new(whole: B::Buf, buckets: Vec<B::Buf>) -> Self {
        DeviceGrads { whole, buckets }
    }

    /// Zeroes the whole buffer (padding included) in one launch.
    pub(super) fn zero(&mut self, be: &B) {
        be.fill_zero(&mut self.whole);
    }

    /// Sums every bucket over `dp`: all of it, or (`sharded`) each rank's block into its own.
    pub(super) fn reduce(&mut self, be: &B, sharded: bool, dp: &dyn Collectives) {
        if dp.size() == 1 {
            return;
        }
        for bucket in &mut self.buckets {
            let done = if sharded { be.reduce_scatter_in_place_on_device(bucket, dp) } else { be.all_reduce_on_device(bucket, dp) };
            assert!(done, "the gradient exchange on the device needs the DP group's device communicator");
        }
    }

    /// Each segment's updated master into its place in this rank's blocks, every bucket
    /// all-gathered in place, and each parameter's part copied into `weights`.
    pub(super) fn all_gather(&mut self, be: &B, segments: &mut [Segment<B>], weights: &mut [B::Buf], layout: &GradLayout, dp: &dyn Collectives) {
        for s in segments.iter_mut() {
            be.copy(&mut s.grad, &s.master);
        }
        for (bucket, bk) in self.buckets.iter_mut().zip(&layout.buckets) {
            if dp.size() > 1 {
                assert!(be.all_gather_in_place_on_device(bucket, dp), "the gradient exchange on the device needs the DP group's device communicator");
            }
            for p in bk.params.clone() {
                be.copy_range(&mut weights[p], 0, bucket, layout.places[p] - bk.start, layout.lens[p]);
            }
        }
    }
}
