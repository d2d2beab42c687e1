//! The optimizer: AdamW or LAMB (`optim.name`; update.rs, lamb.rs) with fp32 state, the
//! learning-rate schedule and global grad-norm clipping. Data parallelism lives here too (zero.rs):
//! gradient all-reduce and the same update on every rank (replicated.rs), or the ZeRO-1 sharded
//! optimizer (its exchange on device buffers: zero_device.rs; a rank's block in per-parameter
//! segments: segment.rs), over one gradient buffer in buckets (grad_layout.rs); the gradient
//! noise scale (`--log-gns`, noise_scale.rs).

pub mod grad_layout;
mod lamb;
pub mod noise_scale;
mod replicated;
pub mod schedule;
mod segment;
mod update;
pub mod zero;
mod zero2;
mod zero_device;

pub use schedule::LrSchedule;
pub use update::StepOutcome;
pub use zero::DataParallelOptimizer;
