//! `swallow-gpu-bench`: the training benchmark of the GPU check (scripts/gpu-check.sh). One
//! process, no MPI and no HDF5 (so the binary runs on a bare GPU machine): Llama-shaped layers
//! (default Llama-2-7B's, as many as fit the GPU by the planner's memory model) at seq 4096,
//! TP = 1, trained on random tokens through the CUDA backend (bf16, fp32 master weights,
//! replicated AdamW). Prints tokens/s, TFLOP/s and MFU (PaLM formula, src/metrics.rs), peak device
//! memory beside the plan, then one profiled step (each launch and GEMM synchronised and timed):
//! every kernel's and GEMM kind's share of the step, the GEMM rate and the flash-attention
//! kernels' rate, and a short table. `--compare-cpu` instead trains a few steps on the device and
//! on the CPU backend and checks they agree within the bf16 tolerances (the GPU check's
//! equivalence stage). `--emulated` runs it on the CPU emulation (tests).

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::sync::Arc;
use std::time::Instant;
use swallow::backend::cpu::CpuBackend;
use swallow::backend::cuda::backend::CudaBackend;
use swallow::backend::cuda::{GRAD_NORM_TOLERANCE, LOSS_TOLERANCE};
use swallow::backend::cuda::driver::{DriverOptions, DriverRuntime};
use swallow::backend::cuda::emulated::EmulatedRuntime;
use swallow::backend::cuda::probe::device_info;
use swallow::backend::cuda::runtime::Runtime;
use swallow::config::Config;
use swallow::parallel::ParallelGroups;
use swallow::plan::hardware::GPU_KINDS;
use swallow::parallel::Topology;
use swallow::plan::ranks::planned_device_bytes;
use swallow::trainer::Trainer;

const GIB: f64 = (1u64 << 30) as f64;
/// Device memory left outside the planned bytes when choosing the layer count: CUDA context,
/// cuBLASLt workspace, module images, fragmentation.
const HEADROOM_BYTES: f64 = 3.0 * GIB;

#[derive(Parser)]
#[command(about = "Training benchmark of Llama-shaped layers on one GPU through swallow's CUDA backend")]
struct Args {
    /// Model configuration (name or TOML file) whose layer shapes are benchmarked.
    #[arg(long, default_value = "llama2-7b")]
    config: String,
    /// Decoder layers (default: as many as fit the GPU by the planner's memory model).
    #[arg(long)]
    layers: Option<usize>,
    #[arg(long, default_value_t = 4096)]
    seq: usize,
    #[arg(long, default_value_t = 1)]
    micro_batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 4)]
    accumulation: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Any config field: --set section.key=value (repeatable).
    #[arg(long = "set")]
    sets: Vec<String>,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    device: usize,
    /// Run on the CPU emulation of the device (tests; tiny shapes only, or with --memory-only).
    #[arg(long)]
    emulated: bool,
    /// Build the model and optimizer, print the device memory they hold beside the plan, and stop
    /// before the first step (the plan's check at real shapes on the emulated device).
    #[arg(long)]
    memory_only: bool,
    /// Train `--steps` steps on the device and on the CPU backend from the same initial weights
    /// and batch, print both runs' losses and gradient norms, and fail unless they agree within
    /// the bf16 tolerances (the GPU check's equivalence stage; needs --layers).
    #[arg(long)]
    compare_cpu: bool,
}

fn config(a: &Args, layers: usize) -> Result<Config> {
    let mut sets = a.sets.clone();
    sets.extend([
        format!("model.num_layers={layers}"),
        format!("train.seq_len={}", a.seq),
        format!("train.micro_batch={}", a.micro_batch),
        format!("train.global_batch={}", a.micro_batch * a.accumulation),
        "parallel.tp=1".into(),
        "parallel.pp=1".into(),
    ]);
    Config::load(&a.config, &sets)
}

/// Planned device bytes of the benchmark's one rank (`swallow train`'s plan for a single rank).
fn planned_bytes(cfg: &Config) -> Result<f64> {
    planned_device_bytes(cfg, &Topology::new(1, 0, 1, 1)?)
}

/// The most layers (up to the configuration's) whose plan fits `capacity` bytes with headroom.
fn layers_that_fit(a: &Args, capacity: f64) -> Result<usize> {
    let most = Config::load(&a.config, &a.sets)?.model.num_layers;
    let mut fit = 0;
    for layers in 1..=most {
        if planned_bytes(&config(a, layers)?)? + HEADROOM_BYTES > capacity {
            break;
        }
        fit = layers;
    }
    if fit == 0 {
        bail!("not even one layer of {} at seq {} fits {:.1} GiB", a.config, a.seq, capacity / GIB);
    }
    Ok(fit)
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if let Err(e) = run(&Args::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// `--compare-cpu`: the device run against the CPU backend's f32 run, step by step.
fn compare_with_cpu(a: &Args, cfg: &Config, device: &mut Trainer<CudaBackend>, batch: &[u32]) -> Result<()> {
    let mut cpu = Trainer::new(Arc::new(CpuBackend::<f32>::new()), cfg, ParallelGroups::single())?;
    println!("| step | loss (device) | loss (CPU) | rel. diff | grad norm (device) | grad norm (CPU) | rel. diff |");
    println!("|---|---|---|---|---|---|---|");
    let mut worst = (0.0f64, 0.0f64);
    for step in 1..=a.steps {
        let (d, c) = (device.train_step(batch), cpu.train_step(batch));
        let (dl, dn) = ((d.loss - c.loss).abs() / c.loss.abs(), (d.grad_norm - c.grad_norm).abs() / c.grad_norm.abs());
        println!("| {step} | {:.6} | {:.6} | {dl:.1e} | {:.5} | {:.5} | {dn:.1e} |", d.loss, c.loss, d.grad_norm, c.grad_norm);
        worst = (worst.0.max(dl), worst.1.max(dn));
    }
    if !(worst.0 <= LOSS_TOLERANCE && worst.1 <= GRAD_NORM_TOLERANCE) {
        bail!(
            "the device run strays from the CPU run: loss by {:.1e} (tolerance {LOSS_TOLERANCE:.0e}), grad norm by {:.1e} (tolerance {GRAD_NORM_TOLERANCE:.0e})",
            worst.0, worst.1
        );
    }
    println!("device and CPU runs agree: loss within {:.1e}, grad norm within {:.1e} (tolerances {LOSS_TOLERANCE:.0e}, {GRAD_NORM_TOLERANCE:.0e})", worst.0, worst.1);
    Ok(())
}

fn run(a: &Args) -> Result<()> {
    let t_start = Instant::now();
    // The device, its peak bf16 rate (for MFU), and the layer count.
    let (runtime, device, peak_tflops, layers): (Arc<dyn Runtime>, String, Option<f64>, usize) = if a.emulated {
        let layers = a.layers.context("--emulated needs --layers")?;
        (Arc::new(EmulatedRuntime::new()), "emulated device".into(), None, layers)
    } else {
        let (name, capacity) = device_info(a.device)?;
        let kind = GPU_KINDS.iter().find(|k| name.to_lowercase().contains(k.name));
        let layers = match a.layers {
            Some(l) => l,
            None => layers_that_fit(a, capacity as f64)?,
        };
        let rt = DriverRuntime::new(&DriverOptions { ordinal: a.device, ..Default::default() })?;
        (Arc::new(rt), format!("{name} ({:.1} GiB)", capacity as f64 / GIB), kind.map(|k| k.peak_tflops), layers)
    };
    let cfg = config(a, layers)?;
    let m = &cfg.model;
    let peak_tflops = peak_tflops.unwrap_or(cfg.train.peak_tflops);
    println!(
        "swallow-gpu-bench: {} | {layers} layers of hidden {}, ffn {}, heads {}/{} kv, vocab {} | seq {} | {} x {} micro-batches per step | TP 1",
        device, m.hidden_size, m.ffn_hidden_size, m.num_heads, m.num_kv_heads, m.vocab_size, a.seq, a.accumulation, a.micro_batch
    );
    let backend = Arc::new(CudaBackend::new(runtime)?);
    let t0 = Instant::now();
    let mut trainer = Trainer::new(backend.clone(), &cfg, ParallelGroups::single())?;
    println!("model and optimizer built and initialised in {:.1} s", t0.elapsed().as_secs_f64());
    let planned = planned_bytes(&cfg)?;
    if a.memory_only {
        let held = backend.instruments().memory().live as f64;
        println!("device memory held before the first step: {:.3} GiB, plan {:.3} GiB ({:+.1}%)", held / GIB, planned / GIB, 100.0 * (held / planned - 1.0));
        return Ok(());
    }

    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let batch: Vec<u32> = (0..trainer.local_batch() * (a.seq + 1))
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 33) % m.vocab_size as u64) as u32
        })
        .collect();
    if a.compare_cpu {
        return compare_with_cpu(a, &cfg, &mut trainer, &batch);
    }
    let sync = || backend.synchronize().context("device");
    let t0 = Instant::now();
    let warm = trainer.train_step(&batch);
    sync()?;
    println!("warm-up step: {:.2} s, loss {:.4}", t0.elapsed().as_secs_f64(), warm.loss);
    let mut times = Vec::new();
    for _ in 0..a.steps {
        let t0 = Instant::now();
        trainer.train_step(&batch);
        sync()?;
        times.push(t0.elapsed().as_secs_f64());
    }
    let step_s = times.iter().sum::<f64>() / times.len().max(1) as f64;
    let tokens = (a.micro_batch * a.accumulation * a.seq) as f64;
    let tokens_per_s = tokens / step_s;
    let tflops = swallow::metrics::flops_per_token(m, a.seq) * tokens_per_s / 1e12;
    let mfu = tflops / peak_tflops;
    let peak_mem = backend.instruments().memory().peak;

    // One profiled step: shares of each kernel and GEMM kind.
    backend.instruments().enable_timing(true);
    let t0 = Instant::now();
    trainer.train_step(&batch);
    sync()?;
    let profiled_s = t0.elapsed().as_secs_f64();
    backend.instruments().enable_timing(false);
    let totals = backend.instruments().totals();
    let kernel_s: f64 = totals.values().map(|t| t.seconds).sum();
    let mut rows: Vec<_> = totals.iter().collect();
    rows.sort_by(|x, y| y.1.seconds.total_cmp(&x.1.seconds));
    println!("profiled step: {profiled_s:.3} s, of which {kernel_s:.3} s in launches and GEMMs (each synchronised):");
    println!("  {:<36} {:>7} {:>10} {:>7} {:>9}", "kernel", "calls", "ms", "share", "TFLOP/s");
    for (name, t) in &rows {
        let rate = if t.flops > 0.0 { format!("{:.1}", t.flops / t.seconds / 1e12) } else { String::new() };
        println!("  {name:<36} {:>7} {:>10.2} {:>6.1}% {rate:>9}", t.calls, 1e3 * t.seconds, 100.0 * t.seconds / kernel_s);
    }
    let gemm_flops: f64 = totals.values().map(|t| t.flops).sum();
    let gemm_s: f64 = totals.iter().filter(|(_, t)| t.flops > 0.0).map(|(_, t)| t.seconds).sum();
    // Causal attention per layer and micro-batch: forward 2 matmuls of b s^2 h d (half the scores
    // computed), backward 5 of them: 7 b s^2 h d in all.
    let attn_flops = 7.0 * (a.micro_batch * a.seq * a.seq * m.num_heads * m.head_dim()) as f64 * (layers * a.accumulation) as f64;
    let attn_s: f64 = totals.iter().filter(|(n, _)| n.starts_with("flash_attn")).map(|(_, t)| t.seconds).sum();
    let (gemm_rate, attn_rate) = (gemm_flops / gemm_s / 1e12, attn_flops / attn_s / 1e12);
    println!("GEMM FLOPs per step: {gemm_flops:.0}");

    println!("| measure | value |");
    println!("|---|---|");
    println!("| device | {device} |");
    println!("| layers x seq x tokens/step | {layers} x {} x {tokens:.0} |", a.seq);
    println!("| step time (mean of {}) | {:.3} s |", times.len(), step_s);
    println!("| tokens/s | {tokens_per_s:.0} |");
    println!("| TFLOP/s (PaLM formula) | {tflops:.1} |");
    println!("| MFU (peak {peak_tflops} TFLOP/s) | {:.1}% |", 100.0 * mfu);
    println!("| GEMM rate (profiled) | {gemm_rate:.1} TFLOP/s |");
    println!("| flash attention rate (profiled) | {attn_rate:.1} TFLOP/s = {:.0}% of GEMM |", 100.0 * attn_rate / gemm_rate);
    println!("| peak device memory (backend) | {:.2} GiB, plan {:.2} GiB ({:+.1}%) |", peak_mem as f64 / GIB, planned / GIB, 100.0 * (peak_mem as f64 / planned - 1.0));
    println!("| wall time | {:.0} s |", t_start.elapsed().as_secs_f64());
    Ok(())
}
