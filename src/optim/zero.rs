//! Data parallelism in the optimizer. Every DP rank computes gradients on its slice of the global
//! batch; then either
//! - `--zero 0`: the gradients are all-reduced (summed: each rank's loss is already scaled by
//!   1 / global tokens) and every rank runs the same update on the whole model (replicated.rs), or
//! - `--zero 1` (ZeRO-1, Megatron's distributed optimizer): the gradients, laid out in one
//!   gradient buffer (below), are reduce-scattered so rank r holds the summed gradient of its
//!   block; the global norm is the DP sum of the blocks' squares
//!   (each element counted once); the update (AdamW or LAMB, update.rs) runs only on block r, whose
//!   master weights and moments are
//!   the only optimizer state this rank keeps (1/DP of the whole); the updated block is
//!   all-gathered back into every rank's weights (the model's weights are then copies: bf16 on
//!   the GPU, `Role::WeightCopy`), or
//! - `--zero 2` (ZeRO-2): as ZeRO-1, and the gradient sharded too: each micro-batch's gradients
//!   are reduce-scattered bucket by bucket into this rank's block as the backward fills them,
//!   the model keeping no whole gradient (zero2.rs; the host path, CPU backend).
//!
//! The gradients are exchanged in buckets of whole parameters laid out in one gradient buffer
//! (grad_layout.rs: Megatron's grad buffer, `parallel.bucket_size` elements per bucket, 40M by
//! default), one collective each; every bucket is padded to DP blocks and under ZeRO-1 rank r
//! owns block r of every bucket (Megatron's distributed-optimizer layout), so a bucket can be
//! reduced as soon as the backward pass has finished its parameters. Where the backend's buffers
//! can share memory and the DP group reaches device memory (the CUDA backend with `--comm
//! mpi|nccl`, or DP 1), the model's gradients are views into that buffer and the exchange runs in
//! place there (zero_device.rs); otherwise it is staged through a host copy of the buffer. A
//! rank's block is cut at parameter boundaries into segments so each keeps its parameter's
//! weight-decay setting (and LAMB its per-tensor norms: lamb.rs).
//!
//! Under tensor and pipeline parallelism every rank runs this on the parameters it holds (its DP
//! group holds the same ones); the global gradient norm then also sums over the model-parallel
//! group (TP x PP), counting one copy of every shard replicated across TP ranks (norm weights,
//! replicated KV heads).

use super::grad_layout::GradLayout;
use super::replicated::Replicated;
use super::segment::Segment;
use super::update::{clip_coefficient, Part, StepOutcome, Update};
use super::zero2::GradStream;
use super::zero_device::DeviceGrads;
use crate::backend::{Backend, Role};
use crate::config::{OptimConfig, TrainConfig};
use crate::parallel::Collectives;
use crate::model::params::ParamTable;

struct Sharded<B: Backend> {
    segments: Vec<Segment<B>>,
    /// This rank's blocks on the host path (empty on the device path).
    block: Vec<f32>,
    /// ZeRO-2: the streaming of each micro-batch's gradients into `block`.
    stream: Option<GradStream>,
    updates: u64,
}

enum Mode<B: Backend> {
    Replicated(Replicated<B>),
    Sharded(Sharded<B>),
}

pub struct DataParallelOptimizer<B: Backend> {
    mode: Mode<B>,
    layout: GradLayout,
    /// The exchange in place on the device, when the backend's gradients are views into one buffer.
    device: Option<DeviceGrads<B>>,
    /// Start each bucket's exchange when its gradients are complete (`parallel.overlap_grad_reduce`).
    overlap: bool,
    /// Leave ZeRO-1's weight all-gather in flight until the forward pass reads each bucket
    /// (`parallel.overlap_param_gather`).
    overlap_gather: bool,
    /// Host copy of the gradient buffer (the host path under ZeRO 0 and 1; empty on the device
    /// path and under ZeRO-2).
    flat: Vec<f32>,
    t: TrainConfig,
    optim: OptimConfig,
}

impl<B: Backend> DataParallelOptimizer<B> {
    /// `weights` are this rank's (TP-sharded) weights and `grads` the model's gradients (replaced
    /// by views into one gradient buffer where the exchange runs on the device; the weights too,
    /// by views into one bf16 buffer, under ZeRO-1 there); `initial(p)` the
    /// fp32 initial values of its shard of parameter p, copied into the master segments under
    /// ZeRO-1 and 2, whose all-gather then writes every weight (the model need not initialise them); `counted[p]` says whether this rank's copy of
    /// parameter p counts in the gradient norm (one copy of every shard held by several ranks
    /// does) and `late` lists the parameters summed over other ranks after the backward
    /// (`Llama::reduced_after_backward`); `optim` picks the update rule; `zero` the stage (0, 1,
    /// 2: under ZeRO-2 the model's gradients are released, `grads_computed`); gradients are exchanged in buckets of about `bucket_size` elements, each started
    /// as soon as its gradients are complete when `overlap` (`grads_complete`), and under ZeRO-1
    /// the weights all-gathered while the next forward pass runs when `overlap_gather`
    /// (`weights_needed`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: &B,
        table: &ParamTable,
        weights: &mut Vec<B::Buf>,
        grads: &mut Vec<B::Buf>,
        initial: &dyn Fn(usize) -> Vec<f32>,
        (counted, late): (Vec<bool>, &[usize]),
        (t, optim): (&TrainConfig, &OptimConfig),
        stage: u8,
        dp: &dyn Collectives,
        bucket_size: usize,
        (overlap, overlap_gather): (bool, bool),
    ) -> Self {
        let lens: Vec<usize> = weights.iter().map(|w| backend.len(w)).collect();
        let dps = dp.size();
        let (zero, streamed) = (stage >= 1, stage == 2);
        let layout = GradLayout::new(&lens, bucket_size, dps);
        let parts = if zero { layout.block_parts(dp.rank()) } else { Vec::new() };
        // Views: every parameter's gradient, the whole buffer, each bucket, each ZeRO segment.
        let mut places: Vec<(usize, usize)> = (0..lens.len()).map(|p| (layout.places[p], lens[p])).collect();
        places.push((0, layout.total));
        places.extend(layout.buckets.iter().map(|b| (b.start, dps * b.block_len)));
        places.extend(parts.iter().map(|&(_, _, at, n)| (at, n)));
        // Each buffer is freed before its shared replacement is allocated.
        let mut views = if !streamed && (dps == 1 || dp.device().is_some()) {
            grads.clear();
            backend.shared_views(layout.total, &places, Role::Grad).map(Vec::into_iter)
        } else {
            None
        };
        // Under ZeRO-1 there, the weight copies share one bf16 buffer of the same layout, which
        // the all-gather fills in place (its whole-buffer view goes unused).
        let mut weight_views = match (zero, &views) {
            (true, Some(_)) => {
                weights.clear();
                backend.shared_views(layout.total, &places, Role::WeightCopy).map(Vec::into_iter)
            }
            _ => None,
        };
        match views.as_mut() {
            Some(v) => grads.extend(v.by_ref().take(lens.len())),
            None if grads.is_empty() => grads.extend(lens.iter().map(|&n| backend.zeros_as(n, Role::Grad))),
            None => {}
        }
        if streamed {
            // The backward allocates each gradient as it writes it; zero2.rs releases it.
            grads.iter_mut().for_each(|g| *g = backend.zeros_as(0, Role::Grad));
        }
        if let Some(w) = weight_views.as_mut() {
            weights.extend(w.by_ref().take(lens.len()));
            w.next();
        }
        let device = views.as_mut().map(|v| {
            let whole = v.next().expect("the whole buffer's view");
            let weight_buckets = weight_views.as_mut().map_or(Vec::new(), |w| w.by_ref().take(layout.buckets.len()).collect());
            DeviceGrads::new(whole, v.by_ref().take(layout.buckets.len()).collect(), weight_buckets, &layout)
        });
        let mode = if zero {
            let mut segments = Vec::new();
            // This rank's blocks on the host path, holding the masters between updates.
            let mut block = if device.is_some() { Vec::new() } else { vec![0.0; layout.block_total()] };
            let mut initial_cache: Option<(usize, Vec<f32>)> = None;
            for &(i, p, at, len) in &parts {
                let bk = &layout.buckets[i];
                let local_start = at - layout.places[p];
                // The fp32 initial values (the weights may be bf16 copies), once per parameter.
                if initial_cache.as_ref().is_none_or(|(q, _)| *q != p) {
                    initial_cache = Some((p, initial(p)));
                }
                let all = &initial_cache.as_ref().unwrap().1;
                let initial = &all[local_start..local_start + len];
                let mut master = backend.zeros_as(len, Role::OptimState);
                backend.upload(initial, &mut master);
                let block_offset = bk.block_offset + at - (bk.start + dp.rank() * bk.block_len);
                if !block.is_empty() {
                    block[block_offset..block_offset + len].copy_from_slice(initial);
                }
                let grad = match views.as_mut() {
                    Some(v) => v.next().expect("a view per segment"),
                    None => backend.zeros_as(len, Role::Grad),
                };
                segments.push(Segment {
                    block_offset,
                    param: p,
                    local_start,
                    len,
                    decay: table.specs[p].weight_decay,
                    counted: counted[p],
                    master,
                    grad,
                    copy: weight_views.as_mut().map(|w| w.next().expect("a weight view per segment")),
                    m: backend.zeros_as(len, Role::OptimState),
                    v: backend.zeros_as(len, Role::OptimState),
                });
            }
            let stream = streamed.then(|| GradStream::new(&layout, dps, late));
            Mode::Sharded(Sharded { segments, block, stream, updates: 0 })
        } else {
            Mode::Replicated(Replicated::new(backend, weights, table.specs.iter().map(|s| s.weight_decay).collect(), counted, t, optim))
        };
        let flat = if device.is_some() || streamed { Vec::new() } else { vec![0.0; layout.total] };
        let mut opt = DataParallelOptimizer { mode, layout, device, overlap, overlap_gather, flat, t: t.clone(), optim: optim.clone() };
        if zero {
            // The weights are copies of the masters: the step's all-gather writes them, waited
            // for here (a checkpoint may overwrite them next).
            opt.gather_weights(backend, weights, dp);
            opt.all_weights_needed(backend);
        }
        opt
    }

    /// A backward has added to the gradients of `params` (in the model's `grads`): under ZeRO-2
    /// they go into their buckets and are released, each bucket this completes exchanged.
    pub fn grads_computed(&mut self, backend: &B, params: &[usize], grads: &mut [B::Buf], dp: &dyn Collectives) {
        if let Mode::Sharded(Sharded { stream: Some(stream), block, .. }) = &mut self.mode {
            stream.deliver(backend, params, grads, &self.layout, block, dp);
        }
    }

    /// A backward outside training (evaluation) has written the gradients of `params`: under
    /// ZeRO-2 they are released unused (the model keeps no whole gradient).
    pub fn grads_unused(&mut self, backend: &B, params: &[usize], grads: &mut [B::Buf]) {
        if let Mode::Sharded(Sharded { stream: Some(_), .. }) = &self.mode {
            params.iter().for_each(|&p| grads[p] = backend.zeros_as(0, Role::Grad));
        }
    }

    /// The gradients of `params` are complete for this step (the backward pass, then
    /// `Llama::reduce_replicated_grads`): on the device path with `overlap_grad_reduce`, each
    /// bucket they complete starts its exchange now; `step` starts the rest and waits for all.
    pub fn grads_complete(&mut self, backend: &B, params: &[usize], dp: &dyn Collectives) {
        let sharded = self.is_sharded();
        if let (Some(dev), true) = (&mut self.device, self.overlap) {
            dev.complete(backend, params, &self.layout, sharded, dp);
        }
    }

    /// The forward pass is about to read the weights of `params`: under ZeRO-1 on the device
    /// path, waits for the all-gathers of their buckets still in flight.
    pub fn weights_needed(&mut self, backend: &B, params: &[usize]) {
        if let Some(dev) = &mut self.device {
            dev.weights_needed(backend, params, &self.layout);
        }
    }

    /// Waits for every weight all-gather still in flight (before reading the weights outside a
    /// training step's forward pass).
    pub fn all_weights_needed(&mut self, backend: &B) {
        if let Some(dev) = &mut self.device {
            dev.all_weights_needed(backend);
        }
    }

    /// A step that will not update (src/fault.rs): waits for the exchange already started
    /// (ZeRO-2: drops the buckets still open).
    pub fn discard_exchange(&mut self, backend: &B) {
        if let Some(dev) = &mut self.device {
            dev.abandon(backend, &self.layout);
        }
        if let Mode::Sharded(Sharded { stream: Some(stream), .. }) = &mut self.mode {
            stream.discard(&self.layout);
        }
    }

    /// Buckets, and how many of them started their exchange before the last optimizer step (on
    /// the device path; None on the host path).
    pub fn overlapped_buckets(&self) -> Option<(usize, usize)> {
        self.device.as_ref().map(|d| (self.layout.buckets.len(), d.started_early))
    }

    /// Zeroes the gradients before a step: the whole gradient buffer at once on the device path;
    /// under ZeRO-2 also this rank's gradient blocks, which accumulate the step's micro-batches.
    pub fn zero_grads(&mut self, backend: &B, grads: &mut [B::Buf]) {
        match &mut self.device {
            Some(dev) => dev.zero(backend),
            None => grads.iter_mut().for_each(|g| backend.fill_zero(g)),
        }
        if let Mode::Sharded(Sharded { stream: Some(_), block, .. }) = &mut self.mode {
            block.fill(0.0);
        }
    }

    /// Whether the gradient is sharded too (ZeRO-2): the model holds no whole gradient.
    pub fn grads_sharded(&self) -> bool {
        matches!(&self.mode, Mode::Sharded(Sharded { stream: Some(_), .. }))
    }

    /// Bytes of optimizer state (master weights beyond the model's own, and the two moments) on this rank.
    pub fn state_bytes(&self) -> usize {
        match &self.mode {
            Mode::Replicated(_) => 2 * 4 * self.layout.lens.iter().sum::<usize>(),
            Mode::Sharded(s) => 3 * 4 * s.segments.iter().map(|g| g.len).sum::<usize>(),
        }
    }

    pub fn is_sharded(&self) -> bool {
        matches!(self.mode, Mode::Sharded(_))
    }

    /// Updates applied so far (the bias corrections' step count; skipped steps do not count).
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
            Mode::Replicated(_) => self.layout.lens.iter().enumerate().map(|(p, &n)| (p, 0..n)).collect(),
            Mode::Sharded(s) => s.segments.iter().map(|g| (g.param, g.local_start..g.local_start + g.len)).collect(),
        }
    }

    /// The first (`second == false`) or second moment of `state_ranges()[i]`, copied into
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
            let r = self.layout.param_range(p);
            backend.download_into(b, &mut self.flat[r]);
        }
    }

    fn unpack(&self, backend: &B, bufs: &mut [B::Buf]) {
        for (p, b) in bufs.iter_mut().enumerate() {
            backend.upload(&self.flat[self.layout.param_range(p)], b);
        }
    }

    /// Reduces the gradients over the DP group and applies one update with learning rate `lr`;
    /// `mp` is this rank's model-parallel group (TP x PP), over which the global norm is summed.
    pub fn step(&mut self, backend: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f64, dp: &dyn Collectives, mp: &dyn Collectives) -> StepOutcome {
        let dps = dp.size();
        let (sharded, streamed) = (self.is_sharded(), self.grads_sharded());
        match &mut self.device {
            Some(dev) => dev.finish(backend, &self.layout, sharded, dp),
            None if streamed => {
                let Mode::Sharded(Sharded { stream: Some(stream), block, .. }) = &mut self.mode else { unreachable!("ZeRO-2 streams") };
                stream.finish(backend, grads, &self.layout, block, dp);
            }
            None if sharded || dps > 1 => {
                self.pack(backend, grads);
                for bk in &self.layout.buckets {
                    let range = bk.range(dps);
                    match &mut self.mode {
                        Mode::Replicated(_) => dp.all_reduce_sum_f32(&mut self.flat[range]),
                        Mode::Sharded(sh) => dp.reduce_scatter_sum_f32(&self.flat[range], &mut sh.block[bk.block_offset..bk.block_offset + bk.block_len]),
                    }
                }
                if !sharded {
                    self.unpack(backend, grads);
                }
            }
            None => {}
        }
        let sh = match &mut self.mode {
            Mode::Replicated(r) => return r.step(backend, weights, grads, lr, mp),
            Mode::Sharded(sh) => sh,
        };
        // The global norm: the DP sum of the blocks' counted squares, summed over TP x PP.
        let on_device = self.device.is_some();
        let mut sq = [if on_device { sh.device_squares(backend) } else { sh.host_squares() }];
        dp.all_reduce_sum_f64(&mut sq);
        mp.all_reduce_sum_f64(&mut sq);
        let grad_norm = sq[0].sqrt();
        let Some(coeff) = clip_coefficient(grad_norm, self.t.grad_clip) else { return StepOutcome { grad_norm, skipped: true } };
        sh.updates += 1;
        let update = Update { t: &self.t, optim: &self.optim, lr, step: sh.updates, params: self.layout.lens.len(), groups: &[dp, mp] };
        if on_device {
            sh.update_on_device(backend, coeff, &update);
        } else {
            sh.update(backend, coeff, &update);
        }
        self.gather_weights(backend, weights, dp);
        if !self.overlap_gather {
            self.all_weights_needed(backend);
        }
        StepOutcome { grad_norm, skipped: false }
    }

    /// ZeRO-1 and 2: every rank's weights (copies) from the masters of all ranks' blocks,
    /// all-gathered bucket by bucket (on the device path left in flight: `weights_needed`; under
    /// ZeRO-2 through one bucket's staging, there being no host copy of the whole buffer).
    fn gather_weights(&mut self, backend: &B, weights: &mut [B::Buf], dp: &dyn Collectives) {
        let Mode::Sharded(sh) = &mut self.mode else { unreachable!("only ZeRO-1 and 2 gather weights") };
        let Some(dev) = &mut self.device else {
            let mut staging = Vec::new();
            for bk in &self.layout.buckets {
                let whole = match self.flat.is_empty() {
                    true => {
                        staging.resize(bk.range(dp.size()).len(), 0.0);
                        &mut staging[..]
                    }
                    false => &mut self.flat[bk.range(dp.size())],
                };
                dp.all_gather_f32(&sh.block[bk.block_offset..bk.block_offset + bk.block_len], whole);
                for p in bk.params.clone() {
                    let at = self.layout.places[p] - bk.start;
                    backend.upload(&whole[at..at + self.layout.lens[p]], &mut weights[p]);
                }
            }
            return;
        };
        dev.all_gather(backend, &mut sh.segments, dp);
    }
}

impl<B: Backend> Sharded<B> {
    /// This rank's counted squares of its block on the host path.
    fn host_squares(&self) -> f64 {
        let squares = |g: &[f32]| g.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
        self.segments.iter().filter(|s| s.counted).map(|s| squares(&self.block[s.block_offset..s.block_offset + s.len])).sum()
    }

    /// This rank's counted squares of its segments' gradients on the device path.
    fn device_squares(&self, backend: &B) -> f64 {
        let counted: Vec<&B::Buf> = self.segments.iter().filter(|s| s.counted).map(|s| &s.grad).collect();
        backend.sum_squares_all(&counted)
    }

    /// Every segment as a part of the update.
    fn parts(&mut self) -> Vec<Part<'_, B>> {
        self.segments
            .iter_mut()
            .map(|s| Part { param: &mut s.master, grad: &mut s.grad, m: &mut s.m, v: &mut s.v, decay: s.decay, index: s.param, counted: s.counted })
            .collect()
    }

    /// The update of this rank's block on the host path, which holds the reduced gradients on
    /// entry (clipped here by `coeff`) and the updated master weights on return.
    fn update(&mut self, backend: &B, coeff: f64, update: &Update) {
        for seg in &mut self.segments {
            let part = &mut self.block[seg.block_offset..seg.block_offset + seg.len];
            if coeff < 1.0 {
                part.iter_mut().for_each(|g| *g *= coeff as f32);
            }
            backend.upload(part, &mut seg.grad);
        }
        update.apply(backend, self.parts());
        for seg in &self.segments {
            backend.download_into(&seg.master, &mut self.block[seg.block_offset..seg.block_offset + seg.len]);
        }
    }

    /// The update with the segments' gradients already on the device (zero_device.rs).
    fn update_on_device(&mut self, backend: &B, coeff: f64, update: &Update) {
        if coeff < 1.0 {
            self.segments.iter_mut().for_each(|seg| backend.scale(&mut seg.grad, coeff as f32));
        }
        update.apply(backend, self.parts());
    }
}
