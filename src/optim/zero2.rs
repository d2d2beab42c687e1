//! ZeRO-2 (`--zero 2`, DeepSpeed's stage 2) on the host path: the gradient is sharded like the
//! optimizer state. No rank keeps the whole gradient: each backward's contribution to a group of
//! parameters is added into its bucket's staging buffer (the bucket's DP blocks, grad_layout.rs)
//! and the model's buffer of it released (the backward allocates it again when it next writes
//! it: `Llama::backward_slot`); once every parameter of a bucket has contributed since the
//! bucket was last exchanged, the staging is reduce-scattered and this rank's block added into
//! its persistent gradient block (1/DP of the gradient), and the staging freed. So a bucket is
//! exchanged once per micro-batch (DP traffic grows with the micro-batch count), and what is in
//! flight is the open buckets' staging and the gradients of the layer being computed.
//! Parameters `Llama::reduce_replicated_grads` sums after the backward (norm weights under
//! sequence parallelism, replicated KV heads, a tied embedding split over the pipeline) keep
//! their gradient for the step and join their bucket at its end (`finish`), when every bucket
//! still open is exchanged. DP ranks run the same action lists, so they exchange the same
//! buckets in the same order.

use super::grad_layout::GradLayout;
use crate::backend::{Backend, Role};
use crate::parallel::Collectives;

pub(super) struct GradStream {
    /// Per bucket: its staging while open (a contribution since its last exchange), else empty.
    staging: Vec<Vec<f32>>,
    /// Per bucket: its streamed parameters that have not contributed since its last exchange.
    waiting: Vec<usize>,
    /// Per parameter: contributed since its bucket's last exchange.
    delivered: Vec<bool>,
    bucket_of: Vec<usize>,
    /// Per parameter: summed over other ranks after the backward, delivered by `finish`.
    late: Vec<bool>,
    /// This rank's block of one bucket's reduce-scatter.
    received: Vec<f32>,
    dp: usize,
}

impl GradStream {
    /// The stream over `layout` for a DP group of `dp`, with `late` the parameters summed after
    /// the backward.
    pub(super) fn new(layout: &GradLayout, dp: usize, late: &[usize]) -> Self {
        let mut is_late = vec![false; layout.lens.len()];
        late.iter().for_each(|&p| is_late[p] = true);
        let n = layout.buckets.len();
        let mut s = GradStream {
            staging: vec![Vec::new(); n],
            waiting: vec![0; n],
            delivered: vec![false; layout.lens.len()],
            bucket_of: (0..layout.lens.len()).map(|p| layout.bucket_of(p)).collect(),
            late: is_late,
            received: Vec::new(),
            dp,
        };
        (0..n).for_each(|b| s.reset(layout, b));
        s
    }

    /// Bucket `b` closed: nothing staged, every streamed parameter awaited.
    fn reset(&mut self, layout: &GradLayout, b: usize) {
        self.staging[b] = Vec::new();
        let params = layout.buckets[b].params.clone();
        params.clone().for_each(|p| self.delivered[p] = false);
        self.waiting[b] = params.filter(|&p| layout.lens[p] > 0 && !self.late[p]).count();
    }

    /// Adds the gradients of `params` (this backward's contributions, in the model's `grads`)
    /// to their buckets and releases them; exchanges every bucket this completes into `block`
    /// (this rank's blocks of all buckets).
    pub(super) fn deliver<B: Backend>(&mut self, be: &B, params: &[usize], grads: &mut [B::Buf], layout: &GradLayout, block: &mut [f32], dp: &dyn Collectives) {
        for &p in params {
            if layout.lens[p] == 0 {
                continue;
            }
            self.add(be, p, &mut grads[p], layout);
            let b = self.bucket_of[p];
            if !std::mem::replace(&mut self.delivered[p], true) {
                self.waiting[b] -= 1;
                if self.waiting[b] == 0 {
                    self.exchange(layout, b, block, dp);
                }
            }
        }
    }

    /// Parameter `p`'s gradient added into its bucket's staging (opened if closed), its buffer
    /// released.
    fn add<B: Backend>(&mut self, be: &B, p: usize, grad: &mut B::Buf, layout: &GradLayout) {
        let b = self.bucket_of[p];
        let bk = &layout.buckets[b];
        let staging = &mut self.staging[b];
        if staging.is_empty() {
            staging.resize(self.dp * bk.block_len, 0.0);
        }
        let at = layout.places[p] - bk.start;
        let dst = &mut staging[at..at + layout.lens[p]];
        if self.delivered[p] {
            // A second contribution before the exchange (interleaved chunks sharing a bucket).
            be.download(grad).iter().zip(dst.iter_mut()).for_each(|(g, d)| *d += g);
        } else {
            be.download_into(grad, dst);
        }
        *grad = be.zeros_as(0, Role::Grad);
    }

    /// Bucket `b`'s staging reduce-scattered over `dp`, this rank's block added into `block`.
    fn exchange(&mut self, layout: &GradLayout, b: usize, block: &mut [f32], dp: &dyn Collectives) {
        let bk = &layout.buckets[b];
        self.received.resize(bk.block_len, 0.0);
        dp.reduce_scatter_sum_f32(&self.staging[b], &mut self.received);
        let own = &mut block[bk.block_offset..bk.block_offset + bk.block_len];
        own.iter_mut().zip(&self.received).for_each(|(o, r)| *o += r);
        self.reset(layout, b);
    }

    /// The end of the step's backward: bucket by bucket (one staging at a time), the late
    /// parameters' gradients delivered and the bucket exchanged if open, leaving the step's summed
    /// gradient in `block`.
    pub(super) fn finish<B: Backend>(&mut self, be: &B, grads: &mut [B::Buf], layout: &GradLayout, block: &mut [f32], dp: &dyn Collectives) {
        for b in 0..layout.buckets.len() {
            for p in layout.buckets[b].params.clone() {
                if self.late[p] && layout.lens[p] > 0 {
                    self.add(be, p, &mut grads[p], layout);
                    self.delivered[p] = true;
                }
            }
            if !self.staging[b].is_empty() {
                self.exchange(layout, b, block, dp);
            }
        }
    }

    /// A step that will not update (every DP rank skips it): the open buckets dropped.
    pub(super) fn discard(&mut self, layout: &GradLayout) {
        (0..layout.buckets.len()).for_each(|b| self.reset(layout, b));
    }
}
