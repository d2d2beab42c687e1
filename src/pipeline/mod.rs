//! Pipeline parallelism (PP): schedules as data. `schedule` generates each rank's list of actions
//! (GPipe, 1F1B, interleaved 1F1B over virtual stages) and the layer layout over virtual stages;
//! `simulate` runs all ranks' lists together to check them and measure the bubble. The executor
//! that runs a list over MPI builds on these.

pub mod schedule;
pub mod simulate;
#[cfg(test)]
mod tests;

pub use schedule::{
    layers_per_stage, schedule, schedule_all, stage_layers, virtual_stage, Action, Message,
    ScheduleKind, SendMode,
};
pub use simulate::{simulate, SimConfig, SimReport};
