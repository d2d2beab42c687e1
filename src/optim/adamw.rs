//! AdamW over the parameter table (decoupled weight decay on matrices only, as Megatron-LM and
//! Swallow do: no decay on norm weights), global grad-norm clipping, and the skip of steps whose
//! gradients are not finite. The update itself is a backend op, so it runs where the weights live.

use crate::backend::{AdamTensor, AdamWStep, Backend, Role};
use crate::config::TrainConfig;
use crate::model::params::ParamTable;

pub struct AdamW<B: Backend> {
    /// First and second moments, one buffer per parameter (checkpoints read and restore them).
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    decay: Vec<bool>,
    /// Number of updates applied so far (skipped steps do not count).
    pub updates: u64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub grad_clip: f64,
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepOutcome {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// True when the update was skipped (non-finite gradients).
    pub skipped: bool,
}

impl<B: Backend> AdamW<B> {
    /// Moments sized like `weights` (this rank's shards of the table's parameters).
    pub fn new(backend: &B, table: &ParamTable, weights: &[B::Buf], t: &TrainConfig) -> Self {
        AdamW {
            m: weights.iter().map(|w| backend.zeros_as(backend.len(w), Role::OptimState)).collect(),
            v: weights.iter().map(|w| backend.zeros_as(backend.len(w), Role::OptimState)).collect(),
            decay: table.specs.iter().map(|s| s.weight_decay).collect(),
            updates: 0,
            beta1: t.beta1,
            beta2: t.beta2,
            eps: t.adam_eps,
            weight_decay: t.weight_decay,
            grad_clip: t.grad_clip,
        }
    }

    /// Clips to `grad_clip` and applies one AdamW update with learning rate `lr`, unless the
    /// gradient norm is not finite, in which case nothing changes and the step is reported
    /// skipped. `grad_norm` is the global norm, computed by the caller over the parallel layout
    /// (zero.rs).
    pub fn step(&mut self, backend: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f64, grad_norm: f64) -> StepOutcome {
        if !grad_norm.is_finite() {
            return StepOutcome { grad_norm, skipped: true };
        }
        if self.grad_clip > 0.0 {
            let coeff = self.grad_clip / (grad_norm + 1e-6);
            if coeff < 1.0 {
                for g in grads.iter_mut() {
                    backend.scale(g, coeff as f32);
                }
            }
        }
        self.updates += 1;
        // Two multi-tensor updates: the decayed tensors (matrices) and the rest.
        for decayed in [true, false] {
            let h = AdamWStep {
                lr: lr as f32,
                beta1: self.beta1 as f32,
                beta2: self.beta2 as f32,
                eps: self.eps as f32,
                weight_decay: if decayed { self.weight_decay as f32 } else { 0.0 },
                step: self.updates,
            };
            let mut tensors: Vec<AdamTensor<B>> = weights
                .iter_mut()
                .zip(grads.iter())
                .zip(self.m.iter_mut().zip(self.v.iter_mut()))
                .zip(&self.decay)
                .filter(|(_, &d)| d == decayed)
                .map(|(((param, grad), (m, v)), _)| AdamTensor { param, grad, m, v })
                .collect();
            backend.adamw_all(&mut tensors, h);
        }
        StepOutcome { grad_norm, skipped: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::config::Config;

    fn setup() -> (CpuBackend<f64>, ParamTable, TrainConfig, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let cfg = Config::load("tiny", &["model.num_layers=1".into(), "model.vocab_size=8".into()]).unwrap();
        let table = ParamTable::llama(&cfg.model);
        let weights: Vec<Vec<f64>> = table.specs.iter().map(|s| vec![0.5; s.numel()]).collect();
        let grads: Vec<Vec<f64>> = table.specs.iter().map(|s| vec![0.01; s.numel()]).collect();
        (CpuBackend::new(), table, cfg.train, weights, grads)
    }

    fn norm(be: &CpuBackend<f64>, g: &[Vec<f64>]) -> f64 {
        g.iter().map(|x| be.sum_squares(x)).sum::<f64>().sqrt()
    }

    #[test]
    fn non_finite_gradients_skip_the_update() {
        let (be, table, t, mut w, mut g) = setup();
        let mut opt = AdamW::new(&be, &table, &w, &t);
        g[3][5] = f64::NAN;
        let before = w.clone();
        let n = norm(&be, &g);
        let out = opt.step(&be, &mut w, &mut g, 1e-3, n);
        assert!(out.skipped && out.grad_norm.is_nan());
        assert_eq!(w, before);
        assert_eq!(opt.updates, 0);
    }

    #[test]
    fn clipping_scales_to_the_limit_and_decay_spares_norm_weights() {
        let (be, table, mut t, mut w, mut g) = setup();
        t.grad_clip = 1e-3;
        let mut opt = AdamW::new(&be, &table, &w, &t);
        let norm0 = norm(&be, &g);
        let out = opt.step(&be, &mut w, &mut g, 1e-2, norm0);
        assert!(!out.skipped);
        let clipped = norm(&be, &g);
        assert!((clipped - 1e-3).abs() < 1e-8, "{clipped}");
        // The first Adam step moves a weight by lr * g / (|g| + eps) with the clipped g;
        // matrices are also decayed by lr * wd, norm weights are not.
        let (norm_id, embed) = (table.final_norm, table.embed);
        let step = |gc: f64| 1e-2 * gc / (gc.abs() + t.adam_eps);
        let expect_norm = 0.5 - step(g[norm_id][0]);
        assert!((w[norm_id][0] - expect_norm).abs() < 1e-9, "{} vs {expect_norm}", w[norm_id][0]);
        let expect_embed = 0.5 * (1.0 - 1e-2 * t.weight_decay) - step(g[embed][0]);
        assert!((w[embed][0] - expect_embed).abs() < 1e-9, "{} vs {expect_embed}", w[embed][0]);
    }
}
