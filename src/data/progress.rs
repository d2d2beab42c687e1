//! A one-line progress bar on stderr for long data jobs, drawn only when stderr is a terminal (so
//! logs and pipes get just the final summary line) and at most four times a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    label: String,
    total_bytes: u64,
    start: Instant,
    last: Option<Instant>,
    enabled: bool,
}

impl Progress {
    /// A bar for `total_bytes` of input; `enabled` is further and-ed with "stderr is a terminal".
    pub fn new(label: &str, total_bytes: u64, enabled: bool) -> Self {
        Progress {
            label: label.to_string(),
            total_bytes,
            start: Instant::now(),
            last: None,
            enabled: enabled && std::io::stderr().is_terminal(),
        }
    }

    /// Redraw with `done` input bytes, `documents` and `tokens` so far (rate-limited; the first
    /// call always draws).
    pub fn update(&mut self, done: u64, documents: u64, tokens: u64) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed() < Duration::from_millis(250)) {
            return;
        }
        self.last = Some(Instant::now());
        let frac = if self.total_bytes == 0 { 1.0 } else { (done as f64 / self.total_bytes as f64).min(1.0) };
        let width = 30;
        let full = (frac * width as f64) as usize;
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let line = format!(
            "\r{} [{}{}] {:5.1}% {:.1}/{:.1} MB | {documents} docs | {:.2}M tokens/s\x1b[K",
            self.label,
            "#".repeat(full),
            " ".repeat(width - full),
            100.0 * frac,
            done as f64 / 1e6,
            self.total_bytes as f64 / 1e6,
            tokens as f64 / secs / 1e6
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }

    /// Erase the bar (before the summary line is printed).
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = std::io::stderr().write_all(b"\r\x1b[K");
        }
    }
}
