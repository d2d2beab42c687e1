//! Token data: Megatron-compatible indexed shards (.bin/.idx), GPT-style sampling, corpus preparation.

pub mod indexed;
pub mod inspect;
pub mod prep;
pub mod sampler;
