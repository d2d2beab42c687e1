//! Learning-rate schedule as Megatron-LM computes it: linear warm-up to the peak over
//! `warmup_steps`, then cosine decay to `min_lr` at `decay_steps`, constant afterwards.

use crate::config::TrainConfig;

#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    pub max_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: u64,
    pub decay_steps: u64,
}

impl LrSchedule {
    pub fn from_config(t: &TrainConfig) -> Self {
        LrSchedule {
            max_lr: t.lr,
            min_lr: t.min_lr,
            warmup_steps: t.warmup_steps,
            decay_steps: t.decay_steps.unwrap_or(t.steps).max(t.warmup_steps),
        }
    }

    /// Learning rate of optimizer step `step` (1-based).
    pub fn lr(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step <= self.warmup_steps {
            return self.max_lr * step as f64 / self.warmup_steps as f64;
        }
        if step > self.decay_steps || self.decay_steps == self.warmup_steps {
            return self.min_lr;
        }
        let ratio = (step - self.warmup_steps) as f64 / (self.decay_steps - self.warmup_steps) as f64;
        let coeff = 0.5 * ((std::f64::consts::PI * ratio).cos() + 1.0);
        self.min_lr + coeff * (self.max_lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_minimum() {
        let s = LrSchedule { max_lr: 1e-4, min_lr: 3.3e-6, warmup_steps: 1000, decay_steps: 25000 };
        assert!((s.lr(1) - 1e-7).abs() < 1e-15);
        assert!((s.lr(500) - 5e-5).abs() < 1e-15);
        assert_eq!(s.lr(1000), 1e-4);
        let mid = s.lr(13000); // halfway through the decay: the mean of max and min
        assert!((mid - (1e-4 + 3.3e-6) / 2.0).abs() < 1e-12, "{mid}");
        assert!((s.lr(25000) - 3.3e-6).abs() < 1e-15);
        assert_eq!(s.lr(30000), 3.3e-6);
        for st in 1001..25000 {
            assert!(s.lr(st + 1) <= s.lr(st));
        }
    }
}
