//! `swallow data merge`: concatenate shard sets into one indexed dataset, as Megatron's
//! `tools/merge_datasets.py` does. Token bytes are copied unchanged (no decoding), sequence lengths
//! and document boundaries are kept, and the output is written under temporary names and renamed
//! only when complete (via [`IndexedWriter`]); all inputs are opened and checked before anything is
//! written, and they must share one dtype.

use crate::data::indexed::{with_suffix, IndexedDataset};
use crate::data::indexed_writer::{IndexedWriter, Summary};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Concatenate the datasets at `inputs` (prefixes, in order) into `output` (a prefix).
pub fn merge(inputs: &[PathBuf], output: &Path) -> Result<Summary> {
    if inputs.is_empty() {
        bail!("data merge: no input shards given");
    }
    let datasets = inputs
        .iter()
        .map(|p| IndexedDataset::open(p))
        .collect::<Result<Vec<_>>>()?;
    let dtype = datasets[0].dtype();
    for ds in &datasets[1..] {
        if ds.dtype() != dtype {
            bail!(
                "data merge: {} holds {} tokens but {} holds {}: shards of different dtypes cannot be merged \
                 (re-run swallow prep with one tokenizer)",
                ds.prefix().display(),
                ds.dtype(),
                datasets[0].prefix().display(),
                dtype
            );
        }
    }
    let out_idx = with_suffix(output, ".idx");
    for ds in &datasets {
        if with_suffix(ds.prefix(), ".idx") == out_idx {
            bail!(
                "data merge: the output {} is also an input",
                output.display()
            );
        }
    }
    let mut w = IndexedWriter::create(output, dtype)?;
    for ds in &datasets {
        w.append_dataset(ds)
            .with_context(|| format!("data merge: copying {}", ds.prefix().display()))?;
    }
    w.finish()
}

/// The CLI: merge and print a summary line, then the JSON summary as the last line.
pub fn run(inputs: &[PathBuf], output: &Path) -> Result<Summary> {
    let s = merge(inputs, output)?;
    println!(
        "merged {} shards into {}: {} documents, {} sequences, {} tokens ({}), {} bytes",
        inputs.len(),
        s.prefix.display(),
        s.documents,
        s.sequences,
        s.tokens,
        s.dtype,
        s.bin_bytes + s.idx_bytes
    );
    println!(
        "{}",
        serde_json::json!({
            "prefix": s.prefix.display().to_string(),
            "inputs": inputs.len(),
            "documents": s.documents,
            "sequences": s.sequences,
            "tokens": s.tokens,
            "dtype": s.dtype.name(),
            "bin_bytes": s.bin_bytes,
            "idx_bytes": s.idx_bytes,
        })
    );
    Ok(s)
}
