//! The watchdog of a training run: a rank that stops (SIGSTOP, a hung node, a wedged driver) leaves
//! every other rank waiting in a collective forever. Each rank runs a thread that (1) touches a
//! heartbeat file `rank-R` in a directory shared by the run every few seconds, whatever its main
//! thread does, and (2) watches its main thread's progress marks (step boundaries, checkpoint
//! tensors; armed by the first step's end, so loading and the first step may take their time).
//! When no mark came for `train.watchdog_s` seconds, the ranks still alive look at the
//! heartbeats: those not touched lately belong to silent ranks (stopped or gone). The lowest live
//! rank prints one error naming them and every live rank exits, which makes mpirun end the job.
//!
//! The heartbeats live in `--save DIR/.swallow-heartbeat/` (a checkpoint directory is on a file
//! system every node sees), else in the temp directory of rank 0's node (then ranks of other nodes
//! are reported as unknown). The watchdog's thread makes no MPI call.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A heartbeat older than this many heartbeat intervals is silent.
const SILENT_AFTER: u64 = 5;

/// Seconds between heartbeats for a limit of `limit_s`: a twentieth of it, 1 to 10 s (512 ranks
/// touching a file every 10 s is light work for a parallel file system's metadata server).
fn beat_s(limit_s: u64) -> u64 {
    (limit_s / 20).clamp(1, 10)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Progress marks of this rank's main thread, read by the watchdog thread.
struct Marks {
    at_ms: AtomicU64,
    /// The last step whose end was marked; 0: not armed yet.
    step: AtomicU64,
    stop: AtomicBool,
}

static MARKS: Marks = Marks { at_ms: AtomicU64::new(0), step: AtomicU64::new(0), stop: AtomicBool::new(false) };

/// The main thread finished step `step` (arms the watchdog).
pub fn step_done(step: u64) {
    MARKS.step.store(step, Ordering::Relaxed);
    progress();
}

/// The main thread made progress within a step (a checkpoint tensor written or read).
pub fn progress() {
    MARKS.at_ms.store(now_ms(), Ordering::Relaxed);
}

/// A running watchdog thread, stopped when dropped (rank 0 then removes the heartbeats).
pub struct Watchdog {
    thread: Option<std::thread::JoinHandle<()>>,
    dir: PathBuf,
    rank: usize,
}

impl Watchdog {
    /// Starts the watchdog of rank `rank` of `world` ranks with heartbeats in `dir` (created by
    /// the caller), alarmed after `limit_s` seconds without progress.
    pub fn start(dir: PathBuf, rank: usize, world: usize, limit_s: u64) -> Result<Watchdog> {
        let mine = dir.join(format!("rank-{rank}"));
        std::fs::write(&mine, b"").with_context(|| format!("watchdog heartbeat {}", mine.display()))?;
        MARKS.stop.store(false, Ordering::Relaxed);
        progress();
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn({
                let dir = dir.clone();
                move || watch(&dir, rank, world, limit_s)
            })
            .context("starting the watchdog thread")?;
        Ok(Watchdog { thread: Some(thread), dir, rank })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        MARKS.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if self.rank == 0 {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn watch(dir: &Path, rank: usize, world: usize, limit_s: u64) {
    let marks = &MARKS;
    let mine = dir.join(format!("rank-{rank}"));
    while !marks.stop.load(Ordering::Relaxed) {
        // Parked between heartbeats: dropping the Watchdog unparks it at once.
        std::thread::park_timeout(Duration::from_secs(beat_s(limit_s)));
        if marks.stop.load(Ordering::Relaxed) {
            break;
        }
        let _ = std::fs::write(&mine, b""); // the heartbeat is the file's mtime
        let idle_ms = now_ms().saturating_sub(marks.at_ms.load(Ordering::Relaxed));
        if marks.step.load(Ordering::Relaxed) == 0 || idle_ms < limit_s * 1000 {
            continue;
        }
        // A rank that stopped just now still has a fresh heartbeat: give it time to age before
        // calling the job a deadlock of live ranks.
        let silent_s = SILENT_AFTER * beat_s(limit_s);
        let mut waited = 0;
        let (silent, unknown) = loop {
            let (silent, unknown) = silent_ranks(dir, world, silent_s);
            if !silent.is_empty() || waited > silent_s + beat_s(limit_s) {
                break (silent, unknown);
            }
            std::thread::sleep(Duration::from_secs(1));
            let _ = std::fs::write(&mine, b"");
            waited += 1;
        };
        let lowest_live = (0..world).find(|r| !silent.contains(r) && !unknown.contains(r));
        if lowest_live == Some(rank) || lowest_live.is_none() {
            let step = marks.step.load(Ordering::Relaxed);
            let list = |v: &[usize]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ");
            let mut line = format!(
                "error: watchdog: no progress for {} s (train.watchdog_s = {limit_s}) after step {step} on rank {rank};",
                idle_ms / 1000 + waited
            );
            match silent.is_empty() {
                true => line += " every rank is alive but waiting: a deadlock or a collective that never completes",
                false => line += &format!(" silent ranks (no heartbeat for {silent_s} s: stopped, hung or gone): {}", list(&silent)),
            }
            if !unknown.is_empty() {
                line += &format!("; ranks without a heartbeat visible here (another node?): {}", list(&unknown));
            }
            let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("{line}\n").as_bytes());
        } else {
            // The lowest live rank speaks; the others leave it a moment to be heard.
            std::thread::sleep(Duration::from_millis(500));
        }
        // A rank leaving without MPI_Finalize makes mpirun end the whole job.
        unsafe { libc::_exit(1) };
    }
}

/// (silent, unknown): ranks whose heartbeat is older than `silent_s`, and ranks without one.
fn silent_ranks(dir: &Path, world: usize, silent_s: u64) -> (Vec<usize>, Vec<usize>) {
    let (mut silent, mut unknown) = (Vec::new(), Vec::new());
    let now = SystemTime::now();
    for r in 0..world {
        match std::fs::metadata(dir.join(format!("rank-{r}"))).and_then(|m| m.modified()) {
            Ok(t) if now.duration_since(t).unwrap_or_default() > Duration::from_secs(silent_s) => silent.push(r),
            Ok(_) => {}
            Err(_) => unknown.push(r),
        }
    }
    (silent, unknown)
}
