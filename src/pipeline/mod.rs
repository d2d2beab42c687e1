//! Pipeline parallelism (PP): schedules as data. `schedule` generates each rank's list of actions
//! (GPipe, 1F1B, interleaved 1F1B over virtual stages) and the layer layout over virtual stages;
//! `simulate` runs all ranks' lists together to check them and measure the bubble; `executor`
//! runs a rank's list on its model chunks, with activations and gradients crossing stages over MPI.

pub mod executor;
pub mod schedule;
pub mod simulate;
#[cfg(test)]
mod tests;

pub use schedule::{
    layers_per_stage, schedule, schedule_all, stage_layers, virtual_stage, Action, Message,
    ScheduleKind, SendMode,
};
pub use executor::{Executor, ParamEvents};
pub use simulate::{simulate, SimConfig, SimReport};
