//! Learning-rate schedule as Megatron-LM computes it: linear warm-up to the peak, then cosine
//! decay to `min_lr`, constant afterwards. It counts optimizer steps (`warmup_steps`,
//! `decay_steps`), or under batch-size ramp-up consumed samples, as Megatron's sample-based
//! schedule does (`warmup_samples`, `decay_samples`; a step setting given instead stands for the
//! samples its steps consume under the ramp, so the warm-up still ends at that step).

use crate::batch_size::BatchSchedule;
use crate::config::TrainConfig;

/// What the schedule's positions count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clock {
    /// Optimizer steps taken.
    Steps,
    /// Samples consumed (batch-size ramp-up).
    Samples,
}

#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    pub max_lr: f64,
    pub min_lr: f64,
    /// Warm-up length and the end of the decay, in `clock` units.
    pub warmup: u64,
    pub decay: u64,
    pub clock: Clock,
}

impl LrSchedule {
    pub fn from_config(t: &TrainConfig, batches: &BatchSchedule) -> Self {
        let decay_steps = t.decay_steps.unwrap_or(t.steps);
        let (warmup, decay, clock) = match batches.rampup() {
            None => (t.warmup_steps, decay_steps, Clock::Steps),
            Some(_) => (
                t.warmup_samples.unwrap_or_else(|| batches.consumed_after(t.warmup_steps)),
                // Megatron's default lr-decay-samples is train-samples.
                t.decay_samples.or(t.train_samples.filter(|_| t.decay_steps.is_none())).unwrap_or_else(|| batches.consumed_after(decay_steps)),
                Clock::Samples,
            ),
        };
        LrSchedule { max_lr: t.lr, min_lr: t.min_lr, warmup, decay: decay.max(warmup), clock }
    }

    /// Learning rate of the optimizer step that makes `step` steps (1-based) and `consumed`
    /// samples in all.
    pub fn lr_after(&self, step: u64, consumed: u64) -> f64 {
        self.lr(match self.clock {
            Clock::Steps => step,
            Clock::Samples => consumed,
        })
    }

    /// Learning rate at position `at` of the clock.
    pub fn lr(&self, at: u64) -> f64 {
        if self.warmup > 0 && at <= self.warmup {
            return self.max_lr * at as f64 / self.warmup as f64;
        }
        if at > self.decay || self.decay == self.warmup {
            return self.min_lr;
        }
        let ratio = (at - self.warmup) as f64 / (self.decay - self.warmup) as f64;
        let coeff = 0.5 * ((std::f64::consts::PI * ratio).cos() + 1.0);
        self.min_lr + coeff * (self.max_lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_minimum() {
        let s = LrSchedule { max_lr: 1e-4, min_lr: 3.3e-6, warmup: 1000, decay: 25000, clock: Clock::Steps };
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

    #[test]
    fn under_rampup_the_schedule_counts_consumed_samples() {
        let mut t = crate::config::Config::load("tiny", &[]).unwrap().train;
        (t.lr, t.min_lr, t.global_batch, t.steps, t.warmup_steps, t.decay_steps) = (1e-3, 1e-4, 16, 10, 2, None);
        // G 16 from 4 by 4 over 30 samples: batches 4, 4, 4, 8, 12, 16, ... (src/batch_size.rs),
        // consumed 4, 8, 12, 20, 32, 48, 64, 80, 96, 112 after steps 1..=10.
        let ramp = BatchSchedule::new(16, Some([4, 4, 30])).unwrap();
        let s = LrSchedule::from_config(&t, &ramp);
        // warmup_steps = 2 stands for the 8 samples of two steps; the decay ends at 112 samples.
        assert_eq!((s.warmup, s.decay, s.clock), (8, 112, Clock::Samples));
        assert_eq!(s.lr_after(1, 4), 1e-3 * 4.0 / 8.0);
        assert_eq!(s.lr_after(2, 8), 1e-3);
        let mid = s.lr_after(6, 60); // (60 - 8) / (112 - 8) = 1/2: the mean of max and min
        assert!((mid - 5.5e-4).abs() < 1e-15, "{mid}");
        assert!((s.lr_after(10, 112) - 1e-4).abs() < 1e-18);
        (t.warmup_samples, t.decay_samples) = (Some(6), Some(50));
        let s = LrSchedule::from_config(&t, &ramp);
        assert_eq!((s.warmup, s.decay), (6, 50));
        assert_eq!(s.lr_after(1, 4), 1e-3 * 4.0 / 6.0);
        // Without ramp-up: steps, whatever the samples.
        let s = LrSchedule::from_config(&t, &BatchSchedule::new(16, None).unwrap());
        assert_eq!((s.warmup, s.decay, s.clock), (2, 10, Clock::Steps));
        assert_eq!(s.lr_after(1, 16), 5e-4);
    }
}
