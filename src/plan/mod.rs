//! The planner (`swallow plan`, and the memory plan of `swallow train --dry-run`): for a model, a
//! GPU kind and a layout (TP x PP x DP, virtual stages, micro-batch, recomputation), what each GPU
//! holds, how long a step takes, and what a token budget costs; `--search` ranks every valid layout
//! that fits. Memory and time are formulas over the parameter table and the real pipeline
//! schedules; every assumption is stated in docs/PLANNER.md and every hardware figure lives in
//! hardware.rs.
//!
//! - hardware.rs: the GPU kinds and their figures (the one table)
//! - memory.rs: bytes per rank, for GPUs (bf16 Megatron-style) and for this build's CPU backend (f32)
//! - time.rs: step time from FLOPs, link bandwidths and the pipeline simulator
//! - search.rs: the valid layouts of a GPU count
//! - report.rs: the `swallow plan` command (table, last line JSON)
//! - launch.rs: the mpirun line and job-script variables of a planned layout
//! - ranks.rs: the plan inside `swallow train` (the dry run; measured vs planned heap per rank)

pub mod hardware;
pub mod launch;
pub mod memory;
pub mod ranks;
pub mod report;
pub mod search;
pub mod time;

use crate::config::Config;
use crate::pipeline::ScheduleKind;
use anyhow::{bail, Context, Result};

pub use crate::config::Recompute;

/// How a run is split over its ranks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub tp: usize,
    pub pp: usize,
    pub vpp: usize,
    pub dp: usize,
    pub micro_batch: usize,
    pub recompute: Recompute,
    /// The ZeRO stage: 0, 1 (distributed optimizer) or 2 (gradients sharded too).
    pub zero: u8,
    pub sequence_parallel: bool,
    pub schedule: ScheduleKind,
}

impl Layout {
    /// The layout `cfg` asks for on `world` ranks, after the same checks `swallow train` makes.
    pub fn from_config(cfg: &Config, world: usize, recompute: Recompute) -> Result<Self> {
        let dp = cfg.data_parallel_size(world)?;
        cfg.check_tensor_parallel()?;
        let p = &cfg.parallel;
        let layout = Layout {
            tp: p.tp,
            pp: p.pp,
            vpp: p.vpp,
            dp,
            micro_batch: cfg.train.micro_batch,
            recompute,
            zero: p.zero,
            sequence_parallel: p.sequence_parallel && p.tp > 1,
            schedule: cfg.schedule_kind()?,
        };
        layout.check(cfg)?;
        Ok(layout)
    }

    /// `cfg` with this layout's parallel settings and micro-batch.
    pub fn apply(&self, cfg: &Config) -> Config {
        let mut c = cfg.clone();
        c.parallel.tp = self.tp;
        c.parallel.pp = self.pp;
        c.parallel.vpp = self.vpp;
        c.parallel.zero = self.zero;
        c.parallel.sequence_parallel = self.sequence_parallel;
        c.parallel.schedule = Some(self.schedule.name().to_string());
        c.train.micro_batch = self.micro_batch;
        c
    }

    pub fn world(&self) -> usize {
        self.tp * self.pp * self.dp
    }

    /// Micro-batches per step on each DP rank.
    pub fn microbatches(&self, global_batch: usize) -> usize {
        global_batch / (self.micro_batch * self.dp)
    }

    /// Tensor-parallel divisibility, batch divisibility, layers over virtual stages, a valid
    /// schedule, and tokens splitting over TP under sequence parallelism.
    pub fn check(&self, cfg: &Config) -> Result<()> {
        let c = self.apply(cfg);
        c.check_tensor_parallel()?;
        c.data_parallel_size(self.world())?;
        crate::pipeline::layers_per_stage(cfg.model.num_layers, self.pp, self.vpp)?;
        crate::pipeline::schedule(self.schedule, self.pp, self.vpp, self.microbatches(cfg.train.global_batch), 0)
            .context("pipeline schedule")?;
        self.schedule.check_recompute(self.recompute)?;
        self.schedule.check_zero(self.zero)?;
        if self.sequence_parallel && !(self.micro_batch * cfg.train.seq_len).is_multiple_of(self.tp) {
            bail!("sequence parallel: micro_batch x seq_len = {} x {} does not split over tp = {}", self.micro_batch, cfg.train.seq_len, self.tp);
        }
        Ok(())
    }

    /// One line: `tp 2 pp 2 vpp 1 dp 8 | micro-batch 1 | 1f1b | recompute selective | ZeRO-1 | SP`.
    pub fn describe(&self) -> String {
        format!(
            "tp {} pp {} vpp {} dp {} | micro-batch {} | {} | recompute {}{}{}",
            self.tp,
            self.pp,
            self.vpp,
            self.dp,
            self.micro_batch,
            self.schedule.name(),
            self.recompute.name(),
            if self.zero > 0 { format!(" | ZeRO-{}", self.zero) } else { String::new() },
            if self.sequence_parallel { " | SP" } else { "" }
        )
    }
}

