//! swallow: a Llama continual-pretraining trainer. Every MPI rank runs the same binary; MPI gives
//! it its place in the tensor x data x pipeline grid. See docs/ARCHITECTURE.md for the map.

pub mod atomic_file;
pub mod backend;
pub mod batch_size;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod data;
pub mod dirlock;
pub mod eval;
pub mod fault;
pub mod memstat;
pub mod metrics;
pub mod mix;
pub mod model;
pub mod optim;
pub mod parallel;
pub mod pipeline;
pub mod plan;
pub mod plot;
pub mod preflight;
pub mod progress;
pub mod resume;
pub mod tokenize;
pub mod train;
pub mod trainer;
pub mod validation;
pub mod watchdog;
