//! Fault handling of the training loop: which steps skip their update and when to give up.
//!
//! A step is skipped when its loss is not finite, when its loss is a spike — more than
//! `train.spike_zscore` standard deviations above the mean of the last `train.spike_window`
//! applied steps (off by default, as in Megatron-LM) — or when the optimizer finds the gradient
//! norm non-finite. Skipped losses never enter the window. After `train.max_skipped_in_a_row`
//! consecutive skipped steps the run saves and stops (`Halted`, exit code 3).
//!
//! The verdict must be the same on every rank (a rank that steps while another skips would
//! deadlock in the optimizer's collectives): the loss is summed over PP and DP and every TP rank
//! computes the full cross-entropy, so all ranks see the same value, and the skip flag is
//! additionally combined with a max over the model-parallel and data-parallel groups.

use crate::config::TrainConfig;
use crate::parallel::Collectives;
use std::collections::VecDeque;

/// Why a step did not update the weights.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SkipReason {
    NonFiniteLoss,
    /// z-score of the loss against the trailing window.
    LossSpike { zscore: f64 },
    NonFiniteGradients,
    /// Another rank decided to skip (never seen when the losses agree, see the module comment).
    OtherRank,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NonFiniteLoss => write!(f, "non-finite loss"),
            SkipReason::LossSpike { zscore } => write!(f, "loss spike, z-score {zscore:.1}"),
            SkipReason::NonFiniteGradients => write!(f, "non-finite gradients"),
            SkipReason::OtherRank => write!(f, "skipped on another rank"),
        }
    }
}

/// The loss-spike detector and the count of skipped steps in a row.
pub struct LossGuard {
    /// Losses of the last applied steps, oldest first.
    window: VecDeque<f64>,
    window_len: usize,
    /// Spike threshold in standard deviations; 0 turns spike detection off.
    zscore: f64,
    max_in_a_row: u64,
    in_a_row: u64,
}

impl LossGuard {
    pub fn new(t: &TrainConfig) -> Self {
        LossGuard {
            window: VecDeque::with_capacity(t.spike_window),
            window_len: t.spike_window,
            zscore: t.spike_zscore,
            max_in_a_row: t.max_skipped_in_a_row,
            in_a_row: 0,
        }
    }

    /// This rank's verdict on `loss` before the update: `Some(reason)` to skip it.
    pub fn check(&self, loss: f64) -> Option<SkipReason> {
        if !loss.is_finite() {
            return Some(SkipReason::NonFiniteLoss);
        }
        if self.zscore <= 0.0 || self.window.len() < self.window_len {
            return None;
        }
        let n = self.window.len() as f64;
        let mean = self.window.iter().sum::<f64>() / n;
        let var = self.window.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
        // A perfectly flat window has no spread: any rise above it counts as infinitely far.
        let z = if var > 0.0 { (loss - mean) / var.sqrt() } else if loss > mean { f64::INFINITY } else { 0.0 };
        (z > self.zscore).then_some(SkipReason::LossSpike { zscore: z })
    }

    /// Records the outcome of a step: an applied step's loss enters the window.
    pub fn record(&mut self, loss: f64, skipped: bool) {
        if skipped {
            self.in_a_row += 1;
            return;
        }
        self.in_a_row = 0;
        if self.window_len > 0 {
            if self.window.len() == self.window_len {
                self.window.pop_front();
            }
            self.window.push_back(loss);
        }
    }

    /// Consecutive skipped steps so far.
    pub fn skipped_in_a_row(&self) -> u64 {
        self.in_a_row
    }

    /// Whether the run should stop: `max_skipped_in_a_row` (> 0) steps in a row were skipped.
    pub fn should_stop(&self) -> bool {
        self.max_in_a_row > 0 && self.in_a_row >= self.max_in_a_row
    }
}

/// `local` combined over every rank (a max over the model-parallel group, then over the
/// data-parallel group): `OtherRank` when this rank would step but another skips.
pub fn agree(local: Option<SkipReason>, mp: &dyn Collectives, dp: &dyn Collectives) -> Option<SkipReason> {
    let mut flag = [local.is_some() as u8 as f64];
    // A sum of 0/1 flags: positive iff any rank skips (exact in f64).
    mp.all_reduce_sum_f64(&mut flag);
    dp.all_reduce_sum_f64(&mut flag);
    match (local, flag[0] > 0.0) {
        (Some(r), _) => Some(r),
        (None, true) => Some(SkipReason::OtherRank),
        (None, false) => None,
    }
}

/// The error that ends a run whose steps keep being skipped; every rank returns it together,
/// so the job ends without MPI_Abort (rank 0 prints it, all ranks exit with `Halted::EXIT_CODE`).
#[derive(Debug)]
pub struct Halted(pub String);

impl Halted {
    pub const EXIT_CODE: i32 = 3;
}

impl std::fmt::Display for Halted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Halted {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn guard(zscore: f64, window: usize, max: u64) -> LossGuard {
        let sets = [format!("train.spike_zscore={zscore}"), format!("train.spike_window={window}"), format!("train.max_skipped_in_a_row={max}")];
        LossGuard::new(&Config::load("tiny", &sets).unwrap().train)
    }

    #[test]
    fn spikes_are_measured_against_the_trailing_window() {
        let mut g = guard(3.0, 4, 0);
        for l in [2.0, 4.0, 2.0, 4.0] {
            assert_eq!(g.check(l), None, "window not full yet");
            g.record(l, false);
        }
        // Window 2, 4, 2, 4: mean 3, population std 1 (hand computation).
        assert_eq!(g.check(5.9), None);
        assert_eq!(g.check(6.5), Some(SkipReason::LossSpike { zscore: 3.5 }));
        assert_eq!(g.check(-100.0), None, "only rises are spikes");
        assert_eq!(g.check(f64::NAN), Some(SkipReason::NonFiniteLoss));
        // A skipped loss stays out of the window; an applied one pushes the oldest (2.0) out.
        g.record(6.5, true);
        assert_eq!(g.skipped_in_a_row(), 1);
        g.record(3.0, false);
        assert_eq!(g.skipped_in_a_row(), 0);
        // Window 4, 2, 4, 3: mean 3.25, std sqrt(0.6875).
        let z = (6.0 - 3.25) / 0.6875f64.sqrt();
        assert_eq!(g.check(6.0), Some(SkipReason::LossSpike { zscore: z }));
    }

    #[test]
    fn spike_detection_is_off_at_zscore_zero_and_the_stop_counts_in_a_row() {
        let mut g = guard(0.0, 2, 3);
        g.record(1.0, false);
        g.record(1.0, false);
        assert_eq!(g.check(1e6), None);
        g.record(f64::NAN, true);
        g.record(f64::NAN, true);
        assert!(!g.should_stop());
        g.record(1.0, false);
        for _ in 0..3 {
            g.record(f64::NAN, true);
        }
        assert!(g.should_stop());
        assert!(!guard(0.0, 2, 0).should_stop(), "0 never stops");
    }
}
