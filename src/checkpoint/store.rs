//! The checkpoint directory and its safety rules: a checkpoint is written as `tmp-step-N.h5`,
//! checked, renamed to `step-N.h5`, and only then named by the `latest` marker (itself replaced
//! by a temp file + rename), so a job killed at any moment leaves the previous checkpoint
//! loadable; the newest K are kept. Resolving `--load` picks a file from a directory (the one
//! `latest` names), a file path, or with `auto` the newest checkpoint that opens cleanly, falling
//! back over truncated or corrupt ones. Pure file-system logic: the writing is dist.rs's.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const LATEST: &str = "latest";

/// `DIR/step-N.h5`.
pub fn final_path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("step-{step}.h5"))
}

/// `DIR/tmp-step-N.h5`, where a checkpoint is written before it is checked and renamed.
pub fn temp_path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("tmp-step-{step}.h5"))
}

/// The step of a `step-N.h5` file name.
fn step_of(name: &str) -> Option<u64> {
    name.strip_prefix("step-")?.strip_suffix(".h5")?.parse().ok()
}

/// Complete checkpoints in `dir` (by name), newest first.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("listing checkpoint directory {}", dir.display())),
    };
    for e in rd {
        let e = e.with_context(|| format!("listing checkpoint directory {}", dir.display()))?;
        if let Some(step) = e.file_name().to_str().and_then(step_of) {
            out.push((step, e.path()));
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0));
    Ok(out)
}

/// Renames the checked temp file to its final name, points `latest` at it, removes stale temp
/// files and keeps `keep` checkpoints: the one just written, which is never removed, and the
/// newest `keep - 1` others that `check` finds usable; older usable ones are removed. A file that
/// does not check out (damaged, or another model's) neither counts nor is removed: a damaged
/// newer file never costs a good older one, and a directory holding higher steps of an earlier
/// run never costs the checkpoint just written. Called by one rank.
pub fn publish(dir: &Path, step: u64, keep: usize, check: impl Fn(&Path) -> Result<Verdict>) -> Result<PathBuf> {
    let (tmp, fin) = (temp_path(dir, step), final_path(dir, step));
    std::fs::rename(&tmp, &fin).with_context(|| format!("renaming {} to {}", tmp.display(), fin.display()))?;
    let marker_tmp = dir.join(format!("{LATEST}.tmp"));
    let name = fin.file_name().expect("a file name").to_string_lossy().to_string();
    std::fs::write(&marker_tmp, format!("{name}\n")).with_context(|| format!("writing {}", marker_tmp.display()))?;
    std::fs::rename(&marker_tmp, dir.join(LATEST)).with_context(|| format!("updating {}", dir.join(LATEST).display()))?;
    // The renames are durable once the directory is flushed.
    std::fs::File::open(dir).and_then(|d| d.sync_all()).with_context(|| format!("flushing directory {}", dir.display()))?;
    let mut kept = 1;
    for (_, old) in list(dir)?.into_iter().filter(|(_, p)| *p != fin) {
        match check(&old) {
            Ok(Verdict::Usable) if kept < keep.max(1) => kept += 1,
            Ok(Verdict::Usable) => std::fs::remove_file(&old).with_context(|| format!("removing old checkpoint {}", old.display()))?,
            Ok(Verdict::Damaged(e)) => log::warn!("retention: {} does not read back, so it is not counted or removed: {e:#}", old.display()),
            Err(e) => log::warn!("retention: {} is not counted or removed: {e:#}", old.display()),
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_name().to_str().is_some_and(|n| n.starts_with("tmp-step-")) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    Ok(fin)
}

/// The checkpoint file `latest` in `dir` names, or None when there is no marker.
pub fn latest(dir: &Path) -> Result<Option<PathBuf>> {
    let marker = dir.join(LATEST);
    let text = match std::fs::read_to_string(&marker) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", marker.display())),
    };
    let name = text.trim();
    if step_of(name).is_none() {
        bail!("{}: expected a checkpoint file name step-N.h5, found {name:?}", marker.display());
    }
    Ok(Some(dir.join(name)))
}

/// The checkpoint file `--load PATH` names: PATH itself, or the one a directory's `latest` names.
pub fn checkpoint_file(path: &Path) -> Result<PathBuf> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    match latest(path)? {
        Some(f) => Ok(f),
        None => bail!("--load {}: no `{LATEST}` marker in this directory (no complete checkpoint)", path.display()),
    }
}

/// What a check of a candidate checkpoint found.
pub enum Verdict {
    Usable,
    /// Truncated, corrupt or incomplete: `auto` skips it, an explicit `--load` reports it.
    Damaged(anyhow::Error),
}

/// What `--load` asks for.
pub enum LoadTarget {
    /// A checkpoint file, or a directory's `latest`: errors are reported, not skipped.
    Exact(PathBuf),
    /// `--load auto`: the newest checkpoint of the save directory that is not damaged, else a
    /// fresh start.
    Auto(PathBuf),
}

impl LoadTarget {
    /// `--load VALUE` with `save_dir` from `--save` (needed by `auto`).
    pub fn parse(value: &str, save_dir: Option<&Path>) -> Result<LoadTarget> {
        if value == "auto" {
            let dir = save_dir.context("--load auto needs --save DIR (the directory it resumes from)")?;
            return Ok(LoadTarget::Auto(dir.to_path_buf()));
        }
        Ok(LoadTarget::Exact(PathBuf::from(value)))
    }

    /// The checkpoint file to load, or None for a fresh start. `check` opens a candidate: an
    /// error from it (a checkpoint of another model, say) is always an error.
    pub fn resolve(&self, check: impl Fn(&Path) -> Result<Verdict>) -> Result<Option<PathBuf>> {
        let exact = |file: PathBuf| match check(&file)? {
            Verdict::Usable => Ok(Some(file)),
            Verdict::Damaged(e) => Err(e),
        };
        match self {
            LoadTarget::Exact(p) => exact(checkpoint_file(p)?),
            LoadTarget::Auto(dir) => {
                let mut candidates = list(dir)?;
                match latest(dir) {
                    // The marker's file first: it is newest unless the marker is stale.
                    Ok(Some(l)) => {
                        candidates.retain(|(_, p)| *p != l);
                        candidates.insert(0, (0, l));
                    }
                    Ok(None) => {}
                    Err(e) => log::warn!("--load auto: ignoring the `{LATEST}` marker, taking the newest checkpoint that reads back: {e:#}"),
                }
                for (_, c) in candidates {
                    match check(&c)? {
                        Verdict::Usable => return Ok(Some(c)),
                        Verdict::Damaged(e) => log::warn!("--load auto: skipping {}: {e:#}", c.display()),
                    }
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("swallow-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A stand-in for format::check: a file holding "bad" is damaged.
    fn readable(p: &Path) -> Result<Verdict> {
        Ok(match std::fs::read(p)?.as_slice() {
            b"bad" => Verdict::Damaged(anyhow::anyhow!("truncated")),
            _ => Verdict::Usable,
        })
    }

    /// Retention keeps what it just wrote (and `latest` names it) when the directory holds higher
    /// steps of an earlier run, and a damaged newer file does not cost a good older one.
    #[test]
    fn retention_never_removes_the_new_checkpoint_and_skips_damaged_ones() {
        let d = tmpdir("earlier-run");
        for step in [80, 90, 100] {
            std::fs::write(final_path(&d, step), b"x").unwrap();
        }
        std::fs::write(temp_path(&d, 5), b"x").unwrap();
        publish(&d, 5, 3, readable).unwrap();
        assert!(final_path(&d, 5).exists(), "the checkpoint just written was removed");
        assert_eq!(latest(&d).unwrap(), Some(final_path(&d, 5)));
        let steps: Vec<u64> = list(&d).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![100, 90, 5]);
        // Import's keep of 1 into such a directory keeps its step 0 too.
        std::fs::write(temp_path(&d, 0), b"x").unwrap();
        publish(&d, 0, 1, readable).unwrap();
        assert_eq!(latest(&d).unwrap(), Some(final_path(&d, 0)));
        assert!(final_path(&d, 0).exists());

        let d = tmpdir("damaged");
        std::fs::write(final_path(&d, 8), b"x").unwrap();
        std::fs::write(final_path(&d, 9), b"bad").unwrap();
        std::fs::write(temp_path(&d, 10), b"x").unwrap();
        publish(&d, 10, 2, readable).unwrap();
        let steps: Vec<u64> = list(&d).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![10, 9, 8], "the good step 8 must stay; the damaged 9 is not counted");
    }

    #[test]
    fn publish_renames_marks_latest_and_keeps_the_newest_k() {
        let d = tmpdir("keep");
        for step in [2, 4, 6, 8] {
            std::fs::write(temp_path(&d, step), b"x").unwrap();
            publish(&d, step, 2, readable).unwrap();
        }
        std::fs::write(temp_path(&d, 9), b"half").unwrap(); // a save killed mid-way
        let steps: Vec<u64> = list(&d).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![8, 6]);
        assert_eq!(latest(&d).unwrap(), Some(final_path(&d, 8)));
        let ok = |p: &Path| Ok(if p.exists() { Verdict::Usable } else { Verdict::Damaged(anyhow::anyhow!("missing")) });
        assert_eq!(LoadTarget::Exact(d.clone()).resolve(ok).unwrap(), Some(final_path(&d, 8)));
    }

    #[test]
    fn auto_falls_back_over_bad_checkpoints_and_starts_fresh_without_any() {
        let d = tmpdir("auto");
        let target = LoadTarget::parse("auto", Some(&d)).unwrap();
        assert_eq!(target.resolve(|_| Ok(Verdict::Usable)).unwrap(), None);
        for step in [3, 6] {
            std::fs::write(temp_path(&d, step), b"x").unwrap();
            publish(&d, step, 3, readable).unwrap();
        }
        let bad = final_path(&d, 6);
        let check = |p: &Path| Ok(if *p == bad { Verdict::Damaged(anyhow::anyhow!("truncated")) } else { Verdict::Usable });
        assert_eq!(target.resolve(check).unwrap(), Some(final_path(&d, 3)));
        let e = LoadTarget::Exact(d.clone()).resolve(check).unwrap_err();
        assert!(e.to_string().contains("truncated"));
        // A checkpoint of another model is not skipped: it is an error.
        let e = target.resolve(|_| -> Result<Verdict> { bail!("another model") }).unwrap_err();
        assert!(e.to_string().contains("another model"));
        assert!(LoadTarget::parse("auto", None).is_err());
        let empty = tmpdir("empty");
        let e = LoadTarget::Exact(empty).resolve(|_| Ok(Verdict::Usable)).unwrap_err();
        assert!(e.to_string().contains("latest"), "{e}");
    }
}
