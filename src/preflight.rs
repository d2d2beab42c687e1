//! What `swallow train --dry-run` checks beyond the configuration, the layout and the data's token
//! ids (done before every run): what the real run will need of the file system and how far it
//! reads the data. The checkpoint `--load` names exists, reads back and holds this model (`auto`:
//! which one it would resume, or a fresh start); the `--save` directory can be written (and has
//! room for a checkpoint, else a warning; nothing is created); and how many epochs of the data the run's samples are. Every problem is
//! one line, all of them in one error; rank 0 checks and every rank returns the verdict.

use crate::checkpoint::format::{self, state_bytes, tensor_names};
use crate::checkpoint::store::LoadTarget;
use crate::config::Config;
use crate::data::blend::BlendedSampler;
use crate::parallel::agree::agree;
use crate::model::ParamTable;
use anyhow::{bail, Result};
use mpi::topology::SimpleCommunicator;
use mpi::traits::Communicator;
use std::path::Path;

/// Collectively: rank 0 checks and prints what it found; an error lists every problem.
pub fn check(cfg: &Config, sampler: &BlendedSampler, world: &SimpleCommunicator) -> Result<()> {
    let verdict = match world.rank() {
        0 => report(cfg, sampler),
        _ => Ok(()),
    };
    agree(world, verdict)
}

fn report(cfg: &Config, sampler: &BlendedSampler) -> Result<()> {
    let t = &cfg.train;
    let mut problems = Vec::new();
    let names = tensor_names(&ParamTable::llama(&cfg.model).specs);
    if let Some(load) = t.load.as_deref() {
        match check_load(cfg, load, &names) {
            Ok(line) => println!("dry run: {line}"),
            Err(e) => problems.push(format!("--load {load}: {e:#}")),
        }
    }
    if let Some(save) = t.save.as_deref() {
        match check_save(Path::new(save), state_bytes(&names)) {
            Ok(line) => println!("dry run: {line}"),
            Err(e) => problems.push(format!("--save {save}: {e:#}")),
        }
    }
    let samples = cfg.batch_schedule()?.consumed_after(t.steps);
    let epochs = samples as f64 / sampler.num_samples().max(1) as f64;
    let ramp = if t.rampup_batch_size.is_some() { ", ramped up" } else { "" };
    println!(
        "dry run: the run reads {samples} samples ({} steps x global batch {}{ramp}): {epochs:.2} epoch(s) of the data ({} samples each){}",
        t.steps, t.global_batch, sampler.num_samples(),
        if epochs > 1.0 { "; documents repeat, in a new order each epoch" } else { "" }
    );
    if problems.is_empty() {
        return Ok(());
    }
    bail!("the dry run found {} problem(s):\n  {}", problems.len(), problems.join("\n  "))
}

/// The checkpoint `--load` would read, checked as the run checks it (complete, this model's
/// tensors and `[model]`).
fn check_load(cfg: &Config, load: &str, names: &[(String, Vec<u64>)]) -> Result<String> {
    let target = LoadTarget::parse(load, cfg.train.save.as_deref().map(Path::new))?;
    // Resolving checks the file as the run does (an exact one's damage is an error).
    let Some(path) = target.resolve(|p| format::check(p, names))? else {
        return Ok("--load auto finds no checkpoint yet: the run starts fresh".into());
    };
    crate::resume::same_model(cfg, &crate::checkpoint::dist::read_root_attributes(&path)?, &path)?;
    Ok(format!("--load reads {}, a checkpoint of this model", path.display()))
}

/// The `--save` directory (or, when it does not exist yet, the nearest existing directory above
/// it, where the run will make it): writable; too little room for a checkpoint of `bytes` is a
/// warning. The dry run creates nothing.
fn check_save(dir: &Path, bytes: f64) -> Result<String> {
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("."));
    let existing = if existing.as_os_str().is_empty() { Path::new(".") } else { existing };
    if !existing.is_dir() {
        bail!("{} is not a directory", existing.display());
    }
    let c = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } != 0 {
        bail!("{} is not writable: {}", existing.display(), std::io::Error::last_os_error());
    }
    let free = crate::checkpoint::dist::free_bytes(existing).unwrap_or(f64::INFINITY);
    // A warning, not a problem: space is freed and quotas change before a job starts.
    if free < bytes {
        log::warn!("--save {}: {} free on its file system, but one checkpoint of this model is {}: the first save would fail", dir.display(), size(free), size(bytes));
    }
    let made = if existing == dir { String::new() } else { format!(" (the run makes it in {})", existing.display()) };
    Ok(format!("--save {} is writable{made}, {} free for checkpoints of {}", dir.display(), size(free), size(bytes)))
}

/// Bytes as MB below a GB, else GB.
fn size(bytes: f64) -> String {
    match bytes < 1e9 {
        true => format!("{:.1} MB", bytes / 1e6),
        false => format!("{:.1} GB", bytes / 1e9),
    }
}
