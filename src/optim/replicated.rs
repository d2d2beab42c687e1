//! The optimizer on whole shards (`--zero 0`): every DP rank keeps the moments of its TP shard of
//! each parameter it holds and applies the same update to it, after computing the global gradient
//! norm of gradients already reduced over DP (each copy counted once, summed over TP x PP). The
//! clipping, the skip of steps whose gradients are not finite and the rule (AdamW or LAMB) are
//! update.rs's; the moments live on the backend, where the weights do.

use super::update::{clip_coefficient, Part, StepOutcome, Update};
use crate::backend::{Backend, Role};
use crate::config::{OptimConfig, TrainConfig};
use crate::parallel::Collectives;

pub struct Replicated<B: Backend> {
    /// First and second moments, one buffer per parameter (checkpoints read and restore them).
    pub m: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    decay: Vec<bool>,
    /// Per parameter: counted in norms on this rank (one copy of every shard held by several does).
    counted: Vec<bool>,
    /// Number of updates applied so far (skipped steps do not count).
    pub updates: u64,
    t: TrainConfig,
    optim: OptimConfig,
}

impl<B: Backend> Replicated<B> {
    /// Moments sized like `weights` (this rank's shards of the table's parameters); `decay[p]`:
    /// parameter p is decayed (the table's `weight_decay`), `counted[p]`: counted in norms here.
    pub fn new(backend: &B, weights: &[B::Buf], decay: Vec<bool>, counted: Vec<bool>, t: &TrainConfig, optim: &OptimConfig) -> Self {
        Replicated {
            m: weights.iter().map(|w| backend.zeros_as(backend.len(w), Role::OptimState)).collect(),
            v: weights.iter().map(|w| backend.zeros_as(backend.len(w), Role::OptimState)).collect(),
            decay,
            counted,
            updates: 0,
            t: t.clone(),
            optim: optim.clone(),
        }
    }

    /// The global norm of `grads` (reduced over DP already): this rank's counted squares, summed
    /// over the model-parallel group `mp`.
    fn grad_norm(&self, backend: &B, grads: &[B::Buf], mp: &dyn Collectives) -> f64 {
        let counted: Vec<&B::Buf> = grads.iter().zip(&self.counted).filter(|(_, &c)| c).map(|(g, _)| g).collect();
        let mut sq = [backend.sum_squares_all(&counted)];
        mp.all_reduce_sum_f64(&mut sq);
        sq[0].sqrt()
    }

    /// Clips to `grad_clip` and applies one update with learning rate `lr`, unless the global
    /// gradient norm is not finite, in which case nothing changes and the step is reported skipped.
    pub fn step(&mut self, backend: &B, weights: &mut [B::Buf], grads: &mut [B::Buf], lr: f64, mp: &dyn Collectives) -> StepOutcome {
        let grad_norm = self.grad_norm(backend, grads, mp);
        let Some(coeff) = clip_coefficient(grad_norm, self.t.grad_clip) else { return StepOutcome { grad_norm, skipped: true } };
        if coeff < 1.0 {
            grads.iter_mut().for_each(|g| backend.scale(g, coeff as f32));
        }
        self.updates += 1;
        let parts = weights
            .iter_mut()
            .zip(grads.iter_mut())
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
            .enumerate()
            .map(|(index, ((param, grad), (m, v)))| Part { param, grad, m, v, decay: self.decay[index], index, counted: self.counted[index] })
            .collect();
        let update = Update { t: &self.t, optim: &self.optim, lr, step: self.updates, params: self.counted.len(), groups: &[mp] };
        update.apply(backend, parts);
        StepOutcome { grad_norm, skipped: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::config::Config;
    use crate::model::params::ParamTable;
    use crate::parallel::LocalGroup;

    fn setup() -> (CpuBackend<f64>, ParamTable, Config, Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let cfg = Config::load("tiny", &["model.num_layers=1".into(), "model.vocab_size=8".into()]).unwrap();
        let table = ParamTable::llama(&cfg.model);
        let weights: Vec<Vec<f64>> = table.specs.iter().map(|s| vec![0.5; s.numel()]).collect();
        let grads: Vec<Vec<f64>> = table.specs.iter().map(|s| vec![0.01; s.numel()]).collect();
        (CpuBackend::new(), table, cfg, weights, grads)
    }

    fn optimizer(be: &CpuBackend<f64>, table: &ParamTable, w: &[Vec<f64>], cfg: &Config) -> Replicated<CpuBackend<f64>> {
        Replicated::new(be, w, table.specs.iter().map(|s| s.weight_decay).collect(), vec![true; w.len()], &cfg.train, &cfg.optim)
    }

    fn norm(be: &CpuBackend<f64>, g: &[Vec<f64>]) -> f64 {
        g.iter().map(|x| be.sum_squares(x)).sum::<f64>().sqrt()
    }

    #[test]
    fn non_finite_gradients_skip_the_update() {
        let (be, table, cfg, mut w, mut g) = setup();
        let mut opt = optimizer(&be, &table, &w, &cfg);
        g[3][5] = f64::NAN;
        let before = w.clone();
        let out = opt.step(&be, &mut w, &mut g, 1e-3, &LocalGroup);
        assert!(out.skipped && out.grad_norm.is_nan());
        assert_eq!(w, before);
        assert_eq!(opt.updates, 0);
    }

    #[test]
    fn clipping_scales_to_the_limit_and_decay_spares_norm_weights() {
        let (be, table, mut cfg, mut w, mut g) = setup();
        cfg.train.grad_clip = 1e-3;
        let t = cfg.train.clone();
        let mut opt = optimizer(&be, &table, &w, &cfg);
        let norm0 = norm(&be, &g);
        let out = opt.step(&be, &mut w, &mut g, 1e-2, &LocalGroup);
        assert!(!out.skipped && (out.grad_norm - norm0).abs() < 1e-12);
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

    #[test]
    fn lamb_clips_and_skips_as_adamw_does() {
        let (be, table, mut cfg, mut w, mut g) = setup();
        cfg.optim.name = crate::config::OptimizerName::Lamb;
        cfg.train.grad_clip = 1e-3;
        let mut opt = optimizer(&be, &table, &w, &cfg);
        let out = opt.step(&be, &mut w, &mut g, 1e-2, &LocalGroup);
        assert!(!out.skipped && opt.updates == 1);
        // The update direction replaced the clipped gradient: every weight moved by lr * r * u.
        assert!(w.iter().flatten().all(|&x| x < 0.5));
        g.iter_mut().for_each(|x| x.fill(0.01));
        g[0][0] = f64::INFINITY;
        let before = w.clone();
        assert!(opt.step(&be, &mut w, &mut g, 1e-2, &LocalGroup).skipped);
        assert_eq!((w, opt.updates), (before, 1));
    }
}
