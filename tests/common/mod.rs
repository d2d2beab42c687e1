//! Helpers shared by the integration tests that run the `swallow` binary: the repository root, a
//! fresh temporary directory per test, the bundled sample corpus prepared into shards, and
//! `mpirun` with the environment these machines need.
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

/// `mpirun -np N swallow ARGS` (oversubscribed, as root, one compute thread per rank).
pub fn mpirun(np: usize, args: &[&str]) -> Output {
    Command::new("mpirun")
        .args(["--oversubscribe", "-np", &np.to_string(), env!("CARGO_BIN_EXE_swallow")])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .expect("mpirun (OpenMPI) must be installed: make setup")
}
