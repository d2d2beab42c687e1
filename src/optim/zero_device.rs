//! The data-parallel exchange in place in the device's gradient buffer (grad_layout.rs), for
//! backends whose gradients are views into one buffer (the CUDA backend) with a DP group that
//! reaches device memory (`--comm mpi|nccl`) or of one rank. Each bucket's exchange starts as
//! soon as the backward pass has completed its gradients (Megatron's overlap-grad-reduce, on the
//! backend's side stream: with NCCL it overlaps the rest of the backward pass; CUDA-aware MPI
//! runs it when called), the rest at the optimizer step, which waits for all of them: an all-reduce
//! (replicated optimizer) or a reduce-scatter into this rank's block, where the ZeRO-1
//! segments' gradients are views. Under ZeRO-1 the model's bf16 weight copies are views into a
//! second buffer of the same layout: after the update each segment's updated master is rounded into
//! its part of it and each bucket all-gathered in place in bf16 (Megatron's param buffer), on the
//! side stream, the next forward pass waiting for each bucket as it first reads it (Megatron's
//! overlap-param-gather). No host copy, no buffer beyond these two (CUDA-aware MPI stages one
//! block through the backend's scratch).

use super::grad_layout::GradLayout;
use super::segment::Segment;
use crate::backend::{Backend, SideLane};
use crate::parallel::Collectives;

/// The side stream every exchange here goes to.
const LANE: SideLane = SideLane::DataParallel;

/// Views of the gradient buffer (the whole, and each bucket in exchange order), and the state of
/// this step's exchange.
pub(super) struct DeviceGrads<B: Backend> {
    whole: B::Buf,
    buckets: Vec<B::Buf>,
    /// Under ZeRO-1: each bucket of the bf16 weight copies (the same layout in their own buffer).
    weight_buckets: Vec<B::Buf>,
    /// Per parameter: its bucket.
    bucket_of: Vec<usize>,
    /// Per bucket: its parameters (held here) whose gradients are not complete yet this step.
    pending: Vec<usize>,
    started: Vec<bool>,
    /// Buckets started before the optimizer step, in the last finished step.
    pub(super) started_early: usize,
    /// Per bucket: its weight copies' all-gather is in flight on the side stream (mark = bucket).
    gathering: Vec<bool>,
}

impl<B: Backend> DeviceGrads<B> {
    pub(super) fn new(whole: B::Buf, buckets: Vec<B::Buf>, weight_buckets: Vec<B::Buf>, layout: &GradLayout) -> Self {
        let bucket_of: Vec<usize> = (0..layout.lens.len()).map(|p| layout.bucket_of(p)).collect();
        let n = buckets.len();
        let mut dev = DeviceGrads { whole, weight_buckets, bucket_of, pending: Vec::new(), started: vec![false; n], buckets, started_early: 0, gathering: vec![false; n] };
        dev.reset(layout);
        dev
    }

    /// After a join: nothing in flight.
    fn reset(&mut self, layout: &GradLayout) {
        self.pending = layout.buckets.iter().map(|b| b.params.clone().filter(|&p| layout.lens[p] > 0).count()).collect();
        self.started.fill(false);
        self.gathering.fill(false);
    }

    /// Zeroes the whole buffer (padding included) in one launch.
    pub(super) fn zero(&mut self, be: &B) {
        be.fill_zero(&mut self.whole);
    }

    /// Starts bucket `b`'s exchange over `dp` on the backend's side stream: an all-reduce, or
    /// (`sharded`) a reduce-scatter of each rank's block into its own.
    fn start(&mut self, be: &B, b: usize, sharded: bool, dp: &dyn Collectives) {
        self.started[b] = true;
        if dp.size() == 1 {
            return;
        }
        let bucket = &mut self.buckets[b];
        be.side_work(LANE, &mut || {
            let done = if sharded { be.reduce_scatter_in_place_on_device(bucket, dp) } else { be.all_reduce_on_device(bucket, dp) };
            assert!(done, "the gradient exchange on the device needs the DP group's device communicator");
        });
    }

    /// The gradients of `params` are complete: starts every bucket this completes (DP ranks
    /// complete their buckets in the same order, which their collectives need).
    pub(super) fn complete(&mut self, be: &B, params: &[usize], layout: &GradLayout, sharded: bool, dp: &dyn Collectives) {
        for &p in params {
            if layout.lens[p] == 0 {
                continue;
            }
            let b = self.bucket_of[p];
            assert!(self.pending[b] > 0 && !self.started[b], "the gradient of {} was completed twice in one step", p);
            self.pending[b] -= 1;
            if self.pending[b] == 0 {
                self.start(be, b, sharded, dp);
            }
        }
    }

    /// Starts the buckets not started yet (in bucket order) and waits for the whole exchange.
    pub(super) fn finish(&mut self, be: &B, layout: &GradLayout, sharded: bool, dp: &dyn Collectives) {
        self.started_early = self.started.iter().filter(|&&s| s).count();
        for b in 0..self.buckets.len() {
            if !self.started[b] {
                self.start(be, b, sharded, dp);
            }
        }
        be.join_side_work(LANE);
        self.reset(layout);
    }

    /// A skipped step: waits for the buckets already started (every DP rank started the same
    /// ones) and starts no other.
    pub(super) fn abandon(&mut self, be: &B, layout: &GradLayout) {
        be.join_side_work(LANE);
        self.reset(layout);
    }

    /// Each segment's updated master into its part of the bf16 weight copies, then every bucket
    /// of them all-gathered in place (bf16: half the bytes of the fp32 masters) on the side
    /// stream, marked with the bucket's index for `weights_needed` (Megatron's
    /// overlap-param-gather: the next forward pass waits for each bucket when it first reads it).
    pub(super) fn all_gather(&mut self, be: &B, segments: &mut [Segment<B>], dp: &dyn Collectives) {
        for s in segments.iter_mut() {
            let copy = s.copy.as_mut().expect("ZeRO-1 on the device keeps its weight copies in the shared buffer");
            be.copy_range(copy, 0, &s.master, 0, s.len);
        }
        if dp.size() == 1 {
            return;
        }
        // In the forward pass's order: the buckets hold the table from its end.
        for b in (0..self.weight_buckets.len()).rev() {
            let bucket = &mut self.weight_buckets[b];
            be.side_work(LANE, &mut || {
                assert!(be.all_gather_in_place_on_device(bucket, dp), "the gradient exchange on the device needs the DP group's device communicator");
            });
            be.mark_side_work(LANE, b);
            self.gathering[b] = true;
        }
    }

    /// The forward pass is about to read the weight copies of `params`: waits for their buckets'
    /// all-gathers still in flight.
    pub(super) fn weights_needed(&mut self, be: &B, params: &[usize], layout: &GradLayout) {
        for &p in params {
            let b = self.bucket_of[p];
            if layout.lens[p] > 0 && self.gathering[b] {
                be.wait_side_mark(LANE, b);
                self.gathering[b] = false;
            }
        }
    }

    /// Waits for every all-gather in flight (the lane's only work between steps).
    pub(super) fn all_weights_needed(&mut self, be: &B) {
        if self.gathering.contains(&true) {
            be.join_side_work(LANE);
            self.gathering.fill(false);
        }
    }
}
