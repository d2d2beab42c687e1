//! Throughput accounting (PaLM FLOPs per token, TFLOP/s, MFU), the rank-0 step line, and the JSONL
//! metrics file: one object per optimizer step with step, loss, lr, grad_norm, tokens_per_s,
//! tflops, mfu, skipped (and a few more: global_batch and consumed_samples among them), flushed line by line so a killed job keeps its history;
//! validation losses are records of their own, `{"kind": "valid", ...}` (`ValidRecord`).

use crate::config::ModelConfig;
use crate::model::params::ParamTable;
use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Training FLOPs per token (PaLM, appendix B): `6 N + 12 L H D T`, N without the input embedding.
pub fn flops_per_token(m: &ModelConfig, seq: usize) -> f64 {
    let n = ParamTable::llama(m).numel_for_flops() as f64;
    6.0 * n + 12.0 * (m.num_layers * m.num_heads * m.head_dim() * seq) as f64
}

#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    /// Achieved TFLOP/s per device.
    pub tflops: f64,
    pub mfu: f64,
    pub skipped: bool,
    /// Samples in this step's global batch (`train.global_batch`, or under ramp-up the ramp's).
    pub global_batch: usize,
    /// Samples read by the steps up to this one.
    pub consumed_samples: u64,
    pub step_time_s: f64,
    pub elapsed_s: f64,
    /// Seconds rank 0 spent in TP, DP and PP communication (waiting included).
    pub comm_s: f64,
    /// Bytes rank 0 sent in each group this step (ring model, see parallel/comm.rs).
    pub tp_bytes: f64,
    pub dp_bytes: f64,
    pub pp_bytes: f64,
    /// Most heap (MB) rank 0 held so far in the steps, above what existed before the trainer.
    pub heap_mb: f64,
    /// Why the step was skipped (src/fault.rs), present only when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<String>,
    /// Rank 0's peak resident memory (VmHWM; the CPU backend's memory), 0 where unknown.
    pub peak_rss_bytes: u64,
    /// Estimated seconds to the last step, at this run's mean step time so far.
    pub eta_s: f64,
    /// The gradient noise scale B_simple in samples (`--log-gns`; src/optim/noise_scale.rs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_scale: Option<f64>,
}

/// A validation loss (`--eval-every`), one line of the metrics file among the step records.
#[derive(Clone, Debug, Serialize)]
pub struct ValidRecord {
    /// Always "valid" (step records have no `kind`).
    pub kind: &'static str,
    pub step: u64,
    pub valid_loss: f64,
    /// Global batches of validation data averaged.
    pub valid_batches: u64,
}

/// This process's peak resident set size (VmHWM in /proc/self/status), where the OS tells it.
pub fn peak_rss_bytes() -> Option<u64> {
    vm_hwm_bytes(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmHWM:   123 kB` line of a /proc/PID/status text, in bytes.
fn vm_hwm_bytes(status: &str) -> Option<u64> {
    let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

/// `1d02h`, `3h25m`, `12m05s`, `42s`: a duration to read at a glance.
pub fn short_duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "?".into();
    }
    let s = seconds.round() as u64;
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m{sec:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

impl StepRecord {
    /// The human step line printed by rank 0 (with the compute/communication split when `parallel`).
    pub fn line(&self, total_steps: u64, parallel: bool) -> String {
        let comm = if parallel {
            format!(
                " (compute {:.3} s, comm {:.3} s: tp {:.1} MB, dp {:.1} MB, pp {:.1} MB)",
                self.step_time_s - self.comm_s,
                self.comm_s,
                self.tp_bytes / 1e6,
                self.dp_bytes / 1e6,
                self.pp_bytes / 1e6
            )
        } else {
            String::new()
        };
        format!(
            "step {:>6}/{total_steps} | global batch {} | loss {:.4} | lr {:.3e} | grad norm {:.3}{} | {:.0} tok/s | {:.3} TFLOP/s | MFU {:.1}% | {:.3} s/step | mem {:.2} GB, heap {:.1} MB | ETA {}{comm}{}",
            self.step,
            self.global_batch,
            self.loss,
            self.lr,
            self.grad_norm,
            self.noise_scale.map_or(String::new(), |b| format!(" | noise scale {b:.0} samples")),
            self.tokens_per_s,
            self.tflops,
            100.0 * self.mfu,
            self.step_time_s,
            self.peak_rss_bytes as f64 / 1e9,
            self.heap_mb,
            short_duration(self.eta_s),
            match &self.skip_reason {
                Some(r) => format!(" | SKIPPED ({r})"),
                None => String::new(),
            }
        )
    }
}

/// Appends one JSON object per step to a file (created with its directory if missing).
pub struct MetricsWriter {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsWriter {
    /// Opens `path` for appending the records of the steps after `resumed_at` (0 for a fresh run).
    /// Records of later steps already in the file (a run that crashed after its last checkpoint,
    /// and is now resumed from it) are dropped first, so that no step appears twice; so is a last
    /// line cut short by a crash. The file is rewritten through a temp file and a rename.
    pub fn open(path: &Path, resumed_at: u64) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("cannot create metrics directory {}", dir.display()))?;
        }
        match std::fs::read_to_string(path) {
            Ok(text) => drop_records_after(path, &text, resumed_at)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read metrics file {}", path.display())),
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open metrics file {} for writing", path.display()))?;
        Ok(MetricsWriter { path: path.to_path_buf(), file })
    }

    pub fn write(&mut self, rec: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(rec)?;
        writeln!(self.file, "{line}").with_context(|| format!("writing {}", self.path.display()))?;
        self.file.flush()?;
        Ok(())
    }
}

/// Rewrites the metrics file `path` (holding `text`) without the records of steps after `step`.
fn drop_records_after(path: &Path, text: &str, step: u64) -> Result<()> {
    let keep = |line: &str| {
        serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v.get("step").and_then(|s| s.as_u64())).is_some_and(|s| s <= step)
    };
    let kept: Vec<&str> = text.lines().filter(|l| keep(l)).collect();
    let dropped = text.lines().count() - kept.len();
    if dropped == 0 {
        return Ok(());
    }
    log::warn!("metrics file {}: dropping {dropped} record(s) past step {step}, where this run starts over", path.display());
    let tmp = path.with_extension("tmp");
    let body: String = kept.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_at_a_resumed_step_drops_the_later_records_and_a_cut_line() {
        let path = std::env::temp_dir().join(format!("swallow-metrics-{}.jsonl", std::process::id()));
        let lines = ["{\"step\":1,\"loss\":9}", "{\"kind\":\"valid\",\"step\":2,\"valid_loss\":8}", "{\"step\":2,\"loss\":8}", "{\"step\":3,\"loss\":7}", "{\"step\":4,\"lo"];
        std::fs::write(&path, lines.join("\n")).unwrap();
        let mut w = MetricsWriter::open(&path, 2).unwrap();
        w.write(&serde_json::json!({"step": 3, "loss": 6.5})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n{}\n{}\n{{\"loss\":6.5,\"step\":3}}\n", lines[0], lines[1], lines[2]));
        drop(w);
        MetricsWriter::open(&path, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "", "a fresh run starts the file over");
        std::fs::remove_file(&path).unwrap();
    }
    use crate::config::Config;

    #[test]
    fn llama2_7b_flops_per_token_matches_the_reference_figure() {
        let c = Config::load("llama2-7b", &[]).unwrap();
        let f = flops_per_token(&c.model, 4096);
        // 6 x (6,738,415,616 parameters - 32,000 x 4,096 input embedding) + 12 x 32 x 32 x 128 x 4096.
        // (REFERENCE.md's "about 4.69e10" is what counting the input embedding too gives.)
        let expected = 6.0 * (6_738_415_616.0 - 32_000.0 * 4096.0) + 12.0 * 32.0 * 32.0 * 128.0 * 4096.0;
        assert!((f / expected - 1.0).abs() < 1e-12, "{f:e} vs {expected:e}");
        assert!((f / 4.61e10 - 1.0).abs() < 0.001);
    }

    #[test]
    fn durations_read_at_a_glance_and_peak_rss_is_read() {
        assert_eq!(short_duration(42.4), "42s");
        assert_eq!(short_duration(725.0), "12m05s");
        assert_eq!(short_duration(3.0 * 3600.0 + 25.0 * 60.0 + 10.0), "3h25m");
        assert_eq!(short_duration(26.0 * 3600.0 + 130.0), "1d02h");
        assert_eq!(short_duration(f64::NAN), "?");
        assert_eq!(vm_hwm_bytes("VmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1 kB\n"), Some(123456 * 1024));
        assert_eq!(vm_hwm_bytes("VmRSS:\t 1 kB\n"), None);
        // This test process has touched more than a megabyte.
        assert!(peak_rss_bytes().expect("Linux has /proc/self/status") > 1 << 20);
    }
}
