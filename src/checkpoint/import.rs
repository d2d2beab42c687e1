//! `swallow import --hf DIR --out CKPT [--tokenizer NEW.json]`: a Hugging Face Llama directory
//! (Llama 2, Llama 3, Swallow; one or sharded safetensors; bf16, fp16 or fp32) as a checkpoint in
//! the format `--save` writes (format.rs), at step 0 with the weights only (`optimizer_state =
//! "fresh"`: the AdamW moments start at zero when a run first loads it), which
//! `swallow train --load` and `swallow eval --load` read under any layout. With `--tokenizer`, the
//! embedding and the untied LM head are re-arranged into the new vocabulary (vocab.rs) and the
//! new vocabulary size goes into the stored configuration.
//!
//! Tensors stream one at a time from the memory-mapped safetensors into the file (one process),
//! so the model never has to fit in memory at once. `CKPT` is a file (`*.h5`) or a directory,
//! which receives `step-0.h5` and a `latest` marker, so `train --save DIR --load auto` continues
//! from the import. Either is written under a temporary name, checked, then renamed.

use super::dist::{self, AttrValue, TensorPiece};
use super::format::{self, Progress};
use super::hf::{self, HfWeights};
use super::store::{self, Verdict};
use super::vocab::{self, Expansion};
use crate::config::Config;
use crate::model::params::ParamTable;
use crate::progress::ProgressMeter;
use anyhow::{bail, Context, Result};
use mpi::topology::SimpleCommunicator;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the checkpoint goes: the temp file written, and the final one.
fn destination(out: &Path) -> Result<(PathBuf, PathBuf, bool)> {
    if out.extension().is_some_and(|e| e == "h5") {
        let tmp = out.with_extension("h5.tmp");
        return Ok((tmp, out.to_path_buf(), false));
    }
    if !store::list(out)?.is_empty() {
        bail!("--out {}: this directory already holds checkpoints; import into a new directory", out.display());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    Ok((store::temp_path(out, 0), store::final_path(out, 0), true))
}

/// The vocabulary expansion from the HF directory's tokenizer.json to `new_path`.
fn expansion(hf_dir: &Path, old_rows: usize, new_path: &Path) -> Result<Expansion> {
    let old_path = hf_dir.join("tokenizer.json");
    if !old_path.exists() {
        bail!("--tokenizer needs the model's own tokenizer to map the vocabulary: {} does not exist", old_path.display());
    }
    let old = vocab::load_tokenizer(&old_path)?;
    let new = vocab::load_tokenizer(new_path)?;
    vocab::plan(&old, &old_path, old_rows, &new, new_path)
}

/// `swallow import`: returns the checkpoint file written.
pub fn import(hf_dir: &Path, out: &Path, new_tokenizer: Option<&Path>, comm: &SimpleCommunicator) -> Result<PathBuf> {
    let t0 = Instant::now();
    let hf_model = hf::read_config(hf_dir)?;
    let old_table = ParamTable::llama(&hf_model);
    let weights = HfWeights::open(hf_dir, &old_table)?;
    let expand = new_tokenizer.map(|t| expansion(hf_dir, hf_model.vocab_size, t)).transpose()?;
    let mut model = hf_model.clone();
    if let Some(e) = &expand {
        model.vocab_size = e.rows.len();
    }
    // The model from config.json; [train] and [parallel] at their defaults (a run's own config
    // sets them: only [model] must match).
    let label = format!("the model of {}/config.json", hf_dir.display());
    let model = toml::Value::try_from(&model).with_context(|| label.clone())?;
    let text = toml::to_string(&toml::Table::from_iter([("model".to_string(), model)])).with_context(|| label.clone())?;
    let mut cfg = Config::from_toml(&text, &label, &[])?;
    cfg.name = format!("import of {}", hf_dir.display());
    let table = ParamTable::llama(&cfg.model);
    let names = format::tensor_names(&table.specs);
    let (tmp, path, is_dir) = destination(out)?;

    let mut file = dist::Writer::create(&tmp, comm)?;
    let mut meter = ProgressMeter::new("import", format::state_bytes(&names[..table.specs.len()]) as u64, true);
    let vocab_rows = [table.embed, table.lm_head];
    for (p, spec) in table.specs.iter().enumerate() {
        let mut values = weights.tensor(&old_table.specs[p])?;
        if let (Some(e), true) = (&expand, vocab_rows.contains(&p)) {
            values = e.apply(&values, cfg.model.hidden_size);
        }
        let shape = names[p].1.clone();
        file.put(&TensorPiece { name: spec.name.clone(), shape, pieces: vec![(0..values.len() as u64, &values)] })?;
        meter.advance(4 * values.len() as u64);
    }
    drop(meter);
    let mut attrs = format::attributes(&cfg, &Progress { step: 0, consumed_samples: 0, optimizer_updates: 0 }, "tp 1 dp 1 pp 1 zero 0".into())?;
    let source = match new_tokenizer {
        Some(t) => format!("{} with the vocabulary of {}", hf_dir.display(), t.display()),
        None => hf_dir.display().to_string(),
    };
    attrs.push(("imported_from", AttrValue::Str(source)));
    // No optimizer tensors: 12 bytes per parameter of zeros would triple the file.
    attrs.push((format::OPTIMIZER_STATE, AttrValue::Str(format::FRESH.into())));
    file.finish(&attrs)?;
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("flushing {} to disk", tmp.display()))?;
    if let Verdict::Damaged(e) = format::check(&tmp, &names)? {
        return Err(e.context(format!("the checkpoint just written ({}) does not read back", tmp.display())));
    }
    if is_dir {
        store::publish(out, 0, 1, |p| format::check(p, &names))?;
    } else {
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    }
    let vocab_note = match &expand {
        None => String::new(),
        Some(e) => format!(
            " | vocabulary {} -> {}: {} rows copied, {} new rows averaged from the old tokenizer's pieces, {} old tokens dropped",
            hf_model.vocab_size, e.rows.len(), e.copied(), e.rows.len() - e.copied(), e.dropped.len()
        ),
    };
    if let Some(e) = expand.as_ref().filter(|e| !e.dropped.is_empty()) {
        let some: Vec<&String> = e.dropped.iter().take(5).collect();
        log::warn!("{} old tokens are not in the new tokenizer (their rows are dropped), e.g. {some:?}", e.dropped.len());
    }
    println!(
        "import: {} -> {} | {:.2}M parameters, {:.1} MB of fp32 weights (the optimizer state starts fresh at the first load), step 0{vocab_note} | {:.1} s",
        hf_dir.display(), path.display(), table.numel() as f64 / 1e6, format::state_bytes(&names[..table.specs.len()]) / 1e6, t0.elapsed().as_secs_f64()
    );
    Ok(path)
}
