//! One optimizer step of a built model (`Trainer`): the model, the optimizer and the learning-rate
//! schedule over the parallel groups; per step the micro-batches forward and backward through the
//! pipeline executor with gradient accumulation, each parameter's DP exchange started as its
//! gradient completes, clip, update (or skip: src/fault.rs); and the forward-only loss that
//! validation (src/validation.rs) and the benchmarks use. The step's batch comes from the samples
//! consumed so far (src/batch_size.rs); under batch-size ramp-up the pipeline's list is rebuilt
//! for each new micro-batch count, on activation slots sized for the largest.

use crate::backend::{Backend, Role};
use crate::batch_size::BatchSchedule;
use crate::config::Config;
use crate::fault::{LossGuard, SkipReason};
use crate::model::Llama;
use crate::parallel::{Collectives, CommStats, ParallelGroups};
use crate::model::layout;
use crate::pipeline::{Executor, ParamEvents, ScheduleKind};
use crate::optim::noise_scale::{self, NoiseScale};
use crate::optim::StepOutcome;
use crate::optim::{DataParallelOptimizer, LrSchedule};
use anyhow::{bail, Context, Result};
use std::sync::Arc;

/// Model + optimizer + schedule + parallel groups: everything one optimizer step needs.
pub struct Trainer<B: Backend> {
    pub model: Llama<B>,
    pub optimizer: DataParallelOptimizer<B>,
    pub schedule: LrSchedule,
    pub pipeline: Executor,
    pub dp: Box<dyn Collectives>,
    pub pp: Box<dyn Collectives>,
    /// Model-parallel group (TP x PP), over which the gradient norm is summed.
    pub mp: Box<dyn Collectives>,
    pub step: u64,
    /// Samples the steps so far have read (all DP ranks): the next step's batch starts here.
    pub consumed_samples: u64,
    /// The global batch of each step.
    pub batches: BatchSchedule,
    /// Micro-batches per step on this rank that `pipeline` runs.
    pub accumulation: usize,
    /// The pipeline schedule's kind and chunks per rank, to rebuild `pipeline` for another
    /// micro-batch count.
    schedule_kind: ScheduleKind,
    vpp: usize,
    /// Which steps skip their update, and when to give up.
    pub guard: LossGuard,
    /// Under `--log-gns`: which gradients count in the norm on this rank, and the estimator.
    noise_scale: Option<(Vec<bool>, NoiseScale)>,
}

/// The optimizer listening to a training step's pipeline (`ParamEvents`).
struct OptimizerEvents<'a, B: Backend> {
    optimizer: &'a mut DataParallelOptimizer<B>,
    backend: &'a B,
    dp: &'a dyn Collectives,
}

impl<B: Backend> ParamEvents<B> for OptimizerEvents<'_, B> {
    fn weights_needed(&mut self, params: &[usize]) {
        self.optimizer.weights_needed(self.backend, params);
    }
    fn grads_computed(&mut self, params: &[usize], grads: &mut [B::Buf]) {
        self.optimizer.grads_computed(self.backend, params, grads, self.dp);
    }
    fn grads_complete(&mut self, params: &[usize]) {
        self.optimizer.grads_complete(self.backend, params, self.dp);
    }
}

/// The optimizer listening to an evaluation's pipeline: the gradients go unused.
struct EvalEvents<'a, B: Backend> {
    optimizer: &'a mut DataParallelOptimizer<B>,
    backend: &'a B,
}

impl<B: Backend> ParamEvents<B> for EvalEvents<'_, B> {
    fn grads_computed(&mut self, params: &[usize], grads: &mut [B::Buf]) {
        self.optimizer.grads_unused(self.backend, params, grads);
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean token loss over the global batch.
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
    pub skipped: bool,
    pub skip_reason: Option<SkipReason>,
    /// This rank's communication in the step, per group (tp, dp, pp).
    pub comm: [CommStats; 3],
    /// The gradient noise scale in samples (`--log-gns`), on steps that updated.
    pub noise_scale: Option<f64>,
}

/// Activation slots per chunk of pipeline stage `stage` of `stages`: the most micro-batches its
/// list holds in flight, over every batch size of the run (src/batch_size.rs) with `dp` DP
/// ranks; an error names a batch size the pipeline schedule cannot run.
pub fn pipeline_slots(cfg: &Config, stages: usize, stage: usize, dp: usize) -> Result<Vec<usize>> {
    let (t, vpp) = (&cfg.train, cfg.parallel.vpp);
    let mut slots = vec![0; vpp];
    for global in cfg.batch_schedule()?.sizes() {
        let m = global / (t.micro_batch * dp);
        let pipeline = Executor::new(cfg.schedule_kind()?, stages, vpp, stage, m)
            .with_context(|| format!("global batch {global} ({m} micro-batches of {} per DP rank)", t.micro_batch))?;
        for (s, n) in slots.iter_mut().zip(pipeline.slots_per_chunk()) {
            *s = (*s).max(n);
        }
    }
    Ok(slots)
}

impl<B: Backend> Trainer<B> {
    /// A freshly initialised model for `cfg` on `backend`: this rank's part of it (its TP shard
    /// and pipeline chunks) within `groups`, ZeRO-1 or 2 as `cfg.parallel.zero` says.
    pub fn new(backend: Arc<B>, cfg: &Config, groups: ParallelGroups) -> Result<Self> {
        let (t, p) = (&cfg.train, &cfg.parallel);
        let ParallelGroups { tp, dp, pp, mp } = groups;
        let batches = cfg.batch_schedule()?;
        batches.check_layout(t.micro_batch, dp.size())?;
        let (stages, stage) = (pp.size(), pp.rank());
        let schedule_kind = cfg.schedule_kind()?;
        let slots = pipeline_slots(cfg, stages, stage, dp.size())?;
        let accumulation = t.global_batch / (t.micro_batch * dp.size());
        let pipeline = Executor::new(schedule_kind, stages, p.vpp, stage, accumulation)?;
        let chunks = layout::chunks(cfg.model.num_layers, stages, p.vpp, stage)?;
        let sp = p.sequence_parallel;
        if sp && (t.micro_batch * t.seq_len) % tp.size() != 0 {
            bail!(
                "--sequence-parallel: micro_batch x seq_len = {} x {} tokens do not split over tp = {}",
                t.micro_batch, t.seq_len, tp.size()
            );
        }
        let zero = p.zero >= 1;
        // Under ZeRO-1 and 2 the fp32 masters live in the optimizer's segments: the model keeps copies.
        let weight_role = if zero { Role::WeightCopy } else { Role::Weight };
        let mut model = Llama::new_parallel(backend.clone(), &cfg.model, t.micro_batch, t.seq_len, tp, &*pp, sp, chunks, &slots, t.recompute, weight_role);
        model.overlap_tp_backward = p.overlap_tp_backward;
        if !zero {
            model.init_weights(t.seed); // under ZeRO the optimizer writes them from its masters
        }
        let (mut weights, mut grads) = (std::mem::take(&mut model.weights), std::mem::take(&mut model.grads));
        let initial = |p: usize| model.initial_values(t.seed, p);
        // --log-gns reads each rank's own gradients after the backward pass: no early exchange.
        let optimizer = DataParallelOptimizer::new(
            &*backend, &model.table, &mut weights, &mut grads, &initial, (model.counted_in_norm(), &model.reduced_after_backward()), (t, &cfg.optim), p.zero, &*dp, p.bucket_size,
            (p.overlap_grad_reduce && !t.log_gns, p.overlap_param_gather),
        );
        let noise_scale = t.log_gns.then(|| (model.counted_in_norm(), NoiseScale::default()));
        (model.weights, model.grads) = (weights, grads);
        Ok(Trainer {
            model,
            optimizer,
            schedule: LrSchedule::from_config(t, &batches),
            pipeline,
            accumulation,
            schedule_kind,
            vpp: p.vpp,
            dp,
            pp,
            mp,
            step: 0,
            consumed_samples: 0,
            batches,
            guard: LossGuard::new(t),
            noise_scale,
        })
    }

    /// Cumulative traffic of the TP, DP and PP groups.
    fn comm_stats(&self) -> [CommStats; 3] {
        [self.model.tp.stats(), self.dp.stats(), self.pp.stats()]
    }

    /// Samples in the next step's global batch (all DP ranks).
    pub fn global_batch(&self) -> usize {
        self.batches.global_batch(self.consumed_samples)
    }

    /// Samples of this rank's share of the next step's global batch.
    pub fn local_batch(&self) -> usize {
        self.global_batch() / self.dp.size()
    }

    /// Makes `pipeline` the list for `microbatches` per step (every count of the run's batch
    /// sizes was checked in `new`).
    fn use_microbatches(&mut self, microbatches: usize) {
        if microbatches != self.accumulation {
            let (stages, stage) = (self.pp.size(), self.pp.rank());
            self.pipeline = Executor::new(self.schedule_kind, stages, self.vpp, stage, microbatches).expect("checked in Trainer::new");
            self.accumulation = microbatches;
        }
    }

    /// One optimizer step over `batch`: this rank's `global_batch() / dp` samples of
    /// `seq_len + 1` tokens, row-major.
    pub fn train_step(&mut self, batch: &[u32]) -> StepStats {
        let before = self.comm_stats();
        let global = self.global_batch();
        assert_eq!(batch.len(), self.local_batch() * (self.model.seq + 1), "global batch of the wrong size");
        self.use_microbatches(self.batches.micro_batches(self.consumed_samples, self.model.micro_batch, self.dp.size()));
        let tokens = (global * self.model.seq) as f64;
        let m = &mut self.model;
        let grad_scale = 1.0 / tokens as f32;
        let backend = m.backend.clone();
        self.optimizer.zero_grads(&backend, &mut m.grads);
        // The forward pass waits for each bucket's weight all-gather as it reaches it; each
        // bucket's gradient exchange starts as soon as the backward pass completes it.
        let mut events = OptimizerEvents { optimizer: &mut self.optimizer, backend: &*backend, dp: &*self.dp };
        let loss_sum = self.pipeline.run(m, batch, grad_scale, &*self.pp, &mut events);
        m.reduce_replicated_grads();
        events.grads_complete(&m.reduced_after_backward());
        self.step += 1;
        self.consumed_samples += global as u64;
        let lr = self.schedule.lr_after(self.step, self.consumed_samples);
        let mut total = [loss_sum];
        self.pp.all_reduce_sum_f64(&mut total);
        self.dp.all_reduce_sum_f64(&mut total);
        let loss = total[0] / tokens;
        let local_squares = self.noise_scale.as_ref().map(|(counted, _)| local_grad_squares(&*backend, &m.grads, counted, &*self.mp, &*self.dp));
        let verdict = crate::fault::agree(self.guard.check(loss), &*self.mp, &*self.dp);
        let outcome = match verdict {
            None => self.optimizer.step(&*backend, &mut m.weights, &mut m.grads, lr, &*self.dp, &*self.mp),
            Some(_) => {
                self.optimizer.discard_exchange(&*backend);
                StepOutcome { grad_norm: f64::NAN, skipped: true }
            }
        };
        let skip_reason = verdict.or(outcome.skipped.then_some(SkipReason::NonFiniteGradients));
        let noise_scale = match (&mut self.noise_scale, local_squares, skip_reason) {
            (Some((_, ns)), Some(small_sq), None) => {
                let (dps, global) = (self.dp.size() as f64, global as f64);
                Some(ns.update(noise_scale::estimate(global / dps, small_sq, global, outcome.grad_norm.powi(2))))
            }
            _ => None,
        };
        self.guard.record(loss, skip_reason.is_some());
        let after = self.comm_stats();
        let comm = [0, 1, 2].map(|g| after[g] - before[g]);
        StepStats { loss, grad_norm: outcome.grad_norm, lr, skipped: skip_reason.is_some(), skip_reason, comm, noise_scale }
    }

    /// Mean token loss of `batch` (this rank's share of a global batch of any of the run's sizes,
    /// shaped as for `train_step`) without changing the weights or the optimizer: the pipeline
    /// runs as in training and the gradients it leaves are discarded (the next step zeroes them).
    pub fn eval_loss(&mut self, batch: &[u32]) -> f64 {
        let rows = self.model.micro_batch * (self.model.seq + 1);
        self.use_microbatches(batch.len() / rows);
        let tokens = (batch.len() / (self.model.seq + 1) * self.dp.size() * self.model.seq) as f64;
        let m = &mut self.model;
        let grad_scale = 1.0 / tokens as f32;
        let backend = m.backend.clone();
        self.optimizer.all_weights_needed(&backend);
        let mut events = EvalEvents { optimizer: &mut self.optimizer, backend: &*backend };
        let mut total = [self.pipeline.run(m, batch, grad_scale, &*self.pp, &mut events)];
        self.pp.all_reduce_sum_f64(&mut total);
        self.dp.all_reduce_sum_f64(&mut total);
        total[0] / tokens
    }
}

/// |G_small|² for the noise scale: the squared norm of one DP rank's mean gradient over its share
/// of the batch, averaged over the DP ranks. The gradients hold the rank's sum over its samples
/// divided by the global batch's tokens, so its own mean gradient is dp times that; the squares
/// sum over the model-parallel group as the global norm's do (`counted`).
fn local_grad_squares<B: Backend>(backend: &B, grads: &[B::Buf], counted: &[bool], mp: &dyn Collectives, dp: &dyn Collectives) -> f64 {
    let own: Vec<&B::Buf> = grads.iter().zip(counted).filter(|(_, &c)| c).map(|(g, _)| g).collect();
    let mut sq = [backend.sum_squares_all(&own)];
    mp.all_reduce_sum_f64(&mut sq);
    dp.all_reduce_sum_f64(&mut sq);
    let dps = dp.size() as f64;
    sq[0] / dps * dps * dps
}
