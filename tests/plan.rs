//! The planner against what really happens: its CPU memory model against the heap every rank of
//! a real mpirun training holds (counted by the binary's allocator), per rank, within 10%; the
//! 64-rank dry run of a 7B layout on this machine (plans every rank, builds no model); and the
//! `swallow plan` command's output and errors.

mod common;
use common::{mpirun, sample, tmpdir};
use std::process::Command;
use swallow::config::Config;
use swallow::parallel::Topology;
use swallow::plan::{memory, Layout, Recompute};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// The `  rank R: measured X MiB` lines of a training run, in rank order.
fn measured_per_rank(stdout: &str) -> Vec<f64> {
    stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rank ")?.split_once(": measured ").map(|(_, rest)| rest))
        .map(|rest| rest.split_whitespace().next().unwrap().parse::<f64>().unwrap() * MIB)
        .collect()
}

#[test]
fn planned_cpu_memory_matches_the_heap_each_rank_holds_within_10_percent() {
    let dir = tmpdir("plan", "heap");
    let data = sample(&dir);
    // (ranks, overrides): one rank; TP; PP (stages hold different layers and micro-batches);
    // TP x DP with ZeRO-1 and sequence parallelism; interleaved PP with tied embeddings split
    // over the stages; DP with replicated AdamW; TP beyond the KV heads (replicated KV heads).
    let cases: &[(usize, &[&str])] = &[
        (1, &[]),
        (2, &["parallel.tp=2"]),
        (2, &["parallel.pp=2"]),
        (4, &["parallel.tp=2", "parallel.zero=1", "parallel.sequence_parallel=true"]),
        (4, &["parallel.pp=2", "parallel.vpp=2", "train.global_batch=32", "model.tie_embeddings=true"]),
        (4, &["train.global_batch=32"]),
        (4, &["parallel.tp=4", "parallel.zero=1", "parallel.bucket_size=20000"]),
    ];
    for (np, sets) in cases {
        let mut args = vec!["train", "--config", "tiny", "--data", &data, "--steps", "2"];
        for s in sets.iter() {
            args.extend(["--set", s]);
        }
        let o = mpirun(*np, &args);
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{sets:?}: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
        let measured = measured_per_rank(&stdout);
        assert_eq!(measured.len(), *np, "{sets:?}: one measurement per rank in\n{stdout}");
        let overrides: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let cfg = Config::load("tiny", &overrides).unwrap();
        let layout = Layout::from_config(&cfg, *np, Recompute::None).unwrap();
        for (rank, got) in measured.iter().enumerate() {
            let topo = Topology::new(*np, rank, cfg.parallel.tp, cfg.parallel.pp).unwrap();
            let planned = memory::cpu(&cfg, &layout, topo.pp_rank, topo.dp_rank).unwrap().total();
            let err = got / planned - 1.0;
            assert!(
                err.abs() < 0.10,
                "{sets:?} rank {rank}: measured {:.2} MiB, planned {:.2} MiB ({:+.1}%)",
                got / MIB,
                planned / MIB,
                100.0 * err
            );
        }
    }
}

/// ZeRO-2 against ZeRO-1 on a model whose layers outweigh its embeddings (8 layers of hidden
/// 256, 7.9M parameters, buckets of 250k elements) for DP 1, 2, 4 and 8: every rank's counted
/// heap within 10% of the planner's, and the bytes per parameter of weights, gradients and
/// optimizer state (the heap less the planner's activations, scratch and staging) within
/// 0.5 byte of the CPU formula (docs/ARCHITECTURE.md): ZeRO-1 4 + 4 + 4 + 20/DP (weights, the
/// model's gradients, their host copy, and per owned element master, gradient, m, v and the
/// reduced block), ZeRO-2 4 + 20/DP + the gradients in flight (two buckets' staging, one
/// received block and the largest group one backward writes).
#[test]
fn zero2_bytes_per_parameter_fall_with_dp_as_the_formula_says() {
    use swallow::optim::grad_layout::GradLayout;
    let dir = tmpdir("plan", "zero2");
    let data = sample(&dir);
    let sets = ["model.num_layers=8", "model.hidden_size=256", "model.ffn_hidden_size=704", "train.micro_batch=2", "parallel.bucket_size=250000"];
    let mut rows = Vec::new();
    for np in [1usize, 2, 4, 8] {
        for zero in ["1", "2"] {
            let mut args = vec!["train", "--config", "tiny", "--data", &data, "--steps", "2", "--zero", zero];
            sets.iter().for_each(|s| args.extend(["--set", s]));
            let o = mpirun(np, &args);
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success(), "np {np} zero {zero}: {}\n{stdout}", String::from_utf8_lossy(&o.stderr));
            let measured = measured_per_rank(&stdout);
            assert_eq!(measured.len(), np, "one measurement per rank in\n{stdout}");
            let mut overrides: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            overrides.push(format!("parallel.zero={zero}"));
            let cfg = Config::load("tiny", &overrides).unwrap();
            let layout = Layout::from_config(&cfg, np, Recompute::None).unwrap();
            let st = memory::StageShape::new(&cfg, &layout, 0).unwrap();
            let p = st.params as f64;
            for (rank, got) in measured.iter().enumerate() {
                let m = memory::cpu(&cfg, &layout, 0, rank).unwrap();
                let err = got / m.total() - 1.0;
                assert!(err.abs() < 0.10, "np {np} zero {zero} rank {rank}: measured {:.2} MiB, planned {:.2} MiB", got / MIB, m.total() / MIB);
                // ZeRO-1's host copy of the gradient buffer counts as gradient memory.
                let flat = if zero == "1" { 4.0 * GradLayout::new(&st.param_lens, cfg.parallel.bucket_size, np).total as f64 } else { 0.0 };
                let state = m.weights + m.grads + m.optimizer + flat;
                let measured_state = got - (m.total() - state);
                let (got_bpp, want_bpp) = (measured_state / p, state / p);
                println!("dp {np} zero {zero} rank {rank}: {got_bpp:.2} bytes/parameter measured, {want_bpp:.2} by the formula ({:.2} MiB heap)", got / MIB);
                assert!((got_bpp - want_bpp).abs() < 0.5, "np {np} zero {zero} rank {rank}: {got_bpp:.2} vs {want_bpp:.2} bytes/parameter");
                rows.push((np, zero, got_bpp));
            }
        }
    }
    // ZeRO-2 holds less than ZeRO-1 at every DP size, by at least 4 bytes per parameter.
    for np in [1, 2, 4, 8] {
        let of = |z: &str| rows.iter().filter(|r| r.0 == np && r.1 == z).map(|r| r.2).fold(0.0, f64::max);
        assert!(of("2") < of("1") - 4.0, "dp {np}: zero 2 {:.2} vs zero 1 {:.2} bytes/parameter", of("2"), of("1"));
    }
}

#[test]
fn dry_run_of_64_ranks_plans_every_rank_without_building_the_model() {
    let dir = tmpdir("plan", "dry64");
    let data = sample(&dir);
    let o = mpirun(64, &["train", "--config", "swallow-7b", "--data", &data, "--dry-run", "--gpu", "a100"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("topology: world 64 = tp 2 x dp 16 x pp 2"), "{stdout}");
    assert!(stdout.contains("pp [0, 32]") && stdout.contains("layers per virtual stage [16, 16]"), "{stdout}");
    let cfg = Config::load("swallow-7b", &[]).unwrap();
    let layout = Layout::from_config(&cfg, 64, Recompute::Selective).unwrap();
    for (stage, ranks) in [(0, "ranks 0-31"), (1, "ranks 32-63")] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&format!("stage {stage} ({ranks})")))
            .unwrap_or_else(|| panic!("no line for stage {stage} in\n{stdout}"));
        let gib: f64 = line.split("a100 ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
        let planned = memory::gpu(&cfg, &layout, stage).unwrap().total() / GIB;
        assert!((gib - planned).abs() < 0.01, "stage {stage}: printed {gib} GiB, planner {planned:.3}");
    }
    // A 7B model's f32 weights alone would be > 3 GiB on every rank of this layout.
    let peak: f64 = stdout.split("heap peaked at ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(peak < 64.0, "rank 0 allocated {peak} MiB in a dry run");
}

fn plan(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_swallow")).arg("plan").args(args).output().unwrap()
}

fn last_json(o: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn plan_prints_the_layout_budget_and_json() {
    let j = last_json(&plan(&["--model", "swallow-7b", "--gpus", "32", "--gpu", "a100", "--tokens", "1e11"]));
    assert_eq!((j["tp"].as_u64(), j["pp"].as_u64(), j["dp"].as_u64()), (Some(2), Some(2), Some(8)));
    assert_eq!(j["fits"], true);
    // 1e11 tokens at 1024 x 4096 tokens per step: 23,842 steps (rounded up).
    assert_eq!(j["steps"].as_u64(), Some(23_842));
    let (step, hours, yen) = (j["step_time_s"].as_f64().unwrap(), j["gpu_hours"].as_f64().unwrap(), j["cost_yen"].as_f64().unwrap());
    assert!((hours - 23_842.0 * step * 32.0 / 3600.0).abs() < 1e-6 * hours);
    assert!((yen - 15.625 * hours).abs() < 1e-6 * yen, "TSUBAME's 15.625 yen per GPU-hour is the default");
    let tok = j["tokens_per_s"].as_f64().unwrap();
    assert!((tok * step - 1024.0 * 4096.0).abs() < 1e-6 * tok * step);

    let s = last_json(&plan(&["--model", "swallow-7b", "--gpus", "32", "--gpu", "a100", "--search"]));
    let best = &s["best"];
    assert_eq!(best["fits"], true);
    assert!(best["step_time_s"].as_f64().unwrap() <= step + 1e-9, "the search's best is no slower than the preset layout");
    assert!(s["fit"].as_u64().unwrap() >= 1 && s["layouts"].as_u64() >= s["fit"].as_u64());

    let cpu = last_json(&plan(&["--config", "tiny", "--gpus", "2", "--gpu", "cpu", "--pp", "2"]));
    assert_eq!(cpu["bytes_per_stage"].as_array().unwrap().len(), 2);
}

#[test]
fn zero2_is_planned_for_the_cpu_backend_only() {
    // `train --device cuda` refuses --zero 2: no GPU plan (single layout or search) proposes it.
    for extra in [&[][..], &["--search"][..]] {
        let o = plan(&[&["--model", "swallow-7b", "--gpus", "32", "--gpu", "a100", "--zero", "2"][..], extra].concat());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?}: {}", String::from_utf8_lossy(&o.stdout));
        assert!(err.contains("ZeRO-2 runs on the CPU backend only for now"), "{extra:?}: {err}");
    }
    let cpu = last_json(&plan(&["--config", "tiny", "--gpus", "2", "--gpu", "cpu", "--zero", "2"]));
    assert_eq!(cpu["bytes_per_stage"].as_array().unwrap().len(), 1);
}

#[test]
fn search_ranks_only_what_fits_with_headroom_and_can_train() {
    // The field test: swallow-7b on 32 A100 40 GB ranked first a layout planned at 39.87 GiB
    // without recomputation, which training cannot run and the GPU cannot hold.
    let o = plan(&["--model", "swallow-7b", "--gpus", "32", "--gpu", "a100", "--search"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let s = last_json(&o);
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.len() == 16 && w[0].parse::<usize>().is_ok())
        .collect();
    assert_eq!(rows.len(), 15, "{stdout}");
    for w in &rows {
        assert!(w[6] == "selective" || w[6] == "full", "{w:?}");
        assert!(["1f1b", "interleaved", "zb-h1"].contains(&w[7]), "{w:?}");
        assert!(w[6] == "selective" || w[7] != "zb-h1", "zb-h1 cannot run under full recomputation: {w:?}");
        assert!(w[8].parse::<f64>().unwrap() <= 36.0, "within 90% of 40 GiB: {w:?}");
    }
    let best = &s["best"];
    assert!(best["memory_gib_per_gpu"].as_f64().unwrap() <= 36.0 && best["recompute"] != "none", "{best}");
    // Wall hours sit beside the GPU-hours: GPU-hours = wall hours x GPUs.
    let (wall, gpu_hours) = (best["wall_hours"].as_f64().unwrap(), best["gpu_hours"].as_f64().unwrap());
    assert!((wall * 32.0 - gpu_hours).abs() < 1e-6 * gpu_hours);
    assert!(stdout.contains(&format!("{:.1}", wall)), "the table shows wall hours: {stdout}");
    // The 70B preset plans on 8-GPU H100 nodes by default, and the header says so.
    let o = plan(&["--model", "swallow-70b", "--gpus", "256", "--gpu", "h100"]);
    let head = String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string();
    assert_eq!(last_json(&o)["tp"].as_u64(), Some(8));
    assert!(head.contains("8 GPUs per node"), "{head}");
    let o = plan(&["--model", "swallow-70b", "--gpus", "256", "--gpu", "h100", "--gpus-per-node", "4", "--tp", "4"]);
    assert!(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().contains("4 GPUs per node"));
}

#[test]
fn the_printed_launch_line_runs_the_planned_layout() {
    // The search's mpirun line, run as printed (swallow on PATH, $DATA and $SAVE set) with only
    // a CPU dry run added, starts 4 real ranks in exactly the layout the search ranked first.
    let dir = tmpdir("plan", "launch");
    let data = sample(&dir);
    let o = plan(&["--model", "tiny", "--gpus", "4", "--gpu", "a100", "--gpus-per-node", "4", "--search", "--set", "train.lr=1e-3"]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let best = stdout.lines().find_map(|l| l.strip_prefix("fastest: ")).expect("a fastest layout").to_string();
    let line = stdout.lines().find_map(|l| l.trim().starts_with("mpirun ").then(|| l.trim().to_string())).expect("an mpirun line");
    assert!(line.contains("--set train.lr=1e-3"), "the plan's settings travel: {line}");
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_swallow")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let run = Command::new("bash")
        .arg("-c")
        .arg(format!("{line} --device cpu --dry-run"))
        .current_dir(&dir)
        .env("PATH", path)
        .env("DATA", &data)
        .env("SAVE", dir.join("ckpt"))
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let out = common::succeeded(&run, &line);
    assert!(out.lines().any(|l| l == format!("layout: {best}")), "planned {best}\n{out}");
    assert!(!dir.join("ckpt").exists(), "a dry run creates nothing");
}

#[test]
fn plan_rejects_bad_input_with_one_line() {
    for (args, needle) in [
        (vec!["--model", "swallow-7b", "--gpus", "32", "--gpu", "v100"], "v100"),
        (vec!["--model", "swallow-7b", "--gpus", "48", "--tp", "3", "--pp", "1"], "parallel.tp = 3"),
        (vec!["--model", "swallow-7b", "--gpus", "30"], "world size 30"),
        (vec!["--model", "swallow-7b", "--gpus", "32", "--recompute", "some"], "--recompute"),
        (vec!["--model", "swallow-7b", "--gpus", "32", "--gpu", "h100-94", "--tp", "8"], "--tp 8"),
        (vec!["--gpus", "8"], "--model"),
    ] {
        let o = plan(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(needle) && err.lines().count() == 1, "{args:?}: {err}");
    }
}
