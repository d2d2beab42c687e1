//! Long-job logging with real runs: the step line carries memory and ETA; `--eval-every` adds
//! validation records without changing training (bitwise the same step losses as without it),
//! gives the same validation losses under PP 2 x DP 2 as on one rank, and they fall as the model
//! learns; `swallow plot` turns the metrics file (or several runs' files, one chart) into a PNG of
//! the requested size, and bad input (missing file, a bad JSON line, a bad size or name) is a
//! one-line error naming it.

mod common;

use common::sample;
use std::path::Path;
use std::process::{Command, Output};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn train(np: usize, data: &str, metrics: &Path, extra: &[&str]) -> String {
    let args = [&["train", "--config", "tiny", "--data", data, "--steps", "6", "--micro-batch", "2", "--split", "80,10,10", "--metrics", s(metrics)], extra].concat();
    let o = common::mpirun(np, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn valid_losses(path: &Path) -> Vec<(u64, f64)> {
    common::metrics(path).iter().filter(|r| r["kind"] == "valid").map(|r| (r["step"].as_u64().unwrap(), r["valid_loss"].as_f64().unwrap())).collect()
}

fn step_losses(path: &Path) -> Vec<f64> {
    common::metrics(path).iter().filter(|r| r.get("kind").is_none()).map(|r| r["loss"].as_f64().unwrap()).collect()
}

fn plot(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_swallow")).arg("plot").args(args).output().unwrap()
}

#[test]
fn validation_is_logged_and_leaves_training_unchanged() {
    let dir = common::tmpdir("longrun", "valid");
    let data = sample(&dir);
    let (plain, one, four) = (dir.join("plain.jsonl"), dir.join("one.jsonl"), dir.join("four.jsonl"));
    let eval = ["--eval-every", "2", "--eval-iters", "2", "--lr", "0.005"];
    let out = train(1, &data, &one, &eval);
    assert!(out.contains("validation at step 4: loss "), "{out}");
    let line = out.lines().find(|l| l.starts_with("step      1/6")).unwrap();
    assert!(line.contains(" | mem ") && line.contains(" MB | ETA "), "{line}");
    train(1, &data, &plain, &["--lr", "0.005"]);
    assert_eq!(step_losses(&plain), step_losses(&one), "validation must not change training");
    let v1 = valid_losses(&one);
    assert_eq!(v1.iter().map(|v| v.0).collect::<Vec<_>>(), vec![2, 4, 6]);
    assert!(v1[2].1 < v1[0].1 - 0.1, "the validation loss falls as the model learns: {v1:?}");
    train(4, &data, &four, &[&eval[..], &["--pp", "2"]].concat());
    for (a, b) in v1.iter().zip(valid_losses(&four)) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-5, "PP 2 x DP 2 validation loss {b:?} vs one rank {a:?}");
    }
    // Nor under the pipeline: the 4-rank run's step losses follow the single-rank run's.
    for (a, b) in step_losses(&plain).iter().zip(step_losses(&four)) {
        assert!((a - b).abs() < 1e-4, "PP 2 x DP 2 step loss {b} vs one rank {a}");
    }
    let r = common::metrics(&one);
    assert_eq!(r.iter().filter(|x| x["kind"] == "valid").count(), 3);
    assert!(r.iter().all(|x| x["kind"] == "valid" || x["peak_rss_bytes"].as_u64().unwrap() > 1 << 20));

    // The plot of this real file: a PNG of the requested size.
    let png = dir.join("curves.png");
    let o = plot(&[s(&one), "--out", s(&png), "--width", "800", "--height", "600"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("6 steps, 3 validation points"));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    assert_eq!((be(16), be(20)), (800, 600));
    assert!(bytes.len() > 10_000, "a drawn chart, not a blank image: {} bytes", bytes.len());
    // Several runs in one chart, each named.
    let o = plot(&[s(&one), s(&four), "--out", s(&png)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("plot: 2 runs (one.jsonl: 6 steps, 3 validation points; four.jsonl: 6 steps"), "{out}");
}

#[test]
fn bad_plot_input_is_a_clear_error() {
    let dir = common::tmpdir("longrun", "badplot");
    let png = dir.join("x.png");
    let err = |o: Output| {
        assert_eq!(o.status.code(), Some(1));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let missing = dir.join("missing.jsonl");
    let e = err(plot(&[s(&missing), "--out", s(&png)]));
    assert!(e.starts_with("error: cannot read metrics file") && e.contains("missing.jsonl"), "{e}");
    let bad = dir.join("bad.jsonl");
    let good = r#"{"step":1,"loss":8.0,"lr":1e-4,"grad_norm":1.0,"tokens_per_s":100.0,"skipped":false}"#;
    std::fs::write(&bad, format!("{good}\n\n{{\"step\": 2, \"loss\": 7.\n")).unwrap();
    let e = err(plot(&[s(&bad), "--out", s(&png)]));
    assert!(e.contains("bad.jsonl:3: not a JSON line"), "{e}");
    std::fs::write(&bad, format!("{good}\n{{\"step\":2,\"lr\":1e-4}}\n")).unwrap();
    let e = err(plot(&[s(&bad), "--out", s(&png)]));
    assert!(e.contains("bad.jsonl:2: no \"loss\" field"), "{e}");
    std::fs::write(&bad, format!("{good}\n")).unwrap();
    let e = err(plot(&[s(&bad), "--out", s(&png), "--width", "5"]));
    assert!(e.contains("plot size 5x900"), "{e}");
    let e = err(plot(&[s(&bad), "--out", s(&dir.join("x.jpg"))]));
    assert!(e.contains("expected a .png"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "nothing but the input is left behind");
}
