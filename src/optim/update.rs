//! One update of this rank's optimizer tensors, shared by the replicated optimizer (replicated.rs:
//! whole shards) and ZeRO-1 (zero.rs: segments): the clipping coefficient of the global gradient
//! norm and the skip of a step whose norm is not finite, then the rule `optim.name` names —
//! AdamW in two multi-tensor launches (the decayed tensors and the rest), or LAMB (lamb.rs).

use super::lamb;
use crate::backend::{AdamTensor, AdamWStep, Backend};
use crate::config::{OptimConfig, OptimizerName, TrainConfig};
use crate::parallel::Collectives;

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// True when the update was skipped (non-finite gradients).
    pub skipped: bool,
}

/// The factor that clips gradients of global norm `grad_norm` to `grad_clip` (1 below it, or
/// with clipping off: 0); None when the norm is not finite, and the step is skipped.
pub(super) fn clip_coefficient(grad_norm: f64, grad_clip: f64) -> Option<f64> {
    if !grad_norm.is_finite() {
        return None;
    }
    Some(if grad_clip > 0.0 { (grad_clip / (grad_norm + 1e-6)).min(1.0) } else { 1.0 })
}

/// One tensor the optimizer updates: this rank's shard of a parameter (replicated), or its
/// segment of one (ZeRO-1).
pub(super) struct Part<'a, B: Backend> {
    pub param: &'a mut B::Buf,
    /// The clipped gradient (LAMB leaves its update direction here).
    pub grad: &'a mut B::Buf,
    pub m: &'a mut B::Buf,
    pub v: &'a mut B::Buf,
    /// Weight decay applies (matrices).
    pub decay: bool,
    /// The parameter's index in the table.
    pub index: usize,
    /// This rank's copy counts in norms (one copy of every shard held by several ranks does).
    pub counted: bool,
}

/// What every part of one update shares: the hyper-parameters, the learning rate, the 1-based
/// update count (bias correction), the table's length and the groups over which per-tensor sums
/// add up to whole tensors (LAMB: DP under ZeRO-1, then TP x PP).
pub(super) struct Update<'a> {
    pub t: &'a TrainConfig,
    pub optim: &'a OptimConfig,
    pub lr: f64,
    pub step: u64,
    pub params: usize,
    pub groups: &'a [&'a dyn Collectives],
}

impl Update<'_> {
    /// Applies the update to `parts`, whose gradients are already clipped.
    pub(super) fn apply<B: Backend>(&self, backend: &B, parts: Vec<Part<'_, B>>) {
        match self.optim.name {
            OptimizerName::AdamW => {
                let (decayed, rest): (Vec<_>, Vec<_>) = parts.into_iter().partition(|p| p.decay);
                for (group, decay) in [(decayed, true), (rest, false)] {
                    let mut tensors: Vec<AdamTensor<B>> =
                        group.into_iter().map(|p| AdamTensor { param: p.param, grad: p.grad, m: p.m, v: p.v }).collect();
                    backend.adamw_all(&mut tensors, self.adamw_step(decay));
                }
            }
            OptimizerName::Lamb => lamb::update(backend, parts, self),
        }
    }

    fn adamw_step(&self, decay: bool) -> AdamWStep {
        let t = self.t;
        AdamWStep {
            lr: self.lr as f32,
            beta1: t.beta1 as f32,
            beta2: t.beta2 as f32,
            eps: t.adam_eps as f32,
            weight_decay: self.weight_decay(decay),
            step: self.step,
        }
    }

    /// The weight decay of a tensor (matrices only).
    pub(super) fn weight_decay(&self, decay: bool) -> f32 {
        if decay { self.t.weight_decay as f32 } else { 0.0 }
    }
}
