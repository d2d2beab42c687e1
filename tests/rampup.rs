//! Batch-size ramp-up (`--rampup-batch-size START INCR SAMPLES`) with real MPI processes: the
//! tiny model ramped from 4 to 16 samples per step over 30 samples (batches 4, 4, 4, 8, 12, 16, 16
//! by Megatron's formula) gives under DP 2 and under TP 2 x DP 2 x PP 2 with ZeRO-1 the
//! single-rank run's losses and gradient norms over steps spanning the ramp; a run saved mid-ramp
//! and resumed gives bitwise the uninterrupted losses; a checkpoint written mid-ramp under DP 2
//! continues under DP 1, DP 4 and TP 2 x DP 2 with the same samples (losses within 1e-5); bad
//! combinations are one-line errors naming the values.

mod common;

use common::sample;
use std::path::{Path, PathBuf};
use std::process::Output;

fn tmpdir(name: &str) -> PathBuf {
    common::tmpdir("rampup", name)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `swallow train` of the tiny model ramped 4 -> 16 over 30 samples on `np` ranks, with a
/// learning-rate schedule fixed in samples (so a run cut short follows the same rates) and a
/// large learning rate that makes a layout or resume error visible.
fn train(np: usize, data: &str, args: &[&str]) -> Output {
    let base = [
        "train", "--config", "tiny", "--data", data, "--global-batch", "16", "--rampup-batch-size", "4", "4", "30",
        "--lr-warmup-samples", "8", "--lr-decay-samples", "120", "--set", "train.lr=0.01",
    ];
    common::mpirun(np, &[&base[..], args].concat())
}

/// (step, global batch, consumed samples, loss, grad norm) of every step record of a metrics file.
fn steps(path: &Path) -> Vec<(u64, u64, u64, f64, f64)> {
    common::metrics(path)
        .iter()
        .map(|v| {
            let u = |k: &str| v[k].as_u64().unwrap();
            (u("step"), u("global_batch"), u("consumed_samples"), v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap())
        })
        .collect()
}

/// Same steps and batches, losses within 1e-5 and gradient norms within 1e-3 (relative; see
/// tests/parallel.rs for why the norm is looser).
fn assert_close(got: &[(u64, u64, u64, f64, f64)], want: &[(u64, u64, u64, f64, f64)], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1, g.2), (w.0, w.1, w.2), "{what}: step, batch and consumed samples");
        assert!(((g.3 - w.3) / w.3).abs() < 1e-5, "{what} step {}: loss {} vs {}", g.0, g.3, w.3);
        assert!(((g.4 - w.4) / w.4).abs() < 1e-3, "{what} step {}: grad norm {} vs {}", g.0, g.4, w.4);
    }
}

#[test]
fn rampup_under_parallel_layouts_matches_the_single_rank_run() {
    let dir = tmpdir("layouts");
    let data = sample(&dir);
    let run = |np: usize, layout: &[&str], name: &str| {
        let m = dir.join(format!("{name}.jsonl"));
        let o = train(np, &data, &[layout, &["--micro-batch", "2", "--steps", "7", "--metrics", s(&m)]].concat());
        let out = common::succeeded(&o, name);
        assert!(out.contains("batch-size ramp-up: global batch 8 from 12 consumed samples"), "{name}: {out}");
        steps(&m)
    };
    let reference = run(1, &[], "single");
    // Megatron's formula: 3 increments of 10 samples; batch 4 + 4 x trunc(c / 10) while c <= 30.
    let batches: Vec<(u64, u64)> = reference.iter().map(|r| (r.1, r.2)).collect();
    assert_eq!(batches, vec![(4, 4), (4, 8), (4, 12), (8, 20), (12, 32), (16, 48), (16, 64)]);
    assert!(reference[6].3 < reference[0].3 - 0.1, "the reference run must learn: {reference:?}");
    for (np, layout, name) in [
        (2, &[][..], "dp2"),
        (8, &["--tp", "2", "--pp", "2", "--zero", "1"][..], "tp2-dp2-pp2-zero1"),
    ] {
        assert_close(&run(np, layout, name), &reference, name);
    }
}

#[test]
fn resume_mid_ramp_gives_bitwise_the_uninterrupted_run() {
    let dir = tmpdir("resume");
    let data = sample(&dir);
    for (np, layout) in [(1, &[][..]), (2, &["--zero", "1"][..])] {
        let (straight, resumed, ck) = (dir.join(format!("a{np}.jsonl")), dir.join(format!("b{np}.jsonl")), dir.join(format!("ck{np}")));
        let run = |extra: &[&str]| train(np, &data, &[layout, &["--micro-batch", "2"], extra].concat());
        common::succeeded(&run(&["--steps", "7", "--metrics", s(&straight)]), "straight run");
        // Cut after step 3: 12 samples consumed, the next batch (8) is the ramp's next size.
        common::succeeded(&run(&["--steps", "3", "--save", s(&ck), "--metrics", s(&resumed)]), "first part");
        let out = common::succeeded(&run(&["--steps", "7", "--load", s(&ck), "--metrics", s(&resumed)]), "resumed");
        assert!(out.contains("resumed from") && out.contains("global batch 8 from 12 consumed samples"), "{out}");
        let (a, b) = (steps(&straight), steps(&resumed));
        assert_eq!(a.len(), 7);
        // Bitwise: f64 equality of the logged losses and norms, step by step.
        assert_eq!(a, b, "np {np}: the resumed run differs from the uninterrupted one");
    }
}

#[test]
fn a_checkpoint_written_mid_ramp_reshards() {
    let dir = tmpdir("reshard");
    let data = sample(&dir);
    // Micro-batches of 1 so that DP 1, 2 and 4 all split START and INCR (4).
    let ck = dir.join("ck");
    common::succeeded(&train(2, &data, &["--micro-batch", "1", "--steps", "3", "--save", s(&ck)]), "save under dp 2");
    let cont = |np: usize, layout: &[&str], name: &str| {
        let m = dir.join(format!("{name}.jsonl"));
        let o = train(np, &data, &[layout, &["--micro-batch", "1", "--steps", "7", "--load", s(&ck), "--metrics", s(&m)]].concat());
        let out = common::succeeded(&o, name);
        assert!(out.contains("written under tp 1 dp 2 pp 1"), "{name}: {out}");
        steps(&m)
    };
    let reference = cont(2, &[], "dp2");
    assert_eq!(reference.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), vec![(4, 8), (5, 12), (6, 16), (7, 16)]);
    for (np, layout, name) in [
        (1, &[][..], "dp1"),
        (4, &["--zero", "1"][..], "dp4-zero1"),
        (4, &["--tp", "2"][..], "tp2-dp2"),
    ] {
        assert_close(&cont(np, layout, name), &reference, name);
    }
    // DP 4 with micro-batches of 2: START 4 no longer splits; a changed ramp is refused.
    let o = train(4, &data, &["--micro-batch", "2", "--steps", "7", "--load", s(&ck)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("START = 4 is not a multiple of micro_batch x dp = 2 x 4 = 8"), "{err}");
    let o = train(1, &data, &["--micro-batch", "1", "--steps", "7", "--load", s(&ck), "--rampup-batch-size", "8", "4", "30"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("12 samples consumed in 3 steps") && err.contains("consumes 28"), "{err}");
}

#[test]
fn bad_combinations_are_one_line_errors() {
    let dir = tmpdir("errors");
    let data = sample(&dir);
    let fails = |np: usize, args: &[&str], want: &str| {
        let mut full = vec!["train", "--config", "tiny", "--data", &data, "--steps", "2", "--micro-batch", "2", "--global-batch", "16"];
        full.extend(args);
        let o = common::mpirun(np, &full);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} must fail");
        let lines = common::error_lines(&err);
        assert_eq!(lines.len(), 1, "{args:?}: one error line expected:\n{err}");
        assert!(lines[0].contains(want), "{args:?}: {}", lines[0]);
    };
    fails(1, &["--rampup-batch-size", "6", "4", "30"], "global_batch - START = 16 - 6 = 10 is not divisible by INCR = 4");
    fails(1, &["--rampup-batch-size", "16", "4", "30"], "START = 16 must be below train.global_batch = 16");
    fails(1, &["--rampup-batch-size", "4", "4", "0"], "START, INCR and SAMPLES must be positive");
    fails(1, &["--train-samples", "100"], "train.train_samples (--train-samples) = 100 and train.steps (--steps) both set the run's length");
    fails(2, &["--rampup-batch-size", "2", "2", "30"], "START = 2 is not a multiple of micro_batch x dp = 2 x 2 = 4");
    fails(1, &["--lr-warmup-samples", "8"], "train.warmup_samples (--lr-warmup-samples) = 8 needs train.rampup_batch_size");
    // Interleaved PP 2 needs an even number of micro-batches: the ramp's first batch has one.
    fails(8, &["--tp", "2", "--pp", "2", "--vpp", "2", "--rampup-batch-size", "4", "4", "30"], "global batch 4 (1 micro-batches of 2 per DP rank): interleaved schedule needs micro-batches divisible by pp");
}

/// `--train-samples` sets the run's length as Megatron's update_train_iters does: the ramp 4 -> 16
/// over 30 samples takes 5 steps to 32 samples (batches 4, 4, 4, 8, 12), then (100 - 32) / 16 = 4
/// steps of 16: 9 steps, 96 samples.
#[test]
fn train_samples_set_the_steps_through_the_ramp() {
    let dir = tmpdir("train-samples");
    let data = sample(&dir);
    let m = dir.join("m.jsonl");
    common::succeeded(&train(1, &data, &["--micro-batch", "2", "--train-samples", "100", "--metrics", s(&m)]), "train");
    let got = steps(&m);
    assert_eq!(got.iter().map(|r| r.1).collect::<Vec<_>>(), vec![4, 4, 4, 8, 12, 16, 16, 16, 16]);
    assert_eq!(got.last().unwrap().2, 96);
}
