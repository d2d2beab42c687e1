//! `swallow-gpu-bench` (the GPU check's training benchmark) end to end on the emulated device:
//! it trains, profiles one step, and its counted GEMM FLOPs equal the model's linear layers'
//! 6 x parameters x tokens (forward, input gradient, weight gradient: 2 m n k each), computed
//! here from the layer shapes; the kernel shares add up to 100% and the closing table is printed.
//! Its equivalence mode (`--compare-cpu`, the GPU check's second stage, with the script's
//! arguments) passes on the emulated device. scripts/gpu-check.sh stops a stage at its time limit
//! and still runs the others and prints the summary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

#[test]
fn gpu_bench_runs_on_the_emulated_device_and_counts_every_gemm() {
    let (hidden, heads, kv_heads, ffn, vocab, seq, micro_batch) = (128usize, 2usize, 1usize, 352usize, 4096usize, 32usize, 2usize);
    let o = Command::new(env!("CARGO_BIN_EXE_swallow-gpu-bench"))
        .args(["--emulated", "--config", "tiny", "--layers", "1", "--seq", &seq.to_string(), "--micro-batch", &micro_batch.to_string()])
        .args(["--accumulation", "1", "--steps", "1", "--set", "model.num_heads=2", "--set", "model.num_kv_heads=1"])
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    // One layer: q and o [hidden, hidden], k and v [kv_heads * head_dim, hidden], gate, up and
    // down [ffn, hidden]; the LM head [vocab, hidden]. The input embedding is no GEMM.
    let head_dim = hidden / heads;
    let linear = 2 * hidden * hidden + 2 * kv_heads * head_dim * hidden + 3 * ffn * hidden + vocab * hidden;
    let want = 6 * linear * seq * micro_batch;
    assert!(out.contains(&format!("GEMM FLOPs per step: {want}\n")), "expected {want} GEMM FLOPs in:\n{out}");
    let shares: f64 = out
        .lines()
        .skip_while(|l| !l.starts_with("profiled step"))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().find(|w| w.ends_with('%')).unwrap().trim_end_matches('%').parse::<f64>().unwrap())
        .sum();
    assert!((shares - 100.0).abs() < 0.5, "kernel shares add up to {shares}%:\n{out}");
    for row in ["| tokens/s |", "| MFU (peak", "| flash attention rate (profiled) |", "| peak device memory (backend) |"] {
        assert!(out.contains(row), "no {row:?} row in:\n{out}");
    }
}

/// `--memory-only` stops before the first step with the memory the model and optimizer hold
/// beside the plan, within 10% of it (the planner's bf16 model is what the backend allocates).
#[test]
fn gpu_bench_memory_only_reports_the_held_memory_beside_the_plan() {
    let o = Command::new(env!("CARGO_BIN_EXE_swallow-gpu-bench"))
        .args(["--emulated", "--memory-only", "--config", "tiny", "--layers", "2", "--seq", "64", "--micro-batch", "2"])
        .args(["--accumulation", "1", "--set", "model.num_heads=2", "--set", "model.num_kv_heads=1"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let line = out.lines().find(|l| l.starts_with("device memory held before the first step: ")).unwrap_or_else(|| panic!("{out}"));
    let pct: f64 = line.rsplit('(').next().unwrap().trim_end_matches("%)").parse().unwrap();
    assert!(pct.abs() <= 10.0, "{line}");
    assert!(!out.contains("warm-up step"), "no step may run:\n{out}");
}

/// The GPU check's equivalence stage as scripts/gpu-check.sh runs it, on the emulated device:
/// two steps of the tiny model on the device and on the CPU backend agree within the bf16
/// tolerances, and the table shows both runs.
#[test]
fn gpu_bench_compare_cpu_agrees_on_the_emulated_device() {
    let script = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/gpu-check.sh")).unwrap();
    let args: Vec<&str> = script.split("tiny=(").nth(1).unwrap().split(')').next().unwrap().split_whitespace().collect();
    assert!(args.contains(&"--compare-cpu"), "{args:?}");
    let o = Command::new(env!("CARGO_BIN_EXE_swallow-gpu-bench")).arg("--emulated").args(&args).env("RAYON_NUM_THREADS", "1").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    let rows = out.lines().filter(|l| l.starts_with("| 1 |") || l.starts_with("| 2 |")).count();
    assert_eq!(rows, 2, "one row per step in:\n{out}");
    assert!(out.lines().last().unwrap().starts_with("device and CPU runs agree: loss within"), "{out}");
}

/// scripts/gpu-check.sh with stand-ins for its two binaries and libraries (it only links and
/// runs them): a conformance run that hangs is stopped at its limit, the equivalence stage that
/// passes and the benchmark that fails are each reported, and the exit status is 1.
#[test]
fn gpu_check_stops_a_hung_stage_at_its_limit_and_reports_every_stage() {
    let dir = common::tmpdir("gpu-check", "limits");
    let write = |rel: &str, text: &str, exec: bool| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        if exec {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    };
    let script = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu-check.sh")).unwrap();
    write("scripts/gpu-check.sh", &script, true);
    write("out/gpu/kernel_conformance", "#!/bin/sh\necho conformance started on $SWALLOW_CONFORMANCE_DEVICE\nexec sleep 60\n", true);
    let bench = "#!/bin/sh\ncase \"$*\" in *--compare-cpu*) echo 'device and CPU runs agree: stand-in';; *) echo 'no GPU'; exit 3;; esac\n";
    write("out/gpu/swallow-gpu-bench", bench, true);
    write("lib/libnvrtc.so.13", "", false);
    write("lib/libcublasLt.so.13", "", false);
    write("include/cuda_bf16.h", "", false);
    let logs = dir.join("logs");
    let started = std::time::Instant::now();
    let o = Command::new(dir.join("scripts/gpu-check.sh"))
        .env("SWALLOW_NVRTC", dir.join("lib/libnvrtc.so.13"))
        .env("SWALLOW_CUBLASLT_FILE", dir.join("lib/libcublasLt.so.13"))
        .env("SWALLOW_CUDA_INCLUDE", dir.join("include"))
        .env("SWALLOW_GPU_CHECK_LIMITS", "2 20 20")
        .env("OUT", &logs)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let all = format!("{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{all}");
    assert!(started.elapsed().as_secs() < 30, "the hung stage ran past its limit: {all}");
    let summary: Vec<&str> = out.lines().filter(|l| l.starts_with("gpu-check: ") && l.contains(": ") && !l.starts_with("gpu-check: NVRTC")).collect();
    assert_eq!(summary.len(), 3, "{all}");
    assert!(summary[0].starts_with("gpu-check: conformance: TIMED OUT after 2 s"), "{all}");
    assert_eq!(summary[1], "gpu-check: equivalence: device and CPU runs agree: stand-in", "{all}");
    assert!(summary[2].starts_with("gpu-check: benchmark: FAILED (exit 3)"), "{all}");
    assert!(std::fs::read_to_string(logs.join("conformance.log")).unwrap().contains("conformance started on cuda"));
    let bad = Command::new(dir.join("scripts/gpu-check.sh")).env("SWALLOW_GPU_CHECK_LIMITS", "1 x 2").env("SWALLOW_NVRTC", dir.join("lib/libnvrtc.so.13"))
        .env("SWALLOW_CUBLASLT_FILE", dir.join("lib/libcublasLt.so.13")).env("SWALLOW_CUDA_INCLUDE", dir.join("include")).env("OUT", &logs).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("SWALLOW_GPU_CHECK_LIMITS=\"1 x 2\": expected three whole numbers"), "{}", String::from_utf8_lossy(&bad.stderr));
}
