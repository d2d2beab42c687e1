//! The Llama model: one parameter table (params.rs), layout-independent init (init.rs), RoPE
//! tables (rope.rs), and the explicit forward/backward over the backend trait (llama.rs).

pub mod init;
pub mod llama;
pub mod params;
pub mod rope;

pub use llama::Llama;
pub use params::{ParamTable, ShardKind};
