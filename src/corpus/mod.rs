//! `swallow corpus`: the Swallow corpus refinery, WARC to clean, deduplicated Japanese JSONL, run
//! by every rank of an MPI job over its share of the inputs. One file per stage, in the order the
//! data flows: warc.rs, charset.rs, extract.rs (pre-check and main text; nesting.rs guards the
//! parser), lang.rs, filters.rs (host,
//! NG words, quality, repetition), clean.rs, minhash.rs + dedup.rs (all-to-all by key); run.rs
//! drives them (config.rs: the TOML, one section per stage; report.rs: report.json).

pub mod charset;
pub mod clean;
pub mod config;
pub mod dedup;
pub mod extract;
pub mod filters;
pub mod lang;
pub mod minhash;
pub mod nesting;
pub mod report;
pub mod run;
mod script;
pub mod warc;
