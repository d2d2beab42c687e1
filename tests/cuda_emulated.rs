//! The CUDA backend's whole orchestration without a GPU: `swallow train --device cuda-emulated`
//! under real mpirun runs every allocation, kernel launch (the kernels' emulation build), GEMM
//! (cuBLASLt's contract) and collective of a GPU run, for a 2-step tiny run in the parallel
//! tests' layouts (one rank with GQA; TP 2 with and without sequence parallelism, and with the
//! TP input-gradient reductions in line instead of on their own stream; DP 2 with and
//! without ZeRO-1, with 100k-element buckets of whole parameters whose DP blocks cut them; PP 2
//! with 1F1B, and PP 2 x VPP 2 interleaved over 4 layers and 4 micro-batches; ZeRO-1 over DP 2
//! with PP 2, with PP 2 x VPP 2, and with TP 2 + SP and replicated KV heads, every bucket
//! exchanged as soon as the backward pass completes it), its TP and DP collectives and PP messages
//! staged through host memory (`--comm host`) or on the device buffers: `--comm mpi`, CUDA-aware
//! MPI, which the emulated device's host addresses satisfy (each DP bucket exchanged when
//! started), and `--comm nccl-emulated`, the backend's NCCL calls emulated over MPI (bf16 sums,
//! the in-place forms, messages matched in issue order, and the DP buckets' exchange held on the
//! emulated side stream until the optimizer step joins it: a missing join reads stale gradients;
//! likewise each column-parallel input gradient's TP reduction on the TP stream, held until the
//! RMSNorm backward joins it).
//!
//! Each run must give the losses and gradient norms of the CPU backend's f32 run of the same
//! layout within bf16 tolerance. bf16 activations and weight copies round each value to 8
//! significant bits (2^-9 relative per rounding). The first step uses the full learning rate 1e-2
//! (warmup of one step), so that the second step depends visibly on the first update (AdamW on
//! the fp32 masters, the bf16 copies rewritten); Adam's near-sign update of the smallest gradients
//! turns their rounding differences into whole steps of 1e-2, so the second step drifts most:
//! measured, the loss within 5.3e-4 relative (tolerance 1e-3) and the gradient norm within 1.9e-2
//! (four interleaved layers; tolerance 5e-2). A run whose bf16 weight copies miss the update is
//! 29% off in that norm. A layout run with both `--comm host` and `--comm mpi` gives identical
//! losses: both paths move the same fp32 values. The flash-attention kernels exist for head dims
//! 64 and 128, so the tiny model runs with 2 heads of 64.
//!
//! LAMB runs the same comparison on one rank, ZeRO-1 over DP 2 and TP 2.
//!
//! On a machine with 2 or more GPUs and the project built, `SWALLOW_CUDA_TEST_DEVICE=cuda cargo
//! test --release --test cuda_emulated` runs the same comparison on the GPUs (`--device cuda`,
//! `--comm nccl` in place of `mpi`), with the same tolerances: the equivalence check of the real
//! backend against the CPU run.

mod common;

use common::{metrics, mpirun, sample, succeeded};
use std::path::Path;
use swallow::backend::cuda::{GRAD_NORM_TOLERANCE as NORM_TOL, LOSS_TOLERANCE as LOSS_TOL};
use swallow::config::Config;
use swallow::parallel::traffic::Wire;

/// The tiny model as these runs train it (before each layout's own settings).
const SETTINGS: [&str; 7] =
    ["model.num_layers=2", "model.num_heads=2", "train.seq_len=32", "train.micro_batch=2", "train.global_batch=4", "train.lr=1e-2", "train.warmup_steps=1"];

/// (loss, grad norm) per step of a 2-step run of `np` ranks on `device`, and rank 0's stdout.
fn run(dir: &Path, data: &str, np: usize, device: &[&str], layout: &[&str]) -> (Vec<(f64, f64)>, String) {
    run_steps(dir, data, np, device, layout, 2)
}

/// `run` up to step `steps`.
fn run_steps(dir: &Path, data: &str, np: usize, device: &[&str], layout: &[&str], steps: u64) -> (Vec<(f64, f64)>, String) {
    let (records, out) = run_records(dir, data, np, device, layout, steps);
    (records.iter().map(|r| (r["loss"].as_f64().unwrap(), r["grad_norm"].as_f64().unwrap())).collect(), out)
}

/// Rank 0's metrics records of the run, and its stdout.
fn run_records(dir: &Path, data: &str, np: usize, device: &[&str], layout: &[&str], steps: u64) -> (Vec<serde_json::Value>, String) {
    let m = dir.join(format!("{}-{np}-{}-{steps}.jsonl", device.join(""), layout.join("_")).replace(['-', '=', '/'], ""));
    let steps = steps.to_string();
    let mut args = vec!["train", "--config", "tiny", "--data", data, "--steps", &steps, "--metrics", m.to_str().unwrap()];
    for s in SETTINGS {
        args.extend(["--set", s]);
    }
    args.extend(device);
    args.extend(layout);
    let out = succeeded(&mpirun(np, &args), &format!("{device:?} np {np} {layout:?}"));
    (metrics(&m), out)
}

/// The configuration a layout's run trains with.
fn layout_config(layout: &[&str]) -> Config {
    let mut sets: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    let mut args = layout.iter();
    while let Some(&a) = args.next() {
        let mut value = || args.next().unwrap().to_string();
        match a {
            "--set" => sets.push(value()),
            "--sequence-parallel" => sets.push("parallel.sequence_parallel=true".into()),
            flag => sets.push(format!("parallel.{}={}", flag.trim_start_matches("--"), value())),
        }
    }
    Config::load("tiny", &sets).unwrap()
}


/// The DP size of a layout of `np` ranks (`--tp` and `--pp` among its arguments).
fn data_parallel(np: usize, layout: &[&str]) -> usize {
    let size = |flag: &str| layout.iter().position(|a| *a == flag).map_or(1, |i| layout[i + 1].parse::<usize>().unwrap());
    np / (size("--tp") * size("--pp"))
}

/// The device under test (`SWALLOW_CUDA_TEST_DEVICE`: `cuda-emulated`, the default, or `cuda`),
/// the `--comm` it uses for device collectives, and how rank 0 names them and the device.
fn device_under_test() -> (&'static str, &'static str, &'static str, &'static str) {
    match std::env::var("SWALLOW_CUDA_TEST_DEVICE").as_deref() {
        Err(_) | Ok("") | Ok("cuda-emulated") => ("cuda-emulated", "mpi", "CUDA-aware MPI", "emulated device"),
        Ok("cuda") => ("cuda", "nccl", "NCCL", "CUDA device"),
        Ok(other) => panic!("SWALLOW_CUDA_TEST_DEVICE={other:?}: expected cuda-emulated or cuda"),
    }
}

/// Each step's loss and gradient norm within the bf16 tolerances of the CPU backend's.
fn assert_matches_cpu(gpu: &[(f64, f64)], cpu: &[(f64, f64)], run: &str) {
    for (step, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let (dl, dn) = ((g.0 - c.0).abs() / c.0, (g.1 - c.1).abs() / c.1);
        let what = format!("{run} step {}", step + 1);
        eprintln!("{what}: loss {:.5} vs cpu {:.5} ({dl:.1e}), grad norm {:.4} vs {:.4} ({dn:.1e})", g.0, c.0, g.1, c.1);
        assert!(dl <= LOSS_TOL, "{what}: loss {} vs cpu {}", g.0, c.0);
        assert!(dn <= NORM_TOL, "{what}: grad norm {} vs cpu {}", g.1, c.1);
    }
}

#[test]
fn cuda_backend_under_emulation_matches_the_cpu_backend() {
    let (device, device_comm, comm_name, device_name) = device_under_test();
    // The layouts' --comm choices as run here, and how rank 0 names them: on the emulated device
    // CUDA-aware MPI and NCCL emulated over MPI; on GPUs NCCL (once).
    // What each moves per element: host f32; CUDA-aware MPI sums fp32 and gathers and sends
    // bf16 as it lies; NCCL sums bf16 too.
    let mpi_wire = Wire { tp_sum: 4.0, tp_gather: 2.0, pp_message: 2.0, dp_gather: 2.0 };
    let nccl_wire = Wire { tp_sum: 2.0, ..mpi_wire };
    let mut comm_kinds = vec![("host", ("host", "host", Wire::HOST)), ("mpi", (device_comm, comm_name, if device_comm == "mpi" { mpi_wire } else { nccl_wire }))];
    if device == "cuda-emulated" {
        comm_kinds.push(("nccl", ("nccl-emulated", "NCCL emulated over MPI", nccl_wire)));
    }
    let dir = common::tmpdir("cuda-emulated", "layouts");
    let data = sample(&dir);
    // (ranks, layout, the --comm choices run on it)
    let bucket = "parallel.bucket_size=100000";
    let layouts: [(usize, &[&str], &[&str]); 11] = [
        (1, &["--set", "model.num_kv_heads=1"], &["host"]),
        (2, &["--tp", "2", "--sequence-parallel", "--set", "model.num_kv_heads=2"], &["host", "mpi", "nccl"]),
        (2, &["--tp", "2", "--set", "model.num_kv_heads=2"], &["mpi", "nccl"]),
        (2, &["--tp", "2", "--set", "model.num_kv_heads=2", "--set", "parallel.overlap_tp_backward=false"], &["nccl"]),
        (2, &["--zero", "1", "--set", "model.num_kv_heads=1", "--set", bucket], &["host", "mpi", "nccl"]),
        (2, &["--set", "model.num_kv_heads=1"], &["mpi", "nccl"]),
        (2, &["--pp", "2", "--set", "model.num_kv_heads=1"], &["host", "mpi", "nccl"]),
        (2, &["--pp", "2", "--vpp", "2", "--set", "model.num_layers=4", "--set", "train.global_batch=8", "--set", "model.num_kv_heads=1"], &["host", "mpi", "nccl"]),
        // DP with PP, and with TP + SP and replicated KV heads (whose gradients complete only
        // after the TP sums): buckets exchanged between the pipeline's and TP's messages.
        (4, &["--pp", "2", "--zero", "1", "--set", "model.num_kv_heads=1", "--set", bucket], &["mpi", "nccl"]),
        (4, &["--tp", "2", "--sequence-parallel", "--zero", "1", "--set", "model.num_kv_heads=1", "--set", bucket], &["mpi", "nccl"]),
        // Interleaved: a stage's two chunks complete their parameters at different times.
        (4, &["--pp", "2", "--vpp", "2", "--zero", "1", "--set", "model.num_layers=4", "--set", "train.global_batch=8", "--set", "model.num_kv_heads=1", "--set", bucket], &["mpi", "nccl"]),
    ];
    for (np, layout, comms) in layouts {
        let (cpu, _) = run(&dir, &data, np, &["--device", "cpu"], layout);
        let mut staged = None;
        for &(comm, want, wire) in comms.iter().filter_map(|c| comm_kinds.iter().find(|k| k.0 == *c).map(|k| &k.1)) {
            let (records, out) = run_records(&dir, &data, np, &["--device", device, "--comm", comm], layout, 2);
            let gpu: Vec<(f64, f64)> = records.iter().map(|r| (r["loss"].as_f64().unwrap(), r["grad_norm"].as_f64().unwrap())).collect();
            // Every byte each group moved, as the analytic count says for this communicator.
            common::assert_traffic(&records, &layout_config(layout), np, wire, &format!("np {np} {layout:?} --comm {comm}"));
            assert!(out.contains(&format!("device: cuda-bf16 on every rank (rank 0: {device_name}")), "{out}");
            assert!(out.contains(&format!("collectives on device buffers (TP, DP and PP groups): {want}\n")), "{out}");
            assert!(out.contains("device memory per rank (peak held by the CUDA backend"), "{out}");
            if comm != "host" && data_parallel(np, layout) > 1 {
                // Every bucket's exchange started as soon as the backward pass completed it.
                let line = out.lines().find(|l| l.starts_with("DP gradient exchange on the device: ")).unwrap_or_else(|| panic!("{out}"));
                let counts: Vec<&str> = line.split(' ').filter(|w| w.parse::<usize>().is_ok()).collect();
                assert!(counts.len() == 2 && counts[0] == counts[1] && counts[0] != "0", "{line}");
            }
            if layout.contains(&"--tp") {
                // Rank 0 (the whole model, pp 1) reduces two column-parallel input gradients per
                // layer and the LM head's per micro-batch, and under SP gathers their saved
                // normalised inputs again, on the TP stream where NCCL is (unless switched off).
                let cfg = layout_config(layout);
                let micro_batches = cfg.train.global_batch / (cfg.train.micro_batch * data_parallel(np, layout));
                let per_input = if cfg.parallel.sequence_parallel { 2 } else { 1 };
                let collectives = per_input * (2 * cfg.model.num_layers + 1) * micro_batches;
                let on_stream = if want.starts_with("NCCL") && cfg.parallel.overlap_tp_backward { collectives } else { 0 };
                let line = format!("TP collectives of the backward pass on the device's TP stream, overlapping its GEMMs: {on_stream} in step 1\n");
                // Printed where the TP group has a device communicator.
                let printed = out.lines().any(|l| l.starts_with("TP collectives of the backward pass"));
                assert_eq!(printed, comm != "host", "{out}");
                assert!(comm == "host" || out.contains(&line), "expected {line:?} in\n{out}");
            }
            assert_eq!(gpu.len(), 2, "{out}");
            assert_matches_cpu(&gpu, &cpu, &format!("np {np} {layout:?} --comm {comm}"));
            // Both paths move the same fp32 values (bf16 activations widened exactly), so a layout
            // run both ways gives identical losses; the gradient norm too, except that ZeRO-1 on
            // the device sums its squares in per-block fp32 partials (the host path in f64).
            match (comm, &staged) {
                ("host", _) => staged = Some(gpu),
                (_, Some(host)) => {
                    for (d, h) in gpu.iter().zip(host) {
                        assert_eq!(d.0, h.0, "np {np} {layout:?}: loss --comm {comm} vs --comm host");
                        assert!((d.1 - h.1).abs() <= 1e-6 * h.1, "np {np} {layout:?}: grad norm --comm {comm} {} vs --comm host {}", d.1, h.1);
                    }
                }
                _ => {}
            }
        }
    }
}

/// LAMB (`optim.name=lamb`) on the device: its two table launches and per-tensor sums on one
/// rank, under ZeRO-1 over DP 2 (the segments' norms summed over DP; staged through the host
/// and in place) and under TP 2 (sharded tensors' norms summed over TP, norm weights counted
/// once), against the CPU backend's LAMB run within the same bf16 tolerances.
#[test]
fn lamb_on_the_device_matches_the_cpu_backend() {
    let (device, device_comm, _, _) = device_under_test();
    let dir = common::tmpdir("cuda-emulated", "lamb");
    let data = sample(&dir);
    let lamb = ["--set", "optim.name=lamb"];
    let layouts: [(usize, &[&str], &[&str]); 3] = [
        (1, &["--set", "model.num_kv_heads=1"], &["host"]),
        (2, &["--zero", "1", "--set", "model.num_kv_heads=1", "--set", "parallel.bucket_size=100000"], &["host", device_comm]),
        (2, &["--tp", "2", "--set", "model.num_kv_heads=2"], &[device_comm]),
    ];
    for (np, layout, comms) in layouts {
        let layout: Vec<&str> = layout.iter().chain(&lamb).copied().collect();
        let (cpu, _) = run(&dir, &data, np, &["--device", "cpu"], &layout);
        for &comm in comms {
            let (gpu, out) = run(&dir, &data, np, &["--device", device, "--comm", comm], &layout);
            assert_eq!(gpu.len(), 2, "{out}");
            assert_matches_cpu(&gpu, &cpu, &format!("lamb np {np} {layout:?} --comm {comm}"));
        }
    }
}

/// ZeroBubble's ZB-H1 on the device: each backward as a B pass and a later W pass (the same
/// backend ops, the output gradients kept in the slot's activation buffers), under PP 2 alone,
/// with ZeRO-1 over DP 2 (every bucket exchanged once its last W pass completes it), and with
/// TP 2 + SP (the W pass gathers its kept rows again): the CPU backend's losses and gradient
/// norms within the bf16 tolerances, and the device's own 1F1B run's exactly (each weight
/// gradient gets the same bf16 inputs and the same GEMMs in the same order, only later).
#[test]
fn zero_bubble_schedule_on_the_device_matches_the_cpu_backend() {
    let (device, device_comm, _, _) = device_under_test();
    let dir = common::tmpdir("cuda-emulated", "zb");
    let data = sample(&dir);
    let zb = ["--pp", "2", "--set", "parallel.schedule=zb-h1", "--set", "train.global_batch=8"];
    let bucket = ["--set", "parallel.bucket_size=100000", "--set", "model.num_kv_heads=1"];
    let layouts: [(usize, Vec<&str>); 3] = [
        (2, [&zb[..], &["--set", "model.num_kv_heads=1"]].concat()),
        (4, [&zb[..], &["--zero", "1"], &bucket].concat()),
        (4, [&zb[..], &["--tp", "2", "--sequence-parallel", "--set", "model.num_kv_heads=2"]].concat()),
    ];
    for (np, layout) in layouts {
        let (cpu, _) = run(&dir, &data, np, &["--device", "cpu"], &layout);
        let (gpu, out) = run(&dir, &data, np, &["--device", device, "--comm", device_comm], &layout);
        if data_parallel(np, &layout) > 1 {
            let line = out.lines().find(|l| l.starts_with("DP gradient exchange on the device: ")).unwrap_or_else(|| panic!("{out}"));
            let counts: Vec<&str> = line.split(' ').filter(|w| w.parse::<usize>().is_ok()).collect();
            assert!(counts.len() == 2 && counts[0] == counts[1] && counts[0] != "0", "{line}");
        }
        let one_f_one_b: Vec<&str> = layout.iter().map(|a| if *a == "parallel.schedule=zb-h1" { "parallel.schedule=1f1b" } else { a }).collect();
        let (fused, _) = run(&dir, &data, np, &["--device", device, "--comm", device_comm], &one_f_one_b);
        assert_eq!(gpu, fused, "zb-h1 np {np} {layout:?}: the device's ZB-H1 run vs its 1F1B run");
        assert_eq!(gpu.len(), 2, "{out}");
        for (step, (g, c)) in gpu.iter().zip(&cpu).enumerate() {
            let (dl, dn) = ((g.0 - c.0).abs() / c.0, (g.1 - c.1).abs() / c.1);
            let what = format!("zb-h1 np {np} {layout:?} step {}", step + 1);
            eprintln!("{what}: loss {:.5} vs cpu {:.5} ({dl:.1e}), grad norm {:.4} vs {:.4} ({dn:.1e})", g.0, c.0, g.1, c.1);
            assert!(dl <= LOSS_TOL, "{what}: loss {} vs cpu {}", g.0, c.0);
            assert!(dn <= NORM_TOL, "{what}: grad norm {} vs cpu {}", g.1, c.1);
        }
    }
}

/// ZeRO-1 on the emulated device keeps the fp32 masters only in the optimizer's segments (the
/// model holds bf16 copies): a checkpoint saved after step 1 and resumed must give steps 2 and 3
/// exactly as the uninterrupted run does. Step 2 reads only the bf16 copies; step 3 also the
/// masters step 2 updated, so it differs if the saved weights were the bf16 copies.
#[test]
fn zero1_on_the_device_resumes_exactly_from_its_fp32_masters() {
    let (device, device_comm, _, _) = device_under_test();
    let dir = common::tmpdir("cuda-emulated", "resume");
    let data = sample(&dir);
    let ckpt = dir.join("ckpt");
    let dev = ["--device", device, "--comm", device_comm];
    let layout = ["--zero", "1", "--set", "model.num_kv_heads=1"];
    let (whole, _) = run_steps(&dir, &data, 2, &dev, &layout, 3);
    let saved: Vec<&str> = layout.iter().copied().chain(["--save", ckpt.to_str().unwrap()]).collect();
    // Step 1 (a warm-up step: the learning rate does not depend on the run's length), saved.
    run_steps(&dir, &data, 2, &dev, &saved, 1);
    let resumed: Vec<&str> = layout.iter().copied().chain(["--load", ckpt.to_str().unwrap()]).collect();
    let (rest, out) = run_steps(&dir, &data, 2, &dev, &resumed, 3);
    assert!(out.contains("checkpoint: resumed from"), "{out}");
    assert_eq!(rest, whole[1..], "steps 2 and 3 after resuming vs the uninterrupted run");
}
