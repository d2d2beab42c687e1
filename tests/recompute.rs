//! Full activation recomputation (`--recompute full`) against the default (selective) run of the
//! same layout: the forward is deterministic, so re-running each layer's forward before its
//! backward must give the very same losses and gradient norms, bit for bit, in the metrics file —
//! on one rank, under TP 2 with sequence parallelism (the recomputed forward repeats the TP
//! collectives), under interleaved PP 2 x VPP 2 (several slots share the one recomputed set), and
//! on the CUDA backend through its deterministic emulation. Every rank must hold less heap with
//! full recomputation, by what the planner's CPU model says, and stay within the 10% of it that
//! tests/plan.rs allows. Bad values are one-line errors; the dry run plans the configured option.

mod common;

use common::{metrics, mpirun, sample, succeeded};
use std::path::Path;
use std::process::{Command, Output};
use swallow::config::Config;
use swallow::parallel::Topology;
use swallow::plan::{memory, Layout, Recompute};

const MIB: f64 = 1024.0 * 1024.0;
/// What tests/plan.rs allows between the planner's CPU model and the counted heap.
const PLAN_TOLERANCE: f64 = 0.10;

fn swallow(np: usize, args: &[&str]) -> Output {
    if np == 1 {
        Command::new(env!("CARGO_BIN_EXE_swallow")).args(args).output().unwrap()
    } else {
        mpirun(np, args)
    }
}

/// A training run: (loss, grad norm) per step from the metrics file, and rank 0's stdout.
struct Run {
    steps: Vec<(f64, f64)>,
    stdout: String,
}

/// `steps` steps of the tiny model on `np` ranks with `extra` flags (a large learning rate from
/// the first step, so that every step's loss depends on the previous updates).
fn train(dir: &Path, data: &str, np: usize, steps: u64, extra: &[&str]) -> Run {
    let name = extra.join("_").replace(['-', '.', '=', '/'], "");
    let m = dir.join(format!("m-{np}-{name}.jsonl"));
    let steps_s = steps.to_string();
    let mut args = vec!["train", "--config", "tiny", "--data", data, "--steps", &steps_s, "--metrics", m.to_str().unwrap()];
    args.extend(["--set", "train.warmup_steps=0", "--set", "train.lr=0.01"]);
    args.extend(extra);
    let stdout = succeeded(&swallow(np, &args), &format!("np {np} {extra:?}"));
    let steps_got: Vec<(f64, f64)> =
        metrics(&m).iter().map(|r| (r["loss"].as_f64().unwrap(), r["grad_norm"].as_f64().unwrap())).collect();
    assert_eq!(steps_got.len() as u64, steps, "np {np} {extra:?}:\n{stdout}");
    Run { steps: steps_got, stdout }
}

fn assert_bitwise(full: &Run, selective: &Run, what: &str) {
    for (step, (f, s)) in full.steps.iter().zip(&selective.steps).enumerate() {
        assert!(
            f.0.to_bits() == s.0.to_bits() && f.1.to_bits() == s.1.to_bits(),
            "{what} step {}: full (loss {}, grad norm {}) vs selective ({}, {})",
            step + 1,
            f.0,
            f.1,
            s.0,
            s.1
        );
    }
}

/// The numbers after `key` on each line of `stdout` that has it, in MiB, in rank order.
fn per_rank(stdout: &str, key: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| l.split_once(key).map(|(_, rest)| rest))
        .map(|rest| rest.split_whitespace().next().unwrap().parse::<f64>().unwrap())
        .collect()
}

/// Each rank's counted heap falls under full recomputation, by the planner's predicted drop, and
/// stays within `PLAN_TOLERANCE` of the planner's CPU model of the full run.
fn assert_heap_follows_the_plan(full: &Run, selective: &Run, np: usize, sets: &[&str], what: &str) {
    let (got_full, got_sel) = (per_rank(&full.stdout, ": measured "), per_rank(&selective.stdout, ": measured "));
    assert_eq!((got_full.len(), got_sel.len()), (np, np), "{what}: one measured line per rank in\n{}", full.stdout);
    let cfg = Config::load("tiny", &sets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let planned = |r: Recompute, rank: usize| {
        let topo = Topology::new(np, rank, cfg.parallel.tp, cfg.parallel.pp).unwrap();
        let l = Layout::from_config(&cfg, np, r).unwrap();
        memory::cpu(&cfg, &l, topo.pp_rank, topo.dp_rank).unwrap().total() / MIB
    };
    for rank in 0..np {
        let (full_mib, sel_mib) = (got_full[rank], got_sel[rank]);
        let (plan_full, plan_sel) = (planned(Recompute::Full, rank), planned(Recompute::Selective, rank));
        eprintln!("{what} rank {rank}: heap selective {sel_mib:.2} MiB -> full {full_mib:.2} MiB (planned {plan_sel:.2} -> {plan_full:.2})");
        assert!(full_mib < sel_mib, "{what} rank {rank}: full {full_mib} MiB, selective {sel_mib} MiB");
        let (drop, plan_drop) = (sel_mib - full_mib, plan_sel - plan_full);
        assert!(((drop - plan_drop) / plan_drop).abs() < PLAN_TOLERANCE, "{what} rank {rank}: heap fell by {drop:.2} MiB, planned {plan_drop:.2}");
        let err = full_mib / plan_full - 1.0;
        assert!(err.abs() < PLAN_TOLERANCE, "{what} rank {rank}: measured {full_mib:.2} MiB, planned {plan_full:.2} MiB");
    }
}

#[test]
fn full_recomputation_repeats_the_single_rank_run_bit_for_bit_with_less_heap() {
    let dir = common::tmpdir("recompute", "one");
    let data = sample(&dir);
    let selective = train(&dir, &data, 1, 4, &["--micro-batch", "4"]);
    let full = train(&dir, &data, 1, 4, &["--micro-batch", "4", "--recompute", "full"]);
    assert!(selective.steps[3].0 < selective.steps[0].0 - 0.05, "the run must learn: {:?}", selective.steps);
    assert_bitwise(&full, &selective, "one rank");
    assert_heap_follows_the_plan(&full, &selective, 1, &["train.micro_batch=4", "train.recompute=full"], "one rank");
}

#[test]
fn full_recomputation_repeats_tensor_sequence_and_interleaved_pipeline_runs_bit_for_bit() {
    let dir = common::tmpdir("recompute", "parallel");
    let data = sample(&dir);
    // Eight micro-batches of 2: interleaved 1F1B keeps several in flight per chunk.
    let layouts: [(&[&str], &[&str], &str); 2] = [
        (&["--tp", "2", "--sequence-parallel"], &["parallel.tp=2", "parallel.sequence_parallel=true"], "tp 2 x dp 1 x pp 1"),
        (&["--pp", "2", "--vpp", "2"], &["parallel.pp=2", "parallel.vpp=2"], "tp 1 x dp 1 x pp 2"),
    ];
    for (flags, sets, grid) in layouts {
        let mut sel_flags = vec!["--micro-batch", "2"];
        sel_flags.extend(flags);
        let mut full_flags = sel_flags.clone();
        full_flags.extend(["--recompute", "full"]);
        let selective = train(&dir, &data, 2, 3, &sel_flags);
        let full = train(&dir, &data, 2, 3, &full_flags);
        assert!(full.stdout.contains(grid), "{}", full.stdout);
        assert_bitwise(&full, &selective, &format!("{flags:?}"));
        let mut plan_sets = vec!["train.micro_batch=2"];
        plan_sets.extend(sets);
        assert_heap_follows_the_plan(&full, &selective, 2, &plan_sets, &format!("{flags:?}"));
    }
}

#[test]
fn full_recomputation_repeats_the_cuda_backend_run_under_emulation_bit_for_bit() {
    let dir = common::tmpdir("recompute", "cuda");
    let data = sample(&dir);
    // Head dim 64 (the flash kernels' smallest); the emulation runs a few seconds per step.
    let tiny = [
        "--device", "cuda-emulated",
        "--set", "model.num_heads=2", "--set", "model.num_kv_heads=1", "--set", "model.num_layers=2",
        "--set", "train.seq_len=32", "--set", "train.micro_batch=2", "--set", "train.global_batch=4",
    ];
    let selective = train(&dir, &data, 1, 2, &tiny);
    let mut full_flags = tiny.to_vec();
    full_flags.extend(["--recompute", "full"]);
    let full = train(&dir, &data, 1, 2, &full_flags);
    assert!(full.stdout.contains("device: cuda-bf16"), "{}", full.stdout);
    assert_bitwise(&full, &selective, "cuda-emulated");
    let (peak_full, peak_sel) = (per_rank(&full.stdout, ": peak "), per_rank(&selective.stdout, ": peak "));
    assert_eq!((peak_full.len(), peak_sel.len()), (1, 1), "{}", full.stdout);
    eprintln!("cuda-emulated: device peak selective {:.2} MiB -> full {:.2} MiB", peak_sel[0], peak_full[0]);
    assert!(peak_full[0] < peak_sel[0], "device peak: full {} MiB, selective {} MiB", peak_full[0], peak_sel[0]);
}

#[test]
fn recompute_none_and_unknown_values_are_one_line_errors_and_the_dry_run_plans_full() {
    let dir = common::tmpdir("recompute", "errors");
    let data = sample(&dir);
    for (flag, needle) in [("none", "\"none\" is not a training option"), ("fast", "\"fast\", expected \"selective\" or \"full\"")] {
        let o = swallow(1, &["train", "--config", "tiny", "--data", &data, "--steps", "1", "--recompute", flag]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "--recompute {flag}: {err}");
        assert!(err.contains("train.recompute") && err.contains(needle) && err.lines().count() == 1, "--recompute {flag}: {err}");
    }
    let out = succeeded(&swallow(1, &["train", "--config", "tiny", "--data", &data, "--recompute", "full", "--dry-run"]), "dry run");
    assert!(out.contains("| recompute full") && out.contains("full recompute"), "{out}");
    let cfg = Config::load("tiny", &[]).unwrap();
    let plan_full = memory::cpu(&cfg, &Layout::from_config(&cfg, 1, Recompute::Full).unwrap(), 0, 0).unwrap().total() / MIB;
    let printed: f64 = out.split("stage 0 (ranks 0-0): cpu ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!((printed - plan_full).abs() < 0.01, "dry run planned {printed} MiB, the full-recompute model {plan_full:.2}");
}
