//! Saving and restoring the training state (model weights, optimizer moments and step count, progress)
//! as logical tensors in one distributed checkpoint: the glue between this rank's place in the
//! layout (TP shard, ZeRO segments) and checkpoint/dist.rs's global element ranges.
//!
//! Writing: each element is written by exactly one rank. A TP shard maps to global ranges through
//! the parameter table (`local_ranges`); vocabulary padding rows are cut off (the file holds the
//! real vocabulary). With ZeRO-1 every rank writes its DP block's segments of weights and
//! moments (the fp32 master weights are the weights); without it DP rank 0 writes whole shards;
//! TP-replicated parameters come from TP rank 0 only. The state streams to the file tensor by
//! tensor through one host buffer (no second copy of it in memory). Reading: every rank reads its
//! whole shard of the weights and the moments of the state it holds, whatever layout wrote the
//! file (resharding).
//!
//! SIGTERM and SIGUSR1 (Slurm's and PBS's walltime warnings) only raise a flag; at each step
//! boundary the ranks agree on it (an all-reduce), save and stop.

use crate::backend::Backend;
use crate::checkpoint::dist::{self, AttrValue, TensorPiece, TensorRequest};
use crate::checkpoint::format::{self, attr_u64, check, state_bytes, tensor_names, Progress};
use crate::checkpoint::store::{self, LoadTarget, Verdict};
use crate::config::Config;
use crate::parallel::agree::agree;
use crate::parallel::Topology;
use crate::model::params::ParamSpec;
use crate::model::Llama;
use crate::optim::DataParallelOptimizer;
use crate::progress::ProgressMeter;
use anyhow::{bail, Context, Result};
use mpi::topology::SimpleCommunicator;
use mpi::collective::{CommunicatorCollectives, SystemOperation};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Set by SIGTERM or SIGUSR1 once `catch_stop_signals` has run.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM and SIGUSR1 request a save and a clean stop at the next step boundary.
pub fn catch_stop_signals() -> Result<()> {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGUSR1, "SIGUSR1")] {
        let handler = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if unsafe { libc::signal(sig, handler) } == libc::SIG_ERR {
            bail!("cannot install the {name} handler");
        }
    }
    Ok(())
}

/// Whether any rank caught a stop signal: a collective over `world`, called by every rank at
/// every step boundary, so all ranks stop after the same step.
pub fn stop_requested(world: &SimpleCommunicator) -> bool {
    let local = STOP.load(Ordering::SeqCst) as i32;
    let mut any = 0i32;
    world.all_reduce_into(&local, &mut any, SystemOperation::max());
    any != 0
}

/// The elements `local` of this rank's shard of `spec` as (global range, local range) pairs,
/// without the vocabulary padding (global elements past the logical tensor).
fn global_pieces(spec: &ParamSpec, tp: usize, tp_rank: usize, local: Range<usize>) -> Vec<(Range<u64>, Range<usize>)> {
    let numel = spec.numel() as u64;
    let mut out = Vec::new();
    let mut at = 0usize;
    for g in spec.local_ranges(tp, tp_rank) {
        let len = (g.end - g.start) as usize;
        let (a, b) = (local.start.max(at), local.end.min(at + len));
        if a < b {
            let gs = g.start + (a - at) as u64;
            let ge = (g.start + (b - at) as u64).min(numel);
            if gs < ge {
                out.push((gs..ge, a..a + (ge - gs) as usize));
            }
        }
        at += len;
    }
    out
}

/// Splits `buf` into the disjoint, ascending `local` ranges of `pieces`, each with its global range.
fn carve<'a>(mut buf: &'a mut [f32], pieces: Vec<(Range<u64>, Range<usize>)>) -> Vec<(Range<u64>, &'a mut [f32])> {
    let mut out = Vec::new();
    let mut at = 0;
    for (g, l) in pieces {
        let (_, rest) = std::mem::take(&mut buf).split_at_mut(l.start - at);
        let (piece, rest) = rest.split_at_mut(l.end - l.start);
        out.push((g, piece));
        buf = rest;
        at = l.end;
    }
    out
}

/// Collectively saves the state after `step` steps that consumed `consumed_samples` into `dir`
/// (see store.rs for the safety rules) and returns the checkpoint's path. Rank 0 prints what it
/// wrote and how fast.
#[allow(clippy::too_many_arguments)]
pub fn save<B: Backend>(
    dir: &Path,
    world: &SimpleCommunicator,
    topo: &Topology,
    cfg: &Config,
    model: &Llama<B>,
    opt: &DataParallelOptimizer<B>,
    step: u64,
    consumed_samples: u64,
) -> Result<PathBuf> {
    let t0 = Instant::now();
    if topo.rank == 0 {
        std::fs::create_dir_all(dir).with_context(|| format!("creating checkpoint directory {}", dir.display()))?;
    }
    world.barrier();
    let be = &*model.backend;
    let specs = &model.table.specs;
    let names = tensor_names(specs);
    let n = specs.len();
    // One copy of everything: DP rank 0 (or each rank its ZeRO block), and of a shard held by
    // several ranks (TP-replicated, replicated KV heads, a tied embedding on two stages) the copy
    // that counts in the gradient norm. `mine[p]`: the indices of `ranges` this rank writes of p.
    let writes_shards = opt.is_sharded() || topo.dp_rank == 0;
    let counted = model.counted_in_norm();
    let ranges = opt.state_ranges();
    let mut mine: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, (p, _)) in ranges.iter().enumerate() {
        if writes_shards && counted[*p] {
            mine[*p].push(i);
        }
    }
    let t = &cfg.train;
    let layout = format!("tp {} dp {} pp {} zero {}", topo.tp, topo.dp, topo.pp, cfg.parallel.zero);
    let attrs = format::attributes(cfg, &Progress { step, consumed_samples, optimizer_updates: opt.updates() }, layout)?;
    let tmp = store::temp_path(dir, step);
    let mut file = dist::Writer::create(&tmp, world)?;
    // Tensor by tensor (weights, exp_avg, exp_avg_sq) through one host buffer: the host holds one
    // tensor's shard at a time, not a second copy of the whole state.
    let mut host: Vec<f32> = Vec::new();
    let mut meter = ProgressMeter::new(format!("checkpoint save of step {step}"), state_bytes(&names) as u64, topo.rank == 0);
    for (k, (name, shape)) in names.iter().enumerate() {
        let (group, p) = (k / n, k % n);
        host.clear();
        let mut at: Vec<(Range<u64>, Range<usize>)> = Vec::new();
        if group == 0 && !mine[p].is_empty() && !opt.is_sharded() {
            host.resize(be.len(&model.weights[p]), 0.0);
            be.download_into(&model.weights[p], &mut host);
            for &i in &mine[p] {
                at.extend(global_pieces(&specs[p], topo.tp, topo.tp_rank, ranges[i].1.clone()));
            }
        } else {
            // Moments, and under ZeRO-1 the weights too: from the fp32 segments of this rank's
            // block (the model's weights may be bf16 copies).
            for &i in &mine[p] {
                let local = &ranges[i].1;
                let base = host.len();
                host.resize(base + local.len(), 0.0);
                match group {
                    0 => opt.download_master_into(be, i, &mut host[base..]),
                    _ => opt.download_moment_into(be, i, group == 2, &mut host[base..]),
                }
                for (g, l) in global_pieces(&specs[p], topo.tp, topo.tp_rank, local.clone()) {
                    at.push((g, base + l.start - local.start..base + l.end - local.start));
                }
            }
        }
        let pieces = at.into_iter().map(|(g, l)| (g, &host[l])).collect();
        file.put(&TensorPiece { name: name.clone(), shape: shape.clone(), pieces })?;
        meter.advance(dist::tensor_bytes(shape));
        crate::watchdog::progress();
        if k == names.len() / 2 {
            pause_mid_save_for_tests(topo.rank);
        }
    }
    file.finish(&attrs)?;
    // Durable before it is renamed: every rank flushes the file (on a parallel file system a
    // client's fsync covers the writes of that client).
    let synced = std::fs::File::open(&tmp).and_then(|f| f.sync_all()).with_context(|| format!("flushing {} to disk", tmp.display()));
    let written = t0.elapsed().as_secs_f64();
    let synced = agree(world, synced);
    if synced.is_err() && topo.rank == 0 {
        let _ = std::fs::remove_file(&tmp);
    }
    synced?;
    // Rank 0 checks and publishes; every rank returns its verdict.
    let published = match topo.rank {
        0 => check_and_publish(dir, &tmp, step, t.keep_checkpoints, &names),
        _ => Ok(store::final_path(dir, step)),
    };
    let path = agree(world, published)?;
    if topo.rank == 0 {
        let bytes = state_bytes(&names);
        println!(
            "checkpoint: step {step} -> {} | {:.1} MB written and flushed in {:.3} s ({:.0} MB/s), {:.3} s with check and rename",
            path.display(), bytes / 1e6, written, bytes / 1e6 / written, t0.elapsed().as_secs_f64()
        );
    }
    world.barrier();
    Ok(path)
}

/// Rank 0's part of a save: the temp file reads back, then it becomes `latest` (store::publish);
/// a temp file that fails is removed, the previous checkpoints and `latest` stay.
fn check_and_publish(dir: &Path, tmp: &Path, step: u64, keep: usize, names: &[(String, Vec<u64>)]) -> Result<PathBuf> {
    let verdict = check(tmp, names).and_then(|v| match v {
        Verdict::Usable => Ok(()),
        Verdict::Damaged(e) => Err(e.context(format!("the checkpoint just written ({}) does not read back", tmp.display()))),
    });
    if let Err(e) = verdict {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    store::publish(dir, step, keep, |p| check(p, names))
}

/// This run's `[model]` equals the checkpoint's, but for the keys train.change_model names (a
/// deliberate change, said aloud); else an error naming every differing key with both values.
pub fn same_model(cfg: &Config, attrs: &std::collections::BTreeMap<String, AttrValue>, path: &Path) -> Result<()> {
    let Some(AttrValue::Str(text)) = attrs.get("config") else { return Ok(()) };
    let saved = Config::from_toml(text, &format!("the config stored in {}", path.display()), &[])?;
    let (allowed, refused): (Vec<_>, Vec<_>) = cfg
        .model_differences(&saved.model)
        .into_iter()
        .partition(|(k, _, _)| cfg.train.change_model.iter().any(|c| k == c || k.strip_prefix("model.") == Some(c.as_str())));
    for (k, ours, theirs) in &allowed {
        log::warn!("{k} changes from {theirs} (checkpoint {}) to {ours} (--change-model)", path.display());
    }
    if !refused.is_empty() {
        let list: Vec<String> = refused.iter().map(|(k, ours, theirs)| format!("{k} = {ours} here, {theirs} in the checkpoint")).collect();
        bail!(
            "checkpoint {}: this run's model differs: {}; drop --config to take the model from the checkpoint, or say --change-model KEY for a deliberate change (e.g. rope_theta for a longer context)",
            path.display(), list.join("; ")
        );
    }
    Ok(())
}

/// The configuration of a run that names no `--config` but loads a checkpoint: the checkpoint's
/// `[model]` and `[train]` (an imported one's: its model and the defaults) without what belongs to
/// one invocation (where it loads, saves and logs: train.load, save, save_every, metrics,
/// change_model), the default `[parallel]` (a layout is the job's), then `overrides`. `load` is
/// `--load`'s value (`auto` looks in `save`).
pub fn config_from_checkpoint(load: &str, save: Option<&Path>, overrides: &[String]) -> Result<Config> {
    let Some(file) = checkpoint_to_read(load, save)? else {
        bail!("--load auto: no checkpoint in {} to take the model from yet; pass --config for the first run", save.map_or("?".into(), |s| s.display().to_string()));
    };
    let stored = crate::checkpoint::export::read_config(&file)?;
    let label = format!("the configuration stored in {}", file.display());
    let mut table = toml::Table::try_from(&stored).with_context(|| label.clone())?;
    table.remove("parallel");
    if let Some(toml::Value::Table(train)) = table.get_mut("train") {
        for key in ["load", "save", "save_every", "metrics", "change_model"] {
            train.remove(key);
        }
    }
    let text = toml::to_string(&table).with_context(|| label.clone())?;
    Config::from_toml(&text, &label, overrides)
}

/// The checkpoint file `--load` names (`auto`: the newest in `save`, None while there is none).
fn checkpoint_to_read(load: &str, save: Option<&Path>) -> Result<Option<PathBuf>> {
    Ok(match LoadTarget::parse(load, save)? {
        LoadTarget::Exact(p) => Some(store::checkpoint_file(&p)?),
        LoadTarget::Auto(dir) => store::latest(&dir).ok().flatten().or_else(|| store::list(&dir).ok()?.first().map(|c| c.1.clone())),
    })
}

/// A run with its own --config keeps the special token ids of the checkpoint it loads where its
/// config has none, so that its checkpoints and exports still carry them. Best effort: a
/// checkpoint that cannot be read is reported by the load itself.
pub fn inherit_token_ids(cfg: &mut Config, load: &str, save: Option<&Path>) {
    let Ok(Some(file)) = checkpoint_to_read(load, save) else { return };
    if let Ok(stored) = crate::checkpoint::export::read_config(&file) {
        let m = &mut cfg.model;
        m.bos_token_id = m.bos_token_id.or(stored.model.bos_token_id);
        m.eos_token_id = m.eos_token_id.or(stored.model.eos_token_id);
    }
}

/// Test hook: with `SWALLOW_TEST_SAVE_PAUSE_S=S` in the environment, every rank prints its pid and
/// sleeps S seconds once half of a checkpoint's tensors are in the temp file, so that
/// tests/checkpoint.rs can kill a job in the middle of a save. Unset, it does nothing.
fn pause_mid_save_for_tests(rank: usize) {
    if let Some(s) = std::env::var("SWALLOW_TEST_SAVE_PAUSE_S").ok().and_then(|v| v.parse::<f64>().ok()) {
        println!("test hook: rank {rank} (pid {}) pausing mid-save for {s} s", std::process::id());
        let _ = std::io::Write::flush(&mut std::io::stdout());
        std::thread::sleep(std::time::Duration::from_secs_f64(s));
    }
}

/// Collectively restores the state from the checkpoint `target` resolves to (under any layout)
/// and returns where its training stood, or None when `auto` finds no checkpoint (a fresh start).
pub fn load<B: Backend>(
    target: &LoadTarget,
    world: &SimpleCommunicator,
    topo: &Topology,
    cfg: &Config,
    model: &mut Llama<B>,
    opt: &mut DataParallelOptimizer<B>,
) -> Result<Option<Progress>> {
    let t0 = Instant::now();
    let specs = model.table.specs.clone();
    let names = tensor_names(&specs);
    let Some(path) = target.resolve(|p| check(p, &names))? else {
        if topo.rank == 0 {
            println!("checkpoint: --load auto found no checkpoint, starting fresh");
        }
        return Ok(None);
    };
    // An imported checkpoint holds weights only: its moments start at zero (format::is_fresh).
    let with_moments = format::stores_moments(&path)?;
    let be = model.backend.clone();
    let mut weights: Vec<Vec<f32>> = model.weights.iter().map(|w| be.download(w)).collect();
    let ranges = opt.state_ranges();
    let mut moments: Vec<(Vec<f32>, Vec<f32>)> = ranges.iter().map(|(_, r)| (vec![0.0; r.len()], vec![0.0; r.len()])).collect();
    let n = specs.len();
    let stored = if with_moments { &names[..] } else { &names[..n] };
    let mut requests: Vec<TensorRequest> =
        stored.iter().map(|(name, shape)| TensorRequest { name: name.clone(), shape: shape.clone(), pieces: Vec::new() }).collect();
    for (p, w) in weights.iter_mut().enumerate() {
        let pieces = global_pieces(&specs[p], topo.tp, topo.tp_rank, 0..w.len());
        requests[p].pieces = carve(w, pieces);
    }
    for ((p, local), (m, v)) in ranges.iter().zip(moments.iter_mut()).filter(|_| with_moments) {
        let pieces: Vec<_> = global_pieces(&specs[*p], topo.tp, topo.tp_rank, local.clone())
            .into_iter()
            .map(|(g, l)| (g, l.start - local.start..l.end - local.start))
            .collect();
        requests[n + p].pieces.extend(carve(m, pieces.clone()));
        requests[2 * n + p].pieces.extend(carve(v, pieces));
    }
    let t_read = Instant::now();
    let attrs = dist::read(&path, world, &mut requests, Some(&mut ProgressMeter::new("checkpoint load", state_bytes(stored) as u64, topo.rank == 0)))?;
    let read_s = t_read.elapsed().as_secs_f64();
    drop(requests);
    agree(world, same_model(cfg, &attrs, &path))?;
    let step = attr_u64(&attrs, "step", &path)?;
    let consumed = attr_u64(&attrs, "consumed_samples", &path)?;
    let updates = attr_u64(&attrs, "optimizer_updates", &path)?;
    let expected = cfg.batch_schedule()?.consumed_after(step);
    if consumed != expected {
        let t = &cfg.train;
        let ramp = t.rampup_batch_size.map_or("no ramp-up".into(), |r| format!("train.rampup_batch_size = {r:?}"));
        bail!(
            "checkpoint {}: {consumed} samples consumed in {step} steps, but train.global_batch = {} with {ramp} consumes {expected}; changing the batch schedule on resume is not supported yet",
            path.display(), t.global_batch
        );
    }
    for (w, host) in model.weights.iter_mut().zip(&weights) {
        be.upload(host, w);
    }
    opt.restore(&*be, &moments, updates, &weights);
    if topo.rank == 0 {
        if let Some(AttrValue::U64(seed)) = attrs.get("seed") {
            if *seed != cfg.train.seed {
                log::warn!("checkpoint {} was trained with seed {seed}, continuing with seed {}", path.display(), cfg.train.seed);
            }
        }
        let saved_optimizer = match attrs.get("config") {
            Some(AttrValue::Str(text)) => Config::from_toml(text, "the stored config", &[]).ok().map(|c| c.optim.name),
            _ => None,
        };
        if let Some(theirs) = saved_optimizer.filter(|&n| n != cfg.optim.name) {
            log::warn!(
                "checkpoint {} was trained with optim.name = {}: its moments continue under {} here",
                path.display(), theirs.name(), cfg.optim.name.name()
            );
        }
        let layout = match attrs.get("layout") {
            Some(AttrValue::Str(s)) => s.clone(),
            _ => "?".into(),
        };
        let mb = state_bytes(stored) / 1e6;
        println!(
            "checkpoint: resumed from {} (step {step}, written under {layout}) | {mb:.1} MB read in {read_s:.3} s ({:.0} MB/s), {:.3} s with checks{}",
            path.display(), mb / read_s, t0.elapsed().as_secs_f64(),
            if with_moments { "" } else { " | no optimizer state stored (an import): AdamW moments start at zero" }
        );
    }
    Ok(Some(Progress { step, consumed_samples: consumed, optimizer_updates: updates }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::ParamTable;

    #[test]
    fn shard_pieces_skip_vocabulary_padding_and_follow_row_shards() {
        let mut c = Config::load("tiny", &[]).unwrap().model;
        c.vocab_size = 4097; // TP 2: 4098 padded rows, the last one padding
        let t = ParamTable::llama(&c);
        let embed = &t.specs[t.embed];
        let h = c.hidden_size as u64;
        let last = global_pieces(embed, 2, 1, 0..2049 * 128);
        assert_eq!(last, vec![(2049 * h..4097 * h, 0..2048 * 128)]);
        // A ZeRO segment cutting through rows of a row-parallel o_proj shard [128, 64] at TP 2.
        let o = &t.specs[t.layers[0].o];
        let pieces = global_pieces(o, 2, 1, 60..130);
        assert_eq!(pieces, vec![(64 + 60..128, 60..64), (128 + 64..128 + 128, 64..128), (256 + 64..256 + 66, 128..130)]);
        let mut buf: Vec<f32> = (0..200).map(|x| x as f32).collect();
        let carved = carve(&mut buf, pieces);
        assert_eq!(carved[1].1[0], 64.0);
        assert_eq!(carved[2].1.len(), 2);
    }
}
