//! One optimizer step of a built model (`Trainer`): the model, the optimizer and the learning-rate
//! schedule over the parallel groups; per step the micro-batches forward and backward through the
//! pipeline executor with gradient accumulation, each parameter's DP exchange started as its
//! gradient completes, clip, update (or skip: src/fault.rs); and the forward-only loss that
//! validation (src/validation.rs) and the benchmarks use.

use crate::backend::{Backend, Role};
use crate::config::Config;
use crate::fault::{LossGuard, SkipReason};
use crate::model::Llama;
use crate::parallel::{Collectives, CommStats, ParallelGroups};
use crate::model::layout;
use crate::pipeline::{Executor, ParamEvents};
use crate::optim::StepOutcome;
use crate::optim::{DataParallelOptimizer, LrSchedule};
use anyhow::{bail, Result};
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
    /// Micro-batches per step on this rank.
    pub accumulation: usize,
    /// Tokens in the global batch (all DP ranks).
    tokens_per_step: usize,
    /// Which steps skip their update, and when to give up.
    pub guard: LossGuard,
}

/// The optimizer listening to a training step's pipeline (`ParamEvents`).
struct OptimizerEvents<'a, B: Backend> {
    optimizer: &'a mut DataParallelOptimizer<B>,
    backend: &'a B,
    dp: &'a dyn Collectives,
}

impl<B: Backend> ParamEvents for OptimizerEvents<'_, B> {
    fn weights_needed(&mut self, params: &[usize]) {
        self.optimizer.weights_needed(self.backend, params);
    }
    fn grads_complete(&mut self, params: &[usize]) {
        self.optimizer.grads_complete(self.backend, params, self.dp);
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
}

impl<B: Backend> Trainer<B> {
    /// A freshly initialised model for `cfg` on `backend`: this rank's part of it (its TP shard
    /// and pipeline chunks) within `groups`, ZeRO-1 when `cfg.parallel.zero == 1`.
    pub fn new(backend: Arc<B>, cfg: &Config, groups: ParallelGroups) -> Result<Self> {
        let (t, p) = (&cfg.train, &cfg.parallel);
        let ParallelGroups { tp, dp, pp, mp } = groups;
        let accumulation = t.global_batch / (t.micro_batch * dp.size());
        let (stages, stage) = (pp.size(), pp.rank());
        let pipeline = Executor::new(cfg.schedule_kind()?, stages, p.vpp, stage, accumulation)?;
        let chunks = layout::chunks(cfg.model.num_layers, stages, p.vpp, stage)?;
        let sp = p.sequence_parallel;
        if sp && (t.micro_batch * t.seq_len) % tp.size() != 0 {
            bail!(
                "--sequence-parallel: micro_batch x seq_len = {} x {} tokens do not split over tp = {}",
                t.micro_batch, t.seq_len, tp.size()
            );
        }
        let slots = pipeline.slots_per_chunk();
        let zero = p.zero == 1;
        // Under ZeRO-1 the fp32 masters live in the optimizer's segments: the model keeps copies.
        let weight_role = if zero { Role::WeightCopy } else { Role::Weight };
        let mut model = Llama::new_parallel(backend.clone(), &cfg.model, t.micro_batch, t.seq_len, tp, &*pp, sp, chunks, &slots, t.recompute, weight_role);
        model.overlap_tp_backward = p.overlap_tp_backward;
        if !zero {
            model.init_weights(t.seed); // under ZeRO-1 the optimizer writes them from its masters
        }
        let (mut weights, mut grads) = (std::mem::take(&mut model.weights), std::mem::take(&mut model.grads));
        let initial = |p: usize| model.initial_values(t.seed, p);
        let optimizer = DataParallelOptimizer::new(
            &*backend, &model.table, &mut weights, &mut grads, &initial, model.counted_in_norm(), (t, &cfg.optim), zero, &*dp, p.bucket_size,
            (p.overlap_grad_reduce, p.overlap_param_gather),
        );
        (model.weights, model.grads) = (weights, grads);
        Ok(Trainer {
            model,
            optimizer,
            schedule: LrSchedule::from_config(t),
            pipeline,
            accumulation,
            dp,
            pp,
            mp,
            step: 0,
            tokens_per_step: t.global_batch * t.seq_len,
            guard: LossGuard::new(t),
        })
    }

    /// Cumulative traffic of the TP, DP and PP groups.
    fn comm_stats(&self) -> [CommStats; 3] {
        [self.model.tp.stats(), self.dp.stats(), self.pp.stats()]
    }

    /// Samples of this rank's share of each global batch.
    pub fn local_batch(&self) -> usize {
        self.accumulation * self.model.micro_batch
    }

    /// One optimizer step over `batch`: this rank's `global_batch / dp` samples of `seq_len + 1`
    /// tokens, row-major.
    pub fn train_step(&mut self, batch: &[u32]) -> StepStats {
        let before = self.comm_stats();
        let m = &mut self.model;
        let rows = m.micro_batch * (m.seq + 1);
        assert_eq!(batch.len(), rows * self.accumulation, "global batch of the wrong size");
        let grad_scale = 1.0 / self.tokens_per_step as f32;
        let backend = m.backend.clone();
        self.optimizer.zero_grads(&backend, &mut m.grads);
        // The forward pass waits for each bucket's weight all-gather as it reaches it; each
        // bucket's gradient exchange starts as soon as the backward pass completes it.
        let mut events = OptimizerEvents { optimizer: &mut self.optimizer, backend: &*backend, dp: &*self.dp };
        let loss_sum = self.pipeline.run(m, batch, grad_scale, &*self.pp, &mut events);
        m.reduce_replicated_grads();
        events.grads_complete(&m.reduced_after_backward());
        self.step += 1;
        let lr = self.schedule.lr(self.step);
        let mut total = [loss_sum];
        self.pp.all_reduce_sum_f64(&mut total);
        self.dp.all_reduce_sum_f64(&mut total);
        let loss = total[0] / self.tokens_per_step as f64;
        let verdict = crate::fault::agree(self.guard.check(loss), &*self.mp, &*self.dp);
        let outcome = match verdict {
            None => self.optimizer.step(&*backend, &mut m.weights, &mut m.grads, lr, &*self.dp, &*self.mp),
            Some(_) => {
                self.optimizer.discard_exchange(&*backend);
                StepOutcome { grad_norm: f64::NAN, skipped: true }
            }
        };
        let skip_reason = verdict.or(outcome.skipped.then_some(SkipReason::NonFiniteGradients));
        self.guard.record(loss, skip_reason.is_some());
        let after = self.comm_stats();
        let comm = [0, 1, 2].map(|g| after[g] - before[g]);
        StepStats { loss, grad_norm: outcome.grad_norm, lr, skipped: skip_reason.is_some(), skip_reason, comm }
    }

    /// Mean token loss of `batch` (shaped as for `train_step`) without changing the weights or the
    /// optimizer: the pipeline runs as in training and the gradients it leaves are discarded (the
    /// next step zeroes them).
    pub fn eval_loss(&mut self, batch: &[u32]) -> f64 {
        let m = &mut self.model;
        let grad_scale = 1.0 / self.tokens_per_step as f32;
        self.optimizer.all_weights_needed(&m.backend);
        let mut total = [self.pipeline.run(m, batch, grad_scale, &*self.pp, &mut ())];
        self.pp.all_reduce_sum_f64(&mut total);
        self.dp.all_reduce_sum_f64(&mut total);
        total[0] / self.tokens_per_step as f64
    }
}
