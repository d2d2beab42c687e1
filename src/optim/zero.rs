//! Data parallelism in the optimizer. Every DP rank computes gradients on its slice of the global
//! batch; then either
//! - `--zero 0`: the gradients are all-reduced (summed: each rank's loss is already scaled by
//!   1 / global tokens) and every rank runs the same AdamW on the whole model, or
//! - `--zero 1` (ZeRO-1, Megatron's distributed optimizer): the gradients, laid out as one flat
//!   vector in parameter-table order, are reduce-scattered so rank r holds the summed gradient of
//!   its block; the global norm is the DP sum of the blocks' squares
//!   (each element counted once); AdamW runs only on block r, whose master weights and moments are
//!   the only optimizer state this rank keeps (1/DP of the whole); the updated block is
//!   all-gathered back into every rank's weights (the model's weights are then copies: bf16 on
//!   the GPU, `Role::WeightCopy`).
//!
//! The flat vector is exchanged in gradient buckets (`parallel.bucket_size` elements, Megatron's
//! 40M by default), one collective each; under ZeRO-1 each bucket is padded to a multiple of DP
//! and every rank owns 1/DP of every bucket (Megatron's distributed-optimizer layout), so the
//! buckets can later be reduced while the backward pass still runs. Host staging buffers are
//! allocated once; a rank's block is cut at parameter boundaries into segments so each keeps its
//! parameter's weight-decay setting.
//!
//! Under tensor and pipeline parallelism every rank runs this on the parameters it holds (its DP
//! group holds the same ones); the global gradient norm then also sums over the model-parallel
//! group (TP x PP), counting one copy of every shard replicated across TP ranks (norm weights,
//! replicated KV heads).

use super::adamw::{AdamW, StepOutcome};
use super::zero_device::DeviceBuckets;
use crate::backend::{AdamTensor, AdamWStep, Backend, Role};
use crate::config::TrainConfig;
use crate::dist::Collectives;
use crate::model::params::ParamTable;

/// One gradient bucket: a range of the flat (unpadded) parameter vector reduced by one collective;
/// under ZeRO-1 it is padded to a multiple of DP and every rank owns `block_len` of it.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    pub(super) range: std::ops::Range<usize>,
    pub(super) block_len: usize,
    /// Where this rank's part of the bucket starts in its block.
    pub(super) block_offset: usize,
}

/// Splits `total` elements into buckets of at most `size` elements.
fn buckets(total: usize, size: usize, dp: usize) -> Vec<Bucket> {
    let size = size.max(1);
    let mut out = Vec::new();
    let mut start = 0;
    let mut block_offset = 0;
    while start < total || out.is_empty() {
        let end = (start + size).min(total);
        let block_len = (end - start).div_ceil(dp);
        out.push(Bucket { range: start..end, block_len, block_offset });
        block_offset += block_len;
        start = end;
    }
    out
}

/// The part of one parameter that falls into this rank's ZeRO block.
pub(super) struct Segment<B: Backend> {
    /// Element offset inside this rank's block.
    pub(super) block_offset: usize,
    /// The parameter, and the segment's first element in this rank's shard of it.
    param: usize,
    local_start: usize,
    pub(super) len: usize,
    decay: bool,
    /// Counted in the gradient norm (one copy of a shard held by several ranks is).
    counted: bool,
    pub(super) master: B::Buf,
    pub(super) grad: B::Buf,
    m: B::Buf,
    v: B::Buf,
}

struct Sharded<B: Backend> {
    segments: Vec<Segment<B>>,
    /// This rank's block on the host, or (`device`) on the device.
    block: Vec<f32>,
    device: Option<DeviceBuckets<B>>,
    updates: u64,
}

enum Mode<B: Backend> {
    Replicated(AdamW<B>),
    Sharded(Sharded<B>),
}

pub struct DataParallelOptimizer<B: Backend> {
    mode: Mode<B>,
    /// Per parameter: counted in the gradient norm on this rank.
    counted: Vec<bool>,
    /// Start of each parameter in the flat vector, and the total at the end.
    offsets: Vec<usize>,
    buckets: Vec<Bucket>,
    /// Flat staging vector of all parameters, in table order.
    flat: Vec<f32>,
    /// One bucket padded to a multiple of DP (the ZeRO-1 collectives' whole buffer).
    bucket_buf: Vec<f32>,
    t: TrainConfig,
}

impl<B: Backend> DataParallelOptimizer<B> {
    /// `weights` are this rank's (TP-sharded) weights and `initial(p)` the fp32 initial values of
    /// its shard of parameter p, copied into the master segments under ZeRO-1 (the weights may be
    /// bf16 copies); `counted[p]` says whether this rank's copy of parameter p counts in the
    /// gradient norm (one copy of every shard held by several ranks does); gradients are
    /// exchanged in buckets of at most `bucket_size` elements.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &B,
        table: &ParamTable,
        weights: &[B::Buf],
        initial: &dyn Fn(usize) -> Vec<f32>,
        counted: Vec<bool>,
        t: &TrainConfig,
        zero: bool,
        dp: &dyn Collectives,
        bucket_size: usize,
    ) -> Self {
        let mut offsets = vec![0];
        for w in weights {
            offsets.push(offsets.last().unwrap() + backend.len(w));
        }
        let total = *offsets.last().unwrap();
        let dps = dp.size();
        let buckets = buckets(total, bucket_size, dps);
        let mode = if zero {
            let mut segments = Vec::new();
            let mut initial_cache: Option<(usize, Vec<f32>)> = None;
            for bk in &buckets {
                // This rank's part of the bucket, in flat (unpadded) coordinates.
                let lo = bk.range.start + dp.rank() * bk.block_len;
                let hi = (lo + bk.block_len).min(bk.range.end);
                for (p, spec) in table.specs.iter().enumerate() {
                    let (a, b) = (offsets[p].max(lo), offsets[p + 1].min(hi));
                    if a >= b {
                        continue;
                    }
                    let len = b - a;
                    // The fp32 initial values (the weights may be bf16 copies), once per parameter.
                    if initial_cache.as_ref().is_none_or(|(q, _)| *q != p) {
                        initial_cache = Some((p, initial(p)));
                    }
                    let all = &initial_cache.as_ref().unwrap().1;
                    let mut master = backend.zeros_as(len, Role::OptimState);
                    backend.upload(&all[a - offsets[p]..b - offsets[p]], &mut master);
                    segments.push(Segment {
                        block_offset: bk.block_offset + a - lo,
                        param: p,
                        local_start: a - offsets[p],
                        len,
                        decay: spec.weight_decay,
                        counted: counted[p],
                        master,
                        grad: backend.zeros_as(len, Role::Grad),
                        m: backend.zeros_as(len, Role::OptimState),
                        v: backend.zeros_as(len, Role::OptimState),
                    });
                }
            }
            let block: usize = buckets.iter().map(|b| b.block_len).sum();
            // With a device communicator the exchange stays on the device (zero_device.rs).
            match dp.device() {
                Some(_) if dps > 1 => Mode::Sharded(Sharded { segments, block: Vec::new(), device: Some(DeviceBuckets::new(backend, &buckets, dps)), updates: 0 }),
                _ => Mode::Sharded(Sharded { segments, block: vec![0.0; block], device: None, updates: 0 }),
            }
        } else {
            Mode::Replicated(AdamW::new(backend, table, weights, t))
        };
        let largest = buckets.iter().map(|b| b.block_len * dps).max().unwrap_or(0);
        DataParallelOptimizer { mode, counted, offsets, buckets, flat: vec![0.0; total], bucket_buf: vec![0.0; largest], t: t.clone() }
    }

    /// Bytes of optimizer state (master weights beyond the model's own, and the two moments) on this rank.
    pub fn state_bytes(&self) -> usize {
        match &self.mode {
            Mode::Replicated(_) => 2 * 4 * self.offsets.last().unwrap(),
            Mode::Sharded(s) => 3 * 4 * s.segments.iter().map(|g| g.len).sum::<usize>(),
        }
    }

    pub fn is_sharded(&self) -> bool {
        matches!(self.mode, Mode::Sharded(_))
    }

    /// Updates applied so far (AdamW's step count; skipped steps do not count).
    pub fn updates(&self) -> u64 {
        match &self.mode {
            Mode::Replicated(a) => a.updates,
            Mode::Sharded(s) => s.updates,
        }
    }

    /// The optimizer state this rank holds, as (parameter, element range of this rank's shard of
    /// it): every whole shard when replicated, this rank's ZeRO segments when sharded. This is the
    /// order of `download_moment_into` and `restore`.
    pub fn state_ranges(&self) -> Vec<(usize, std::ops::Range<usize>)> {
        match &self.mode {
            Mode::Replicated(_) => (0..self.counted.len()).map(|p| (p, 0..self.offsets[p + 1] - self.offsets[p])).collect(),
            Mode::Sharded(s) => s.segments.iter().map(|g| (g.param, g.local_start..g.local_start + g.len)).collect(),
        }
    }

    /// AdamW's first (`second == false`) or second moment of `state_ranges()[i]`, copied into
    /// `dst` (its length): the checkpoint writer streams the state through one host buffer.
    pub fn download_moment_into(&self, backend: &B, i: usize, second: bool, dst: &mut [f32]) {
        let (m, v) = match &self.mode {
            Mode::Replicated(a) => (&a.m[i], &a.v[i]),
            Mode::Sharded(s) => (&s.segments[i].m, &s.segments[i].v),
        };
        backend.download_into(if second { v } else { m }, dst);
    }

    /// The fp32 master weights of ZeRO-1 segment `i` (in `state_ranges` order) into `dst`.
    pub fn download_master_into(&self, backend: &B, i: usize, dst: &mut [f32]) {
        let Mode::Sharded(s) = &self.mode else { panic!("download_master_into: the replicated optimizer keeps no masters") };
        backend.download_into(&s.segments[i].master, dst);
    }

    /// Restores a saved state: the moments (in `state_ranges` order), the update count and, under
    /// ZeRO, the master weights from `weights` (this rank's restored shards).
    pub fn restore(&mut self, backend: &B, moments: &[(Vec<f32>, Vec<f32>)], updates: u64, weights: &[Vec<f32>]) {
        match &mut self.mode {
            Mode::Replicated(a) => {
                for (i, (m, v)) in moments.iter().enumerate() {
                    backend.upload(m, &mut a.m[i]);
                    backend.upload(v, &mut a.v[i]);
                }
                a.updates = updates;
            }
            Mode::Sharded(s) => {
                for (g, (m, v)) in s.segments.iter_mut().zip(moments) {
                    backend.upload(m, &mut g.m);
                    backend.upload(v, &mut g.v);
                    backend.upload(&weights[g.param][g.local_start..g.local_start + g.len], &mut g.master);
                }
                s.updates = updates;
            }
        }
    }

    fn pack(&mut self, backend: &B, bufs: &[B::Buf]) {
        for (p, b) in bufs.iter().enumerate() {
            backend.download_into(b, &mut self.flat[self.offsets[p]..self.offsets[p + 1]]);
        }
    }

    fn unpack(&self, backend: &B, bufs: &mut [B::Buf]) {
        for (p, b) in bufs.iter_mut().enumerate() {
            backend.upload(&self.flat[self.offsets[p]..self.offsets[p + 1]], b);
        }
    }

    /// Global norm of gradients that are already reduced over DP: each rank's counted squares,
    /// summed over the model-parallel group.
    fn replicated_norm(&self, backend: &B, grads: &[B::Buf], mp: &dyn Collectives) -> f64 {
        let counted: Vec<&B::Buf> = grads.iter().zip(&self.counted).filter(|(_, &c)| c).map(|(g, _)| g).collect();
        let mut sq = [backend.sum_squares_all(&counted)];
        mp.all_reduce_sum_f64(&mut sq);
        sq[0].sqrt()
    }

    /// Reduces the gradients over the DP group and applies one update with learning rate `lr`;
    /// `mp` is this rank's model-parallel group (TP x PP), over which the global norm is summed.
    pub fn step(&mut self, backend: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f64, dp: &dyn Collectives, mp: &dyn Collectives) -> StepOutcome {
        if let Mode::Replicated(_) = self.mode {
            // With a device communicator every gradient is all-reduced where it lies (the first
            // call tells: without one, none is, and the buckets go through host memory).
            if dp.size() > 1 && !grads.iter_mut().all(|g| backend.all_reduce_on_device(g, dp)) {
                self.pack(backend, grads);
                for bk in &self.buckets {
                    dp.all_reduce_sum_f32(&mut self.flat[bk.range.clone()]);
                }
                self.unpack(backend, grads);
            }
            let norm = self.replicated_norm(backend, grads, mp);
            let Mode::Replicated(adamw) = &mut self.mode else { unreachable!() };
            return adamw.step(backend, weights, grads, lr, norm);
        }
        if let Mode::Sharded(Sharded { device: Some(dev), segments, .. }) = &mut self.mode {
            dev.reduce_scatter(backend, grads, segments, &self.offsets, &self.buckets, dp);
            let Mode::Sharded(sh) = &mut self.mode else { unreachable!() };
            let outcome = sh.update_on_device(backend, &self.t, lr, dp, mp);
            if let (false, Sharded { device: Some(dev), segments, .. }) = (outcome.skipped, sh) {
                dev.all_gather(backend, segments, weights, &self.offsets, &self.buckets, dp);
            }
            return outcome;
        }
        self.pack(backend, grads);
        let Mode::Sharded(sh) = &mut self.mode else { unreachable!() };
        let dps = dp.size();
        for bk in &self.buckets {
            let padded = &mut self.bucket_buf[..bk.block_len * dps];
            let n = bk.range.len();
            padded[..n].copy_from_slice(&self.flat[bk.range.clone()]);
            padded[n..].fill(0.0);
            dp.reduce_scatter_sum_f32(padded, &mut sh.block[bk.block_offset..bk.block_offset + bk.block_len]);
        }
        let outcome = sh.update(backend, &self.t, lr, dp, mp);
        if !outcome.skipped {
            for bk in &self.buckets {
                let padded = &mut self.bucket_buf[..bk.block_len * dps];
                dp.all_gather_f32(&sh.block[bk.block_offset..bk.block_offset + bk.block_len], padded);
                let n = bk.range.len();
                self.flat[bk.range.clone()].copy_from_slice(&padded[..n]);
            }
            self.unpack(backend, weights);
        }
        outcome
    }
}

/// The global gradient norm from this rank's sum of squares (summed over DP and the model-parallel
/// group), and the clipping coefficient; `None` for the coefficient when the norm is not finite.
fn norm_and_clip(local_squares: f64, t: &TrainConfig, dp: &dyn Collectives, mp: &dyn Collectives) -> (f64, Option<f64>) {
    let mut sq = [local_squares];
    dp.all_reduce_sum_f64(&mut sq);
    mp.all_reduce_sum_f64(&mut sq);
    let grad_norm = sq[0].sqrt();
    let coeff = if t.grad_clip > 0.0 { (t.grad_clip / (grad_norm + 1e-6)).min(1.0) } else { 1.0 };
    (grad_norm, grad_norm.is_finite().then_some(coeff))
}

impl<B: Backend> Sharded<B> {
    fn adam_step(&self, t: &TrainConfig, lr: f64, seg: &Segment<B>) -> AdamWStep {
        AdamWStep {
            lr: lr as f32,
            beta1: t.beta1 as f32,
            beta2: t.beta2 as f32,
            eps: t.adam_eps as f32,
            weight_decay: if seg.decay { t.weight_decay as f32 } else { 0.0 },
            step: self.updates,
        }
    }

    /// AdamW on this rank's block, which holds the reduced gradients on entry and the updated
    /// master weights on return.
    fn update(&mut self, backend: &B, t: &TrainConfig, lr: f64, dp: &dyn Collectives, mp: &dyn Collectives) -> StepOutcome {
        let squares = |g: &[f32]| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        let local = self.segments.iter().filter(|s| s.counted).map(|s| squares(&self.block[s.block_offset..s.block_offset + s.len])).sum::<f64>();
        let (grad_norm, coeff) = norm_and_clip(local, t, dp, mp);
        let Some(coeff) = coeff else { return StepOutcome { grad_norm, skipped: true } };
        self.updates += 1;
        for i in 0..self.segments.len() {
            let h = self.adam_step(t, lr, &self.segments[i]);
            let seg = &mut self.segments[i];
            let part = &mut self.block[seg.block_offset..seg.block_offset + seg.len];
            if coeff < 1.0 {
                part.iter_mut().for_each(|g| *g *= coeff as f32);
            }
            backend.upload(part, &mut seg.grad);
            backend.adamw(&mut seg.master, &seg.grad, &mut seg.m, &mut seg.v, h);
            backend.download_into(&seg.master, part);
        }
        StepOutcome { grad_norm, skipped: false }
    }

    /// AdamW with the segments' gradients already on the device (zero_device.rs).
    fn update_on_device(&mut self, backend: &B, t: &TrainConfig, lr: f64, dp: &dyn Collectives, mp: &dyn Collectives) -> StepOutcome {
        let counted: Vec<&B::Buf> = self.segments.iter().filter(|s| s.counted).map(|s| &s.grad).collect();
        let local = backend.sum_squares_all(&counted);
        let (grad_norm, coeff) = norm_and_clip(local, t, dp, mp);
        let Some(coeff) = coeff else { return StepOutcome { grad_norm, skipped: true } };
        self.updates += 1;
        if coeff < 1.0 {
            self.segments.iter_mut().for_each(|seg| backend.scale(&mut seg.grad, coeff as f32));
        }
        // Two multi-tensor updates: the decayed segments (of matrices) and the rest.
        for decayed in [true, false] {
            let Some(first) = self.segments.iter().find(|s| s.decay == decayed) else { continue };
            let h = self.adam_step(t, lr, first);
            let mut tensors: Vec<AdamTensor<B>> = self
                .segments
                .iter_mut()
                .filter(|s| s.decay == decayed)
                .map(|s| AdamTensor { param: &mut s.master, grad: &s.grad, m: &mut s.m, v: &mut s.v })
                .collect();
            backend.adamw_all(&mut tensors, h);
        }
        StepOutcome { grad_norm, skipped: false }
    }
}
