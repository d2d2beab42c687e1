//! The check, before step 1 (and in `--dry-run`), that every token id of every shard a run reads
//! is inside the model's vocabulary: one wrong id in the last document would otherwise fail the
//! run at whatever step first samples it, or (an id past a smaller vocabulary) hours in.
//!
//! Per shard the check needs the largest id. The ranks scan the shards that are not in the cache
//! together (rank r the r-th slice of each .bin, several threads each), and one all-reduce gives
//! the maxima. Rank 0 keeps them in a cache keyed by the shard's file identity (path, device,
//! inode, size, modification time of .bin and .idx): `$SWALLOW_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/swallow`, else `~/.cache/swallow`, one small file per shard under
//! `token-ids/`. A changed shard has another identity and is scanned again. On a bad id the whole
//! shard is read on rank 0 to name the first offending token; every rank returns that one error.

use super::indexed::{with_suffix, IndexedDataset};
use super::token_dtype::TokenDtype;
use crate::parallel::agree::agree;
use anyhow::{bail, Result};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::{Communicator, SimpleCommunicator};
use rayon::prelude::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A value that is no token id at all (negative, fractional): larger than any id.
const NOT_AN_ID: u64 = u32::MAX as u64 + 1;

/// What the check found, for the run's summary line.
pub struct Checked {
    pub shards: usize,
    pub scanned: usize,
    pub scanned_bytes: u64,
    pub max_id: u64,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "token ids of {} shard(s) checked against the vocabulary (largest id {}; {} scanned, {:.1} MB, {} from the cache)",
            self.shards, self.max_id, self.scanned, self.scanned_bytes as f64 / 1e6, self.shards - self.scanned
        )
    }
}

/// Collectively checks that every id of `shards` (each opened once; duplicates skipped) is below
/// `vocab`; every rank returns the same result.
pub fn check(shards: &[&IndexedDataset], vocab: usize, comm: &SimpleCommunicator) -> Result<Checked> {
    let mut unique: Vec<&IndexedDataset> = Vec::new();
    for ds in shards {
        if !unique.iter().any(|u| u.prefix() == ds.prefix()) {
            unique.push(ds);
        }
    }
    let keys: Vec<Option<String>> = unique.iter().map(|ds| identity(ds.prefix())).collect();
    // Rank 0's cache decides (nodes may not share a home directory); u64::MAX: not cached.
    let mut maxima: Vec<u64> = match comm.rank() {
        0 => keys.iter().map(|k| k.as_deref().and_then(cached).unwrap_or(u64::MAX)).collect(),
        _ => vec![0; unique.len()],
    };
    comm.process_at_rank(0).broadcast_into(&mut maxima[..]);
    let todo: Vec<usize> = (0..unique.len()).filter(|&i| maxima[i] == u64::MAX).collect();
    let (rank, size) = (comm.rank() as usize, comm.size() as usize);
    let mine: Vec<u64> = todo
        .iter()
        .map(|&i| {
            let (bytes, es) = (unique[i].bin_bytes(), unique[i].dtype().size());
            let n = bytes.len() / es;
            let (a, b) = (n * rank / size, n * (rank + 1) / size);
            largest(unique[i].dtype(), &bytes[a * es..b * es])
        })
        .collect();
    let mut found = vec![0u64; mine.len()];
    comm.all_reduce_into(&mine[..], &mut found[..], SystemOperation::max());
    for (&i, &m) in todo.iter().zip(&found) {
        maxima[i] = m;
        if let (0, Some(key)) = (rank, &keys[i]) {
            remember(key, m);
        }
    }
    let bad = unique.iter().zip(&maxima).find(|(_, &m)| m >= vocab as u64);
    let verdict = match (bad, rank) {
        (Some((ds, _)), 0) => first_bad_token(ds, vocab),
        _ => Ok(()),
    };
    agree(comm, verdict)?;
    Ok(Checked {
        shards: unique.len(),
        scanned: todo.len(),
        scanned_bytes: todo.iter().map(|&i| unique[i].bin_bytes().len() as u64).sum(),
        max_id: maxima.iter().copied().max().unwrap_or(0),
    })
}

/// The largest id in `bytes` (whole elements of `dtype`), `NOT_AN_ID` for a value that is none.
pub fn largest(dtype: TokenDtype, bytes: &[u8]) -> u64 {
    const CHUNK: usize = 1 << 20;
    let es = dtype.size();
    bytes
        .par_chunks(CHUNK * es)
        .map(|c| match dtype {
            TokenDtype::U16 => c.chunks_exact(2).map(|a| u16::from_le_bytes([a[0], a[1]])).max().unwrap_or(0) as u64,
            // Negative i32 ids read as u32 are >= 2^31: past any vocabulary, reported below.
            TokenDtype::I32 => c.chunks_exact(4).map(|a| u32::from_le_bytes([a[0], a[1], a[2], a[3]])).max().unwrap_or(0) as u64,
            other => {
                let mut ids = vec![0u32; c.len() / es];
                match other.decode(c, &mut ids) {
                    Ok(()) => ids.iter().copied().max().unwrap_or(0) as u64,
                    Err(_) => NOT_AN_ID,
                }
            }
        })
        .max()
        .unwrap_or(0)
}

/// The error naming the first token of `ds` outside `vocab` (or that is no id at all).
fn first_bad_token(ds: &IndexedDataset, vocab: usize) -> Result<()> {
    for doc in 0..ds.num_documents() {
        for seq in ds.document_sequences(doc) {
            let ids = ds.sequence(seq)?; // names a value that is no id
            if let Some(k) = ids.iter().position(|&t| t as usize >= vocab) {
                bail!(
                    "{}: token id {} in document {doc} (sequence {seq}, token {k}) is outside the vocabulary of size {vocab} (model.vocab_size): were these shards made with another tokenizer?",
                    with_suffix(ds.prefix(), ".bin").display(),
                    ids[k]
                );
            }
        }
    }
    bail!("{}: the scan found an id >= {vocab}, the document read did not (was the file changed meanwhile?)", ds.prefix().display())
}

/// The cache key of a shard: its files' identities, or None when they cannot be read.
fn identity(prefix: &Path) -> Option<String> {
    let mut key = std::fs::canonicalize(with_suffix(prefix, ".bin")).ok()?.display().to_string();
    for suffix in [".bin", ".idx"] {
        let m = std::fs::metadata(with_suffix(prefix, suffix)).ok()?;
        key += &format!("\n{} {} {} {}.{:09}", m.dev(), m.ino(), m.len(), m.mtime(), m.mtime_nsec());
    }
    Some(key)
}

fn cache_dir() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = var("SWALLOW_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("swallow")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/swallow")))?;
    Some(base.join("token-ids"))
}

/// The cache file of `key`: named by a hash of it; it holds the key (checked on reading) and the
/// largest id.
fn cache_file(key: &str) -> Option<PathBuf> {
    let hash = crate::mix::fnv1a(key.as_bytes());
    Some(cache_dir()?.join(format!("{hash:016x}")))
}

fn cached(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(cache_file(key)?).ok()?;
    let (stored_key, max) = text.rsplit_once("\nmax ")?;
    (stored_key == key).then(|| max.trim().parse().ok()).flatten()
}

/// Stores a shard's largest id (through a temp file and a rename); a cache that cannot be
/// written only costs a scan next time.
fn remember(key: &str, max: u64) {
    let Some(file) = cache_file(key) else { return };
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(file.parent().expect("a cache directory"))
        .and_then(|_| std::fs::write(&tmp, format!("{key}\nmax {max}\n")))
        .and_then(|_| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        log::debug!("token-id cache {}: {e}", file.display());
    }
}
