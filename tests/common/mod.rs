//! Helpers shared by the integration tests that run the `swallow` binary: the repository root, a
//! fresh temporary directory per test, the bundled sample corpus prepared into shards, `mpirun`
//! with the environment these machines need, a command's checked stdout and a metrics file's lines,
//! and the check of a run's bytes per group against the analytic count.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// An empty directory named after the test file's `prefix` and `name`, unique to this process.
pub fn tmpdir(prefix: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("swallow-{prefix}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The bundled sample corpus (data/sample) prepared into shards in `dir`; returns the prefix.
pub fn sample(dir: &Path) -> String {
    let prefix = dir.join("sample");
    let o = Command::new(env!("CARGO_BIN_EXE_swallow"))
        .args(["prep", "--tokenizer"])
        .arg(repo().join("data/sample/tokenizer.json"))
        .arg("--input")
        .args([repo().join("data/sample/ja.jsonl"), repo().join("data/sample/en.jsonl")])
        .arg("--output")
        .arg(&prefix)
        .arg("--append-eod")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    prefix.to_str().unwrap().to_string()
}

/// The command `mpirun -np N swallow ARGS` (oversubscribed, as root, one compute thread per
/// rank), for a test to add to, spawn or run.
pub fn mpirun_command(np: usize, args: &[&str]) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["--oversubscribe", "-np", &np.to_string(), env!("CARGO_BIN_EXE_swallow")])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1");
    c
}

/// `mpirun -np N swallow ARGS` run to its end.
pub fn mpirun(np: usize, args: &[&str]) -> Output {
    mpirun_command(np, args).output().expect("mpirun (OpenMPI) must be installed: make setup")
}

/// The `error...` lines of a job's stderr (one, where the ranks agree on an error).
pub fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error")).collect()
}

/// The stdout of a command that must have succeeded (else a failure showing `what`, stdout and stderr).
pub fn succeeded(o: &Output, what: &str) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{what}: exit {:?}\n{out}\n{}", o.status.code(), String::from_utf8_lossy(&o.stderr));
    out
}

/// Every line of a `swallow train --metrics` JSONL file, parsed (step and validation records).
pub fn metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Fails unless every metrics record's bytes in the TP, DP and PP groups are rank 0's analytic
/// count (parallel/traffic.rs) for `cfg` on `np` ranks whose exchanges move elements as `wire` says.
pub fn assert_traffic(records: &[serde_json::Value], cfg: &swallow::config::Config, np: usize, wire: swallow::parallel::traffic::Wire, what: &str) {
    let p = &cfg.parallel;
    let topo = swallow::parallel::Topology::new(np, 0, p.tp, p.pp).unwrap();
    let microbatches = cfg.train.global_batch / (cfg.train.micro_batch * topo.dp);
    let sends = swallow::pipeline::Executor::new(cfg.schedule_kind().unwrap(), p.pp, p.vpp, 0, microbatches).unwrap().sends();
    let want = swallow::parallel::traffic::per_step(cfg, &topo, sends, wire).unwrap();
    for r in records {
        for (group, expected) in [("tp_bytes", want.tp), ("dp_bytes", want.dp), ("pp_bytes", want.pp)] {
            let got = r[group].as_f64().unwrap();
            assert!((got - expected).abs() <= 1e-9 * expected.max(1.0), "{what}: {group} {got} vs {expected} counted");
        }
    }
}
