//! Fault handling with real runs (src/fault.rs): an absurd learning rate makes the gradients
//! non-finite, the skipped steps leave the weights exactly as they were (the exported checkpoints
//! of the last applied step and of the stop step are byte-identical), and after
//! `max_skipped_in_a_row` skipped steps in a row the run saves and stops with exit code 3; with a
//! tiny spike threshold under TP 2, steps whose loss rises above the trailing window's mean are
//! skipped (checked against the window recomputed from the metrics file) without changing the
//! weights, and every rank agrees; a stopped rank ends the job through the watchdog, named.

mod common;

use common::sample;
use std::path::Path;
use std::process::Command;

/// The model weights of checkpoint `step-N.h5` as exported fp32 safetensors bytes.
fn exported_weights(ckpt: &Path, step: u64, out: &Path) -> Vec<u8> {
    let dir = out.join(format!("export-{step}"));
    let o = Command::new(env!("CARGO_BIN_EXE_swallow"))
        .args(["export", "--dtype", "fp32", "--load"])
        .arg(ckpt.join(format!("step-{step}.h5")))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "export step {step}: {}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(dir.join("model-00001-of-00001.safetensors")).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn non_finite_steps_leave_the_weights_and_stop_after_k_in_a_row() {
    let dir = common::tmpdir("fault", "nonfinite");
    let data = sample(&dir);
    let (metrics, ckpt) = (dir.join("m.jsonl"), dir.join("ck"));
    let o = common::mpirun(
        1,
        &[
            "train", "--config", "tiny", "--data", &data, "--steps", "40", "--lr", "1e4", "--save", s(&ckpt), "--save-every", "1",
            "--metrics", s(&metrics), "--set", "train.min_lr=0", "--set", "train.warmup_steps=0",
            "--set", "train.max_skipped_in_a_row=3", "--set", "train.keep_checkpoints=50",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "exit code 3 expected:\n{err}");
    let r = common::metrics(&metrics);
    let first_skip = r.iter().position(|x| x["skipped"] == true).expect("lr 1e4 must produce a skipped step");
    assert!(first_skip >= 1, "the first step is applied");
    // Stopped right at the third skipped step in a row, with the reason named.
    assert_eq!(r.len(), first_skip + 3, "{r:?}");
    assert!(r[first_skip..].iter().all(|x| x["skipped"] == true && x["skip_reason"].as_str().unwrap().starts_with("non-finite")));
    let stop = r.len() as u64;
    assert!(err.contains(&format!("stopped at step {stop}: 3 steps in a row were skipped")), "{err}");
    assert_eq!(std::fs::read_to_string(ckpt.join("latest")).unwrap().trim(), format!("step-{stop}.h5"));
    // The weights at the stop are those of the last applied step, which differ from the step before.
    let applied = first_skip as u64;
    let w = |step| exported_weights(&ckpt, step, &dir);
    assert!(w(applied) == w(stop), "skipped steps changed the weights");
    assert!(w(applied - 1) != w(applied), "an applied step must change the weights");
}

#[test]
fn loss_spikes_are_skipped_identically_on_every_rank() {
    let dir = common::tmpdir("fault", "spike");
    let data = sample(&dir);
    let (metrics, ckpt) = (dir.join("m.jsonl"), dir.join("ck"));
    let window = 3;
    let o = common::mpirun(
        2,
        &[
            "train", "--config", "tiny", "--data", &data, "--tp", "2", "--micro-batch", "2", "--steps", "16", "--lr", "0.01",
            "--save", s(&ckpt), "--save-every", "1", "--metrics", s(&metrics),
            "--set", "train.min_lr=0", "--set", "train.warmup_steps=0", "--set", "train.keep_checkpoints=50",
            "--set", "train.spike_zscore=0.01", "--set", &format!("train.spike_window={window}"),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let r = common::metrics(&metrics);
    assert_eq!(r.len(), 16);
    let mut applied: Vec<f64> = Vec::new();
    let mut first_spike = None;
    for x in &r {
        let (step, loss) = (x["step"].as_u64().unwrap(), x["loss"].as_f64().unwrap());
        let spike = applied.len() >= window && {
            let last = &applied[applied.len() - window..];
            let mean = last.iter().sum::<f64>() / window as f64;
            let std = (last.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / window as f64).sqrt();
            (loss - mean) / std > 0.01
        };
        assert_eq!(x["skipped"] == true, spike, "step {step}: loss {loss} after {applied:?}");
        if spike {
            assert!(x["skip_reason"].as_str().unwrap().starts_with("loss spike"), "{x}");
            assert!(out.contains(&format!("step {step:>6}/16")) && out.contains("SKIPPED (loss spike"), "skipped steps are always logged");
            first_spike.get_or_insert(step);
        } else {
            applied.push(loss);
        }
    }
    let spike = first_spike.expect("a z-threshold of 0.01 must flag some rising loss in 16 steps");
    assert!(exported_weights(&ckpt, spike - 1, &dir) == exported_weights(&ckpt, spike, &dir), "a skipped spike changed the weights");
}

/// A stopped rank (SIGSTOP) used to stall the job forever: the watchdog (src/watchdog.rs, here
/// train.watchdog_s = 5) ends it within seconds, naming the silent rank once, and leaves no rank
/// behind (issue 20, item 14).
#[test]
fn a_stopped_rank_ends_the_job_naming_it() {
    use std::io::{BufRead, Read};
    let dir = common::tmpdir("fault", "watchdog");
    let data = sample(&dir);
    let args = ["train", "--config", "tiny", "--data", &data, "--micro-batch", "2", "--steps", "100000"];
    let mut child = common::mpirun_command(2, &args)
        .args(["--set", "train.watchdog_s=5", "--set", "train.log_every=1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut out = String::new();
    while !out.contains("step      3/") {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "the job ended early:\n{out}");
        out += &line;
    }
    // Rank 1: the child of mpirun whose environment says so.
    let children = String::from_utf8(Command::new("pgrep").args(["-P", &child.id().to_string()]).output().unwrap().stdout).unwrap();
    let rank1 = children
        .split_whitespace()
        .find(|pid| std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|e| e.split(|&b| b == 0).any(|v| v == b"OMPI_COMM_WORLD_RANK=1")))
        .expect("rank 1 among mpirun's children")
        .to_string();
    assert!(Command::new("kill").args(["-STOP", &rank1]).status().unwrap().success());
    let t0 = std::time::Instant::now();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    stdout.read_to_string(&mut out).unwrap();
    let status = child.wait().unwrap();
    let outlived = std::fs::read_to_string(format!("/proc/{rank1}/stat")).is_ok_and(|s| !s.contains(") Z "));
    let _ = Command::new("kill").args(["-KILL", &rank1]).status(); // in case it outlived the job
    assert!(!outlived, "rank 1 outlived the job");
    assert!(!status.success(), "{out}\n{err}");
    assert!(t0.elapsed().as_secs() < 40, "the job took {:?} to end", t0.elapsed());
    let errors = common::error_lines(&err);
    assert_eq!(errors.len(), 1, "one error line expected:\n{err}");
    assert!(errors[0].contains("watchdog") && errors[0].contains("silent ranks") && errors[0].ends_with(": 1"), "{err}");
}
