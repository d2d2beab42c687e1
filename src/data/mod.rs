//! Token data: Megatron-compatible indexed shards (.bin/.idx: indexed.rs reads, indexed_writer.rs
//! writes, token_dtype.rs the id types), GPT-style sampling, weighted blending
//! of datasets, data specs (`--data`), corpus preparation and shard merging, and the
//! check of every shard's token ids against the vocabulary before a run (token_check.rs).

pub mod batches;
pub mod bench;
pub mod blend;
pub mod epoch;
pub mod indexed;
pub mod indexed_writer;
pub mod inspect;
pub mod merge;
pub mod prep;
pub mod prep_input;
pub mod sampler;
pub mod spec;
pub mod token_check;
pub mod token_dtype;
