//! `--device cuda|auto` with real MPI processes (2 ranks) on a machine without a CUDA driver:
//! `cuda` ends the job with an error naming the missing library (no panic, no training step) and
//! `auto` warns once (rank 0) and trains on the CPU. (Where a driver is present both train on the
//! GPU; these tests then have nothing to check and say so.) A model whose head dim the CUDA
//! attention kernels do not take is a one-line error on any machine.

mod common;

use common::{mpirun, sample};

fn cuda_present() -> bool {
    swallow::backend::cuda::probe::init_driver().is_ok()
}

/// A 2-step run on `device` of 2 ranks: (succeeded, stdout, stderr), or None where a CUDA driver
/// is present (these tests check the machine without one).
fn train_without_a_driver(device: &str) -> Option<(bool, String, String)> {
    if cuda_present() {
        eprintln!("a CUDA driver is present: nothing to check");
        return None;
    }
    let dir = common::tmpdir("device", device);
    let data = sample(&dir);
    let o = mpirun(2, &["train", "--config", "tiny", "--data", &data, "--steps", "2", "--device", device]);
    Some((o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned()))
}

/// The step lines rank 0 printed.
fn steps(out: &str) -> usize {
    out.lines().filter(|l| l.starts_with("step ")).count()
}

#[test]
fn device_cuda_without_a_driver_is_a_clear_error() {
    let Some((ok, out, err)) = train_without_a_driver("cuda") else { return };
    assert!(!ok, "--device cuda must fail here:\n{out}\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let want = "--device cuda: no CUDA driver on this machine (libcuda.so.1 not found on the library path); use --device cpu (or auto)";
    // Every rank meets it: one line, from rank 0 (src/parallel/agree.rs).
    let errors = common::error_lines(&err);
    assert!(errors.len() == 1 && errors[0].contains(want) && errors[0].ends_with("(rank 0 of 2)"), "expected {want:?} once in:\n{err}");
    assert_eq!(steps(&out), 0, "no training step may run:\n{out}");
}

#[test]
fn device_auto_falls_back_to_the_cpu_with_one_warning() {
    let Some((ok, out, err)) = train_without_a_driver("auto") else { return };
    assert!(ok, "--device auto must train on the CPU:\n{out}\n{err}");
    let want = "--device auto: no CUDA driver on this machine (libcuda.so.1 not found on the library path); training on the CPU";
    assert_eq!(err.matches(want).count(), 1, "expected {want:?} once (rank 0) in:\n{err}");
    assert_eq!(steps(&out), 2, "two training steps expected:\n{out}");
}

#[test]
fn a_head_dim_without_cuda_kernels_is_a_clear_error() {
    let dir = common::tmpdir("device", "head-dim");
    let data = sample(&dir);
    // The tiny preset: hidden 128 over 4 heads, head dim 32.
    let o = mpirun(2, &["train", "--config", "tiny", "--data", &data, "--steps", "1", "--device", "cuda-emulated"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(!err.contains("panicked") && !err.contains("internal error"), "{err}");
    let want = "--device cuda-emulated: head dim 32 (model.hidden_size 128 / model.num_heads 4); the CUDA flash-attention kernels take head dims [64, 128]";
    assert!(err.lines().any(|l| l.starts_with("error") && l.contains(want)), "expected {want:?} in:\n{err}");
}
