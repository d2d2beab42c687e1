//! Progress of the long jobs (prep, checkpoint save and load, import, export) and the training
//! ETA.
//!
//! `ProgressMeter`: on a terminal, one line on stderr redrawn in place (at most ten times a
//! second) with the share done, the rate and the time left; it is cleared when the copy ends, and
//! the caller prints its one summary line. Off a terminal (a job log) it draws nothing, so a log
//! holds the summary lines only. Under mpirun a rank's stderr is never a terminal (Open MPI
//! forwards it through a pipe), so `SWALLOW_PROGRESS=always` draws there too (`never`: nowhere).
//!
//! `EtaClock`: the training ETA from the steps after the warm-up ones (the first steps compile
//! kernels, touch fresh memory and fill the pipeline; counting them would stretch the ETA of a
//! long run for hours).

use crate::metrics::short_duration;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Time between redraws of a progress line.
const REDRAW: Duration = Duration::from_millis(100);

/// A copy of `total` bytes in progress.
pub struct ProgressMeter {
    what: String,
    total: u64,
    done: u64,
    start: Instant,
    last_drawn: Option<Instant>,
    draws: bool,
}

impl ProgressMeter {
    /// `shown`: whether this process reports (rank 0); it draws only when stderr is a terminal.
    pub fn new(what: impl Into<String>, total: u64, shown: bool) -> Self {
        let draws = shown
            && match std::env::var("SWALLOW_PROGRESS").as_deref() {
                Ok("always") => true,
                Ok("never") => false,
                _ => std::io::stderr().is_terminal(),
            };
        ProgressMeter { what: what.into(), total, done: 0, start: Instant::now(), last_drawn: None, draws }
    }

    /// `bytes` more are done.
    pub fn advance(&mut self, bytes: u64) {
        self.update(self.done + bytes, "");
    }

    /// `done` bytes are done; `detail` follows the line (e.g. prep's documents and tokens/s).
    pub fn update(&mut self, done: u64, detail: &str) {
        self.done = done.min(self.total);
        if !self.draws || self.last_drawn.is_some_and(|t| t.elapsed() < REDRAW) {
            return;
        }
        self.last_drawn = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{}{detail}", progress_line(&self.what, self.done, self.total, self.start.elapsed().as_secs_f64()));
        let _ = err.flush();
    }

    /// Seconds since the meter started.
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

impl Drop for ProgressMeter {
    fn drop(&mut self) {
        if self.last_drawn.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// `checkpoint save: 42% (1.2 of 2.9 GB) | 118 MB/s | 14s left` (MB below a gigabyte).
pub fn progress_line(what: &str, done: u64, total: u64, elapsed_s: f64) -> String {
    let share = if total == 0 { 1.0 } else { done as f64 / total as f64 };
    let rate = done as f64 / elapsed_s.max(1e-9);
    let left = if done == 0 { f64::NAN } else { (total - done) as f64 / rate };
    let (unit, name) = if total >= 1_000_000_000 { (1e9, "GB") } else { (1e6, "MB") };
    format!(
        "{what}: {:.0}% ({:.1} of {:.1} {name}) | {:.0} MB/s | {} left",
        100.0 * share,
        done as f64 / unit,
        total as f64 / unit,
        rate / 1e6,
        short_duration(left)
    )
}

/// The training ETA over the steps after the first `warmup` of this run.
pub struct EtaClock {
    warmup: u64,
    steps_done: u64,
    /// Seconds since the run's first step at the end of the warm-up.
    warm_at: f64,
}

/// Steps of a run left out of its ETA.
pub const ETA_WARMUP_STEPS: u64 = 2;

impl EtaClock {
    pub fn new(warmup: u64) -> Self {
        EtaClock { warmup, steps_done: 0, warm_at: 0.0 }
    }

    /// A step ended `elapsed_s` seconds after the run's first step began, its own step taking
    /// `step_s`, with `remaining` steps to go: the seconds left. During the warm-up the last step
    /// stands for every step; after it, the mean over the steps since (validation and saves
    /// included, as they recur).
    pub fn step_done(&mut self, elapsed_s: f64, step_s: f64, remaining: u64) -> f64 {
        self.steps_done += 1;
        if self.steps_done <= self.warmup {
            self.warm_at = elapsed_s;
            return step_s * remaining as f64;
        }
        let timed = (self.steps_done - self.warmup) as f64;
        (elapsed_s - self.warm_at) / timed * remaining as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_leaves_out_the_slow_first_steps() {
        // A first step of 100 s (kernel compiles), then 1 s steps, 1000 steps in all.
        let mut clock = EtaClock::new(ETA_WARMUP_STEPS);
        let mut elapsed = 0.0;
        let mut eta = 0.0;
        for step in 1..=10u64 {
            let dt = if step == 1 { 100.0 } else { 1.0 };
            elapsed += dt;
            eta = clock.step_done(elapsed, dt, 1000 - step);
        }
        assert!((eta - 990.0).abs() < 1e-9, "{eta}");
        // Counting the first step, as the ETA did, says 10,791 s: the 100 s step spread over all.
        assert!((elapsed / 10.0 * 990.0 - 10_791.0).abs() < 1e-6);
    }

    #[test]
    fn the_progress_line_gives_share_rate_and_time_left() {
        assert_eq!(progress_line("checkpoint save", 1_000_000_000, 4_000_000_000, 2.0), "checkpoint save: 25% (1.0 of 4.0 GB) | 500 MB/s | 6s left");
        assert_eq!(progress_line("import", 0, 20_000_000, 0.0), "import: 0% (0.0 of 20.0 MB) | 0 MB/s | ? left");
    }
}
