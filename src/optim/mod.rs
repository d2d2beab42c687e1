//! The optimizer: AdamW with fp32 state, the learning-rate schedule and global grad-norm clipping.
//! Data parallelism lives here too (zero.rs): gradient all-reduce, or the ZeRO-1 sharded optimizer
//! (its exchange on device buffers: zero_device.rs; a rank's block in per-parameter segments:
//! segment.rs), over one gradient buffer in buckets (grad_layout.rs); the gradient noise scale
//! (`--log-gns`, noise_scale.rs).

pub mod adamw;
pub mod grad_layout;
pub mod noise_scale;
pub mod schedule;
mod segment;
pub mod zero;
mod zero_device;

pub use adamw::AdamW;
pub use schedule::LrSchedule;
pub use zero::DataParallelOptimizer;
