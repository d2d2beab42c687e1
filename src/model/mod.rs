//! The Llama model: one parameter table (params.rs), layout-independent init (init.rs), RoPE
//! tables (rope.rs), what part of the model a rank holds (layout.rs: TP shares, pipeline chunks),
//! the layer compute (layer.rs) and the model with its activation slots (llama.rs).

pub mod init;
pub mod layer;
pub mod layout;
pub mod llama;
pub mod params;
pub mod rope;

pub use llama::Llama;
pub use params::{ParamTable, ShardKind};
