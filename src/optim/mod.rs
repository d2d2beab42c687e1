//! The optimizer: AdamW with fp32 state, the learning-rate schedule and global grad-norm clipping.
//! (Data parallelism and the ZeRO-1 sharded optimizer will live here too.)

pub mod adamw;
pub mod schedule;

pub use adamw::AdamW;
pub use schedule::LrSchedule;
