//! `swallow bench data`: how long the sampler's indices take at corpus scale — 1e7 documents and
//! 1e10 tokens, the size the issue sets. The shard is synthetic: a real `.idx` (document lengths
//! 1..=1999 tokens from a fixed hash, 1000 on average) and a sparse `.bin` of the right size, so it
//! costs ~200 MB of disk, not 20 GB. Timed: opening (and checking) the index, the sampler's set-up,
//! the first sample of epoch 0 (which builds that epoch's shuffled document order and prefix sums),
//! the first sample of epoch 1 (another build), and locating 1e6 more samples of epoch 1 in the
//! cached index (token reads are left out: the holes of a sparse file cost ~7 ms a read here, which
//! says nothing about real shards).

use crate::data::indexed::{with_suffix, IndexedDataset};
use crate::data::indexed_writer::index_bytes;
use crate::data::token_dtype::TokenDtype;
use crate::data::sampler::GptSampler;
use crate::mix::mix64;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Instant;

pub const DOCUMENTS: usize = 10_000_000;
const SEQ_LEN: usize = 4096;

fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let t = Instant::now();
    let v = f()?;
    let s = t.elapsed().as_secs_f64();
    println!("{what:<48} {s:>8.3} s");
    Ok((v, s))
}

/// Write the synthetic shard under `dir`, run the timings, print one line each and a JSON line.
pub fn run(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let prefix = dir.join("bench_index");
    let sizes: Vec<i32> = (0..DOCUMENTS as u64).map(|d| 1 + (mix64(d) % 1999) as i32).collect();
    let tokens: u64 = sizes.iter().map(|&s| s as u64).sum();
    let write = || -> Result<()> {
        std::fs::write(with_suffix(&prefix, ".idx"), index_bytes(TokenDtype::U16, &sizes))?;
        let bin = std::fs::File::create(with_suffix(&prefix, ".bin"))?;
        bin.set_len(tokens * 2)?; // sparse: no blocks written
        Ok(())
    };
    write().with_context(|| format!("writing the synthetic shard {}", prefix.display()))?;
    println!(
        "bench data: {DOCUMENTS} documents, {tokens} tokens (u16), seq_len {SEQ_LEN}; {}",
        prefix.display()
    );
    let result = (|| -> Result<serde_json::Value> {
        let (ds, open) = timed("open + check the index", || IndexedDataset::open(&prefix))?;
        let (s, setup) = timed("sampler set-up", || GptSampler::new(vec![ds], SEQ_LEN, 1234, 1 << 16))?;
        let mut out = vec![0u32; SEQ_LEN + 1];
        let n = s.num_samples();
        let (_, e0) = timed("epoch 0: document shuffle + index + 1st sample", || s.sample(0, &mut out))?;
        let (_, e1) = timed("epoch 1: document shuffle + index + 1st sample", || s.sample(n, &mut out))?;
        let (_, cached) = timed("epoch 1: locate 1e6 more samples (cached index)", || {
            let mut acc = 0usize;
            for i in n + 1..=n + 1_000_000 {
                let (e, j) = s.sample_index(i);
                acc ^= s.epoch_index(Some(e)).locate(j * SEQ_LEN as u64).0;
            }
            Ok(std::hint::black_box(acc))
        })?;
        Ok(serde_json::json!({
            "documents": DOCUMENTS, "tokens": tokens, "samples_per_epoch": n, "seq_len": SEQ_LEN,
            "open_s": open, "setup_s": setup, "epoch0_s": e0, "epoch1_s": e1, "locate_per_sample_s": cached / 1e6,
        }))
    })();
    for ext in [".idx", ".bin"] {
        let _ = std::fs::remove_file(with_suffix(&prefix, ext));
    }
    println!("{}", result?);
    Ok(())
}
