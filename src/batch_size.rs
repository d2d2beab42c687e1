//! The global batch of every step, as a function of the samples consumed before it: the one place
//! that says how many samples a step takes and in how many micro-batches. Without ramp-up every
//! step takes `train.global_batch`; with `train.rampup_batch_size = [START, INCR, SAMPLES]`
//! (`--rampup-batch-size`) it follows Megatron-LM's `RampupBatchsizeNumMicroBatchesCalculator`:
//! with n = (global - START) / INCR increments of SAMPLES / n samples each (a float, as Megatron
//! divides), the batch at c consumed samples is START + INCR x trunc(c / (SAMPLES / n)) while
//! c <= SAMPLES, and the full global batch after. A step consumes its batch, so consumed samples
//! (saved in checkpoints) determine the whole schedule: resuming or resharding mid-ramp continues
//! it exactly. Every batch of the ramp must split into whole micro-batches on every DP rank (as
//! Megatron asserts; its `--decrease-batch-size-if-needed` rounding would make the batch depend on
//! the DP size, which resharding cannot allow).

use anyhow::{bail, Result};

/// Megatron's `--rampup-batch-size START INCR SAMPLES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rampup {
    pub start: usize,
    pub increment: usize,
    pub samples: u64,
}

/// The batch of each step: constant, or ramped up over the first samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSchedule {
    global: usize,
    rampup: Option<Rampup>,
}

impl BatchSchedule {
    /// `global_batch` samples per step, ramped up as `rampup` ([START, INCR, SAMPLES]) says;
    /// errors name the setting and what was expected.
    pub fn new(global_batch: usize, rampup: Option<[u64; 3]>) -> Result<Self> {
        let Some([start, increment, samples]) = rampup else {
            return Ok(BatchSchedule { global: global_batch, rampup: None });
        };
        let what = format!("train.rampup_batch_size = [{start}, {increment}, {samples}] (--rampup-batch-size START INCR SAMPLES)");
        let global = global_batch as u64;
        if start == 0 || increment == 0 || samples == 0 {
            bail!("{what}: START, INCR and SAMPLES must be positive");
        }
        if start >= global {
            bail!("{what}: START = {start} must be below train.global_batch = {global}, the batch the ramp ends at");
        }
        if !(global - start).is_multiple_of(increment) {
            bail!(
                "{what}: global_batch - START = {global} - {start} = {} is not divisible by INCR = {increment}",
                global - start
            );
        }
        Ok(BatchSchedule { global: global_batch, rampup: Some(Rampup { start: start as usize, increment: increment as usize, samples }) })
    }

    pub fn rampup(&self) -> Option<Rampup> {
        self.rampup
    }

    /// Samples of the step that starts after `consumed` samples (Megatron's current global batch).
    pub fn global_batch(&self, consumed: u64) -> usize {
        match self.rampup {
            Some(r) if consumed <= r.samples => {
                let increments = ((self.global - r.start) / r.increment) as u64;
                // Megatron's arithmetic: a float quotient truncated (at c = SAMPLES it may give
                // n - 1 increments, e.g. SAMPLES 29 over 7 increments).
                let per_increment = r.samples as f64 / increments as f64;
                let steps = (consumed as f64 / per_increment) as u64;
                r.start + steps as usize * r.increment
            }
            _ => self.global,
        }
    }

    /// Micro-batches each of `dp` ranks runs in the step after `consumed` samples.
    pub fn micro_batches(&self, consumed: u64, micro_batch: usize, dp: usize) -> usize {
        self.global_batch(consumed) / (micro_batch * dp)
    }

    /// Every batch size a run may take, smallest first (START, START + INCR, ..., global).
    pub fn sizes(&self) -> Vec<usize> {
        match self.rampup {
            Some(r) => (r.start..=self.global).step_by(r.increment).collect(),
            None => vec![self.global],
        }
    }

    /// That every batch splits into whole micro-batches of `micro_batch` on each of `dp` ranks.
    pub fn check_layout(&self, micro_batch: usize, dp: usize) -> Result<()> {
        let unit = micro_batch * dp;
        if !self.global.is_multiple_of(unit) {
            bail!("train.global_batch = {} is not divisible by micro_batch x dp = {micro_batch} x {dp}", self.global);
        }
        if let Some(r) = self.rampup {
            for (name, v) in [("START", r.start), ("INCR", r.increment)] {
                if !v.is_multiple_of(unit) {
                    bail!(
                        "train.rampup_batch_size (--rampup-batch-size START INCR SAMPLES): {name} = {v} is not a multiple of micro_batch x dp = {micro_batch} x {dp} = {unit}; every batch of the ramp must split into whole micro-batches on every DP rank"
                    );
                }
            }
        }
        Ok(())
    }

    /// Steps of a run of `train_samples` samples (`--train-samples`), as Megatron-LM's
    /// `update_train_iters` counts them: under ramp-up every step taken while the consumed samples
    /// are at most both SAMPLES and `train_samples`, then whole global batches of the rest (a
    /// partial last batch is dropped); without ramp-up `train_samples / global_batch`.
    pub fn steps_for_samples(&self, train_samples: u64) -> u64 {
        let global = self.global as u64;
        let Some(r) = self.rampup else { return train_samples / global };
        let (mut steps, mut consumed) = (0, 0);
        while consumed <= r.samples && consumed <= train_samples {
            consumed += self.global_batch(consumed) as u64;
            steps += 1;
        }
        steps + train_samples.saturating_sub(consumed) / global
    }

    /// Samples consumed by the first `steps` steps.
    pub fn consumed_after(&self, steps: u64) -> u64 {
        let mut consumed = 0;
        for done in 0..steps {
            if self.rampup.is_none_or(|r| consumed > r.samples) {
                return consumed + (steps - done) * self.global as u64;
            }
            consumed += self.global_batch(consumed) as u64;
        }
        consumed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value below is worked out by hand from Megatron's formula, not printed by
    // this code: batch(c) = START + INCR x trunc(c / (SAMPLES / n)) for c <= SAMPLES, n = (G - START) / INCR.

    #[test]
    fn the_batch_follows_megatrons_formula() {
        // G 16, START 4, INCR 4, SAMPLES 30: n = 3 increments of 10 samples.
        let s = BatchSchedule::new(16, Some([4, 4, 30])).unwrap();
        for (c, want) in [(0, 4), (4, 4), (9, 4), (10, 8), (12, 8), (19, 8), (20, 12), (29, 12), (30, 16), (31, 16), (1000, 16)] {
            assert_eq!(s.global_batch(c), want, "consumed {c}");
        }
        // The steps: 4 (c 0), 4 (c 4), 4 (c 8), 8 (c 12), 12 (c 20), 16 (c 32 > 30), 16 ...
        let consumed = [0, 4, 8, 12, 20, 32, 48, 64];
        for (steps, &c) in consumed.iter().enumerate() {
            assert_eq!(s.consumed_after(steps as u64), c, "after {steps} steps");
        }
        assert_eq!(s.consumed_after(1000), 48 + 16 * (1000 - 6));
        // Micro-batches of 2 on 2 DP ranks: batch / 4.
        assert_eq!([0, 12, 20, 32].map(|c| s.micro_batches(c, 2, 2)), [1, 2, 3, 4]);
        assert_eq!(s.sizes(), vec![4, 8, 12, 16]);
    }

    /// Megatron's update_train_iters by hand for G 16, ramp 4 4 30: the ramp loop takes the steps
    /// starting at consumed 0, 4, 8, 12, 20 (batches 4, 4, 4, 8, 12; consumed then 32 > 30), 5
    /// steps to 32 samples; then (train_samples - 32) // 16 more.
    #[test]
    fn train_samples_count_steps_as_megatron() {
        let s = BatchSchedule::new(16, Some([4, 4, 30])).unwrap();
        assert_eq!(s.steps_for_samples(100), 5 + (100 - 32) / 16);
        assert_eq!(s.steps_for_samples(32), 5);
        // The ramp loop also stops once the consumed samples pass train_samples: 0, 4, 8 (c 12 > 10).
        assert_eq!(s.steps_for_samples(10), 3);
        assert_eq!(BatchSchedule::new(16, None).unwrap().steps_for_samples(100), 6);
    }

    #[test]
    fn the_float_quotient_is_megatrons() {
        // G 16, START 2, INCR 2, SAMPLES 29: n = 7, 29 / 7 = 4.142857142857143 in f64, and at
        // c = 29 the quotient 29 / 4.142857142857143 = 6.999999999999999 truncates to 6: batch
        // 2 + 6 x 2 = 14 where exact arithmetic would give 16. Python's int(c / x) does the same.
        let s = BatchSchedule::new(16, Some([2, 2, 29])).unwrap();
        assert_eq!(s.global_batch(29), 14);
        assert_eq!(s.global_batch(30), 16);
        assert_eq!(s.global_batch(4), 2); // 4 / 4.142857 = 0.97
        assert_eq!(s.global_batch(5), 4); // 1.21
    }

    #[test]
    fn without_rampup_every_step_takes_the_global_batch() {
        let s = BatchSchedule::new(24, None).unwrap();
        assert_eq!((s.global_batch(0), s.global_batch(1 << 40)), (24, 24));
        assert_eq!(s.consumed_after(7), 7 * 24);
        assert_eq!(s.sizes(), vec![24]);
        assert_eq!(s.micro_batches(48, 2, 3), 4);
    }

    #[test]
    fn bad_combinations_are_named() {
        let err = |g, r| format!("{:#}", BatchSchedule::new(g, Some(r)).unwrap_err());
        assert!(err(16, [6, 4, 100]).contains("16 - 6 = 10 is not divisible by INCR = 4"));
        assert!(err(16, [16, 4, 100]).contains("START = 16 must be below train.global_batch = 16"));
        assert!(err(16, [32, 4, 100]).contains("START = 32"));
        assert!(err(16, [4, 0, 100]).contains("must be positive"));
        assert!(err(16, [4, 4, 0]).contains("must be positive"));
        let s = BatchSchedule::new(16, Some([4, 4, 100])).unwrap();
        assert!(s.check_layout(2, 2).is_ok());
        let e = format!("{:#}", s.check_layout(2, 4).unwrap_err());
        assert!(e.contains("START = 4 is not a multiple of micro_batch x dp = 2 x 4 = 8"), "{e}");
        let s = BatchSchedule::new(16, Some([8, 4, 100])).unwrap();
        assert!(format!("{:#}", s.check_layout(1, 8).unwrap_err()).contains("INCR = 4"));
        assert!(format!("{:#}", s.check_layout(3, 1).unwrap_err()).contains("global_batch = 16"));
    }
}
