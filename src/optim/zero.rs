//! Data parallelism in the optimizer. Every DP rank computes gradients on its slice of the global
//! batch; then either
//! - `--zero 0`: the gradients are all-reduced (summed: each rank's loss is already scaled by
//!   1 / global tokens) and every rank runs the same AdamW on the whole model, or
//! - `--zero 1` (ZeRO-1, Megatron's distributed optimizer): the gradients, laid out as one flat
//!   vector in parameter-table order and padded to a multiple of DP, are reduce-scattered so rank r
//!   holds the summed gradient of block r; the global norm is the DP sum of the blocks' squares
//!   (each element counted once); AdamW runs only on block r, whose master weights and moments are
//!   the only optimizer state this rank keeps (1/DP of the whole); the updated block is
//!   all-gathered back into every rank's weights.
//! Host staging buffers are allocated once; a block is cut at parameter boundaries into segments
//! so each keeps its parameter's weight-decay setting.
//!
//! Under tensor and pipeline parallelism every rank runs this on the parameters it holds (its DP
//! group holds the same ones); the global gradient norm then also sums over the model-parallel
//! group (TP x PP), counting one copy of every shard replicated across TP ranks (norm weights,
//! replicated KV heads).

use super::adamw::{AdamW, StepOutcome};
use crate::backend::{AdamWStep, Backend};
use crate::config::TrainConfig;
use crate::dist::Collectives;
use crate::model::params::ParamTable;

/// The part of one parameter that falls into this rank's ZeRO block.
struct Segment<B: Backend> {
    /// Element offset inside this rank's block.
    block_offset: usize,
    /// The parameter, and the segment's first element in this rank's shard of it.
    param: usize,
    local_start: usize,
    len: usize,
    decay: bool,
    /// Counted in the gradient norm (false for TP-replicated parameters off TP rank 0).
    counted: bool,
    master: B::Buf,
    grad: B::Buf,
    m: B::Buf,
    v: B::Buf,
}

struct Sharded<B: Backend> {
    segments: Vec<Segment<B>>,
    block: Vec<f32>,
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
    /// Flat staging vector, padded to a multiple of DP.
    flat: Vec<f32>,
    t: TrainConfig,
}

impl<B: Backend> DataParallelOptimizer<B> {
    /// `weights` are this rank's (TP-sharded) initial weights, copied into the master block under
    /// ZeRO-1; `counted[p]` says whether this rank's copy of parameter p counts in the gradient
    /// norm (one copy of every shard held by several ranks does).
    pub fn new(
        backend: &B,
        table: &ParamTable,
        weights: &[B::Buf],
        counted: Vec<bool>,
        t: &TrainConfig,
        zero: bool,
        dp: &dyn Collectives,
    ) -> Self {
        let mut offsets = vec![0];
        for w in weights {
            offsets.push(offsets.last().unwrap() + backend.len(w));
        }
        let total = *offsets.last().unwrap();
        let block_len = total.div_ceil(dp.size());
        let flat = vec![0.0; block_len * dp.size()];
        let mode = if zero {
            let (lo, hi) = (dp.rank() * block_len, ((dp.rank() + 1) * block_len).min(total));
            let mut segments = Vec::new();
            for (p, spec) in table.specs.iter().enumerate() {
                let (a, b) = (offsets[p].max(lo), offsets[p + 1].min(hi));
                if a >= b {
                    continue;
                }
                let len = b - a;
                let all = backend.download(&weights[p]);
                let mut master = backend.zeros(len);
                backend.upload(&all[a - offsets[p]..b - offsets[p]], &mut master);
                segments.push(Segment {
                    block_offset: a - lo,
                    param: p,
                    local_start: a - offsets[p],
                    len,
                    decay: spec.weight_decay,
                    counted: counted[p],
                    master,
                    grad: backend.zeros(len),
                    m: backend.zeros(len),
                    v: backend.zeros(len),
                });
            }
            Mode::Sharded(Sharded { segments, block: vec![0.0; block_len], updates: 0 })
        } else {
            Mode::Replicated(AdamW::new(backend, table, weights, t))
        };
        DataParallelOptimizer { mode, counted, offsets, flat, t: t.clone() }
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
    /// order of `download_moments` and `restore`.
    pub fn state_ranges(&self) -> Vec<(usize, std::ops::Range<usize>)> {
        match &self.mode {
            Mode::Replicated(_) => (0..self.counted.len()).map(|p| (p, 0..self.offsets[p + 1] - self.offsets[p])).collect(),
            Mode::Sharded(s) => s.segments.iter().map(|g| (g.param, g.local_start..g.local_start + g.len)).collect(),
        }
    }

    /// AdamW's first and second moments of each of `state_ranges`, on the host.
    pub fn download_moments(&self, backend: &B) -> Vec<(Vec<f32>, Vec<f32>)> {
        match &self.mode {
            Mode::Replicated(a) => a.m.iter().zip(&a.v).map(|(m, v)| (backend.download(m), backend.download(v))).collect(),
            Mode::Sharded(s) => s.segments.iter().map(|g| (backend.download(&g.m), backend.download(&g.v))).collect(),
        }
    }

    /// Restores a saved state: the moments (in `state_ranges` order), the update count and, under
    /// ZeRO, the master weights from `weights` (this rank's restored shards).
    pub fn restore(&mut self, backend: &B, moments: &[(Vec<f32>, Vec<f32>)], updates: u64, weights: &[B::Buf]) {
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
                    let w = backend.download(&weights[g.param]);
                    backend.upload(&w[g.local_start..g.local_start + g.len], &mut g.master);
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
        let mut sq = [grads.iter().zip(&self.counted).filter(|(_, &c)| c).map(|(g, _)| backend.sum_squares(g)).sum::<f64>()];
        mp.all_reduce_sum_f64(&mut sq);
        sq[0].sqrt()
    }

    /// Reduces the gradients over the DP group and applies one update with learning rate `lr`;
    /// `mp` is this rank's model-parallel group (TP x PP), over which the global norm is summed.
    pub fn step(&mut self, backend: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f64, dp: &dyn Collectives, mp: &dyn Collectives) -> StepOutcome {
        if let Mode::Replicated(_) = self.mode {
            if dp.size() > 1 {
                self.pack(backend, grads);
                dp.all_reduce_sum_f32(&mut self.flat);
                self.unpack(backend, grads);
            }
            let norm = self.replicated_norm(backend, grads, mp);
            let Mode::Replicated(adamw) = &mut self.mode else { unreachable!() };
            return adamw.step_with_norm(backend, weights, grads, lr, norm);
        }
        self.pack(backend, grads);
        let Mode::Sharded(sh) = &mut self.mode else { unreachable!() };
        dp.reduce_scatter_sum_f32(&self.flat, &mut sh.block);
        let outcome = sh.update(backend, &self.t, lr, dp, mp);
        if !outcome.skipped {
            dp.all_gather_f32(&sh.block, &mut self.flat);
            self.unpack(backend, weights);
        }
        outcome
    }
}

impl<B: Backend> Sharded<B> {
    /// AdamW on this rank's block, which holds the reduced gradients on entry and the updated
    /// master weights on return.
    fn update(&mut self, backend: &B, t: &TrainConfig, lr: f64, dp: &dyn Collectives, mp: &dyn Collectives) -> StepOutcome {
        let squares = |g: &[f32]| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        let mut sq = [self
            .segments
            .iter()
            .filter(|s| s.counted)
            .map(|s| squares(&self.block[s.block_offset..s.block_offset + s.len]))
            .sum::<f64>()];
        dp.all_reduce_sum_f64(&mut sq);
        mp.all_reduce_sum_f64(&mut sq);
        let grad_norm = sq[0].sqrt();
        if !grad_norm.is_finite() {
            return StepOutcome { grad_norm, skipped: true };
        }
        let coeff = if t.grad_clip > 0.0 { (t.grad_clip / (grad_norm + 1e-6)).min(1.0) } else { 1.0 };
        self.updates += 1;
        for seg in self.segments.iter_mut() {
            let part = &mut self.block[seg.block_offset..seg.block_offset + seg.len];
            if coeff < 1.0 {
                part.iter_mut().for_each(|g| *g *= coeff as f32);
            }
            backend.upload(part, &mut seg.grad);
            let h = AdamWStep {
                lr: lr as f32,
                beta1: t.beta1 as f32,
                beta2: t.beta2 as f32,
                eps: t.adam_eps as f32,
                weight_decay: if seg.decay { t.weight_decay as f32 } else { 0.0 },
                step: self.updates,
            };
            backend.adamw(&mut seg.master, &seg.grad, &mut seg.m, &mut seg.v, h);
            backend.download_into(&seg.master, part);
        }
        StepOutcome { grad_norm, skipped: false }
    }
}
