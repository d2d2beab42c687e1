//! What a checkpoint file holds (docs/CHECKPOINT.md, format_version 1), in one place for every
//! writer (training's `--save`, `swallow import`) and reader: the tensor names and logical shapes
//! of a parameter table (weights, then the optimizer moments under `optimizer/`), the root attributes,
//! and the check that a file is a complete checkpoint of a given model.

use super::dist::{self, AttrValue};
use super::store::Verdict;
use crate::config::Config;
use crate::model::params::ParamSpec;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Version of the file layout described in docs/CHECKPOINT.md.
pub const FORMAT_VERSION: u64 = 1;

/// Names of the tensors a checkpoint of these parameters holds, with their logical shapes: the
/// parameters, then `optimizer/exp_avg/NAME`, then `optimizer/exp_avg_sq/NAME`.
pub fn tensor_names(specs: &[ParamSpec]) -> Vec<(String, Vec<u64>)> {
    let shape = |s: &ParamSpec| s.shape.iter().map(|&d| d as u64).collect::<Vec<u64>>();
    let mut out: Vec<(String, Vec<u64>)> = specs.iter().map(|s| (s.name.clone(), shape(s))).collect();
    for group in ["exp_avg", "exp_avg_sq"] {
        out.extend(specs.iter().map(|s| (format!("optimizer/{group}/{}", s.name), shape(s))));
    }
    out
}

/// The root attribute (a string) of a checkpoint without optimizer state, and its one value.
pub const OPTIMIZER_STATE: &str = "optimizer_state";
pub const FRESH: &str = "fresh";

/// Whether a checkpoint's attributes say it holds no optimizer state (`swallow import`'s: the
/// AdamW moments start at zero when a run first loads it, and are saved from then on).
pub fn is_fresh(attrs: &BTreeMap<String, AttrValue>) -> bool {
    matches!(attrs.get(OPTIMIZER_STATE), Some(AttrValue::Str(s)) if s == FRESH)
}

/// Whether the checkpoint at `path` stores optimizer moments (opened on this rank alone; only
/// the root attributes are read).
pub fn stores_moments(path: &Path) -> Result<bool> {
    Ok(!is_fresh(&dist::read_root_attributes(path)?))
}

/// Bytes of the logical tensors `names` (fp32).
pub fn state_bytes(names: &[(String, Vec<u64>)]) -> f64 {
    names.iter().map(|(_, s)| dist::tensor_bytes(s)).sum::<u64>() as f64
}

/// Where training stands in a checkpoint.
pub struct Progress {
    /// Optimizer steps taken (training resumes at `step + 1`).
    pub step: u64,
    /// Samples those steps read: where the data stream and, under ramp-up, the batch size and the
    /// learning-rate schedule continue (src/batch_size.rs).
    pub consumed_samples: u64,
    /// The optimizer's update count for bias correction (skipped steps do not count).
    pub optimizer_updates: u64,
}

/// The root attributes of a checkpoint of `cfg` at `progress`; `layout` is informational.
pub fn attributes(cfg: &Config, progress: &Progress, layout: String) -> Result<Vec<(&'static str, AttrValue)>> {
    let t = &cfg.train;
    let config = toml::to_string(cfg).map_err(|e| anyhow::anyhow!("serialising the configuration: {e}"))?;
    Ok(vec![
        ("format_version", AttrValue::U64(FORMAT_VERSION)),
        ("step", AttrValue::U64(progress.step)),
        ("consumed_samples", AttrValue::U64(progress.consumed_samples)),
        ("optimizer_updates", AttrValue::U64(progress.optimizer_updates)),
        ("seed", AttrValue::U64(t.seed)),
        ("data", AttrValue::Str(t.data.clone().unwrap_or_default())),
        ("config", AttrValue::Str(config)),
        ("layout", AttrValue::Str(layout)),
    ])
}

/// Opens `path` on this rank and checks that it is a complete checkpoint (else `Damaged`)
/// holding `names` with their shapes (else an error: a checkpoint of another model); a fresh
/// one (`is_fresh`) holds no `optimizer/` tensors.
pub fn check(path: &Path, names: &[(String, Vec<u64>)]) -> Result<Verdict> {
    let (attrs, shapes) = match dist::inspect(path) {
        Ok(x) => x,
        Err(e) => return Ok(Verdict::Damaged(e)),
    };
    let damaged = |what: String| Ok(Verdict::Damaged(anyhow::anyhow!("checkpoint {}: {what}", path.display())));
    match attrs.get("format_version") {
        Some(AttrValue::U64(FORMAT_VERSION)) => {}
        None => return damaged("no format_version attribute (incomplete)".into()),
        Some(other) => bail!("checkpoint {}: format_version {other:?}, this build reads {FORMAT_VERSION}", path.display()),
    }
    for key in ["step", "optimizer_updates", "consumed_samples"] {
        if !matches!(attrs.get(key), Some(AttrValue::U64(_))) {
            return damaged(format!("no {key} attribute (incomplete)"));
        }
    }
    let fresh = is_fresh(&attrs);
    for (name, shape) in names.iter().filter(|(n, _)| !(fresh && n.starts_with("optimizer/"))) {
        match shapes.get(name) {
            Some(s) if s == shape => {}
            Some(s) => bail!("checkpoint {}: tensor {name} has shape {s:?}, this model expects {shape:?}", path.display()),
            None => bail!("checkpoint {}: tensor {name} is missing (a different model?)", path.display()),
        }
    }
    Ok(Verdict::Usable)
}

/// An integer root attribute.
pub fn attr_u64(attrs: &BTreeMap<String, AttrValue>, key: &str, path: &Path) -> Result<u64> {
    match attrs.get(key) {
        Some(AttrValue::U64(v)) => Ok(*v),
        _ => bail!("checkpoint {}: attribute {key} missing or not an integer", path.display()),
    }
}
