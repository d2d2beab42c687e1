//! `swallow plan`: prints the plan of one layout (memory per pipeline stage by category, step
//! time and its parts, throughput, MFU, wall hours, GPU-hours and cost of the token budget, and
//! how to launch it) or, with `--search`, the ranked table of every valid layout that fits and
//! how to launch the fastest; the last line is JSON.

use super::hardware::{GpuKind, MEMORY_HEADROOM};
use super::launch::Launch;
use super::memory::{self, Memory};
use super::search::{price, search, Candidate};
use super::{Layout, Recompute};
use crate::config::Config;
use crate::model::ParamTable;
use anyhow::{bail, Result};
use serde_json::json;

/// TSUBAME 4.0's internal rate, yen per GPU-hour.
pub const DEFAULT_PRICE_YEN: f64 = 15.625;
/// Rows of the `--search` table.
const SHOWN: usize = 15;

/// Where the plan runs: a GPU kind, or this build's CPU backend (memory only).
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Gpu(GpuKind),
    Cpu,
}

impl Target {
    /// `name` with the GPU kind's memory (GiB) and GPUs per node overridden where given.
    pub fn parse(name: &str, memory_gib: Option<f64>, gpus_per_node: Option<usize>) -> Result<Target> {
        if name == "cpu" {
            return Ok(Target::Cpu);
        }
        let mut g = GpuKind::by_name(name)?;
        if let Some(m) = memory_gib {
            if m.is_nan() || m <= 0.0 {
                bail!("--gpu-memory-gib {m}: expected a positive size");
            }
            g.memory_bytes = m * GIB;
        }
        if let Some(n) = gpus_per_node {
            if n == 0 {
                bail!("--gpus-per-node 0: expected a positive count");
            }
            g.gpus_per_node = n;
        }
        Ok(Target::Gpu(g))
    }
}

pub struct PlanOptions {
    /// The preset name or TOML file given.
    pub config_arg: String,
    /// The settings given (flags and `--set`), `key=value` in order.
    pub settings: Vec<String>,
    /// The configuration with the settings applied.
    pub cfg: Config,
    pub gpus: usize,
    pub target: Target,
    pub recompute: Recompute,
    /// Token budget (default: the config's steps x global batch x seq).
    pub tokens: Option<f64>,
    pub price_yen: f64,
    pub search: bool,
}

const GIB: f64 = (1u64 << 30) as f64;

fn gib(b: f64) -> String {
    format!("{:.2}", b / GIB)
}

/// The plan's budget: (steps, GPU-hours, yen, wall-clock hours).
fn budget(o: &PlanOptions, step_s: f64) -> (f64, f64, f64, f64) {
    let t = &o.cfg.train;
    let per_step = (t.global_batch * t.seq_len) as f64;
    let tokens = o.tokens.unwrap_or(t.steps as f64 * per_step);
    let steps = (tokens / per_step).ceil();
    let hours = steps * step_s / 3600.0;
    let gpu_hours = hours * o.gpus as f64;
    (steps, gpu_hours, gpu_hours * o.price_yen, hours)
}

fn header(o: &PlanOptions) -> String {
    let (m, t) = (&o.cfg.model, &o.cfg.train);
    let params = ParamTable::llama(m).numel() as f64;
    let on = match o.target {
        Target::Gpu(g) => format!(
            "{} x {}, {} GiB each, {} GPUs per node: {}",
            o.gpus, g.name, gib(g.memory_bytes), g.gpus_per_node, g.description
        ),
        Target::Cpu => format!("{} on this build's CPU backend (f32)", crate::parallel::topology::ranks(o.gpus)),
    };
    format!(
        "swallow plan: {} | {:.2}B parameters, {} layers, hidden {}, heads {}/{} kv, vocab {} | seq {}, global batch {} | {on}",
        o.cfg.name, params / 1e9, m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.vocab_size, t.seq_len, t.global_batch
    )
}

/// The per-stage memory table (GiB), rows = stages.
fn memory_table(stages: &[Memory], gpu: Option<&GpuKind>) -> String {
    let mut s = String::from("memory per rank (GiB)");
    let names: Vec<&str> = stages[0].rows().iter().map(|r| r.0).collect();
    s += &format!("\n  {:<6}", "stage");
    for n in &names {
        s += &format!(" {n:>15}");
    }
    s += &format!(" {:>9}", "total");
    for (i, m) in stages.iter().enumerate() {
        s += &format!("\n  {i:<6}");
        for (_, b) in m.rows() {
            s += &format!(" {:>15}", gib(b));
        }
        s += &format!(" {:>9}", gib(m.total()));
        if let Some(g) = gpu {
            s += if g.fits(m.total()) { "  fits" } else { "  DOES NOT FIT" };
        }
    }
    s
}

fn summary_json(o: &PlanOptions, c: &Candidate, gpu: &GpuKind) -> serde_json::Value {
    let l = &c.layout;
    let mut v = json!({
        "model": o.cfg.name, "gpus": o.gpus, "gpu": gpu.name,
        "tp": l.tp, "pp": l.pp, "vpp": l.vpp, "dp": l.dp, "micro_batch": l.micro_batch,
        "recompute": l.recompute.name(), "zero": l.zero, "sequence_parallel": l.sequence_parallel,
        "memory_gib_per_gpu": c.memory.total() / GIB, "fits": c.fits(gpu),
    });
    if let Some(t) = &c.time {
        let (steps, gpu_hours, yen, hours) = budget(o, t.step_s);
        let obj = v.as_object_mut().expect("an object");
        for (k, x) in [
            ("step_time_s", t.step_s),
            ("bubble", t.bubble),
            ("tokens_per_s", t.tokens_per_s),
            ("tflops_per_gpu", t.tflops),
            ("mfu", t.mfu),
            ("tokens", steps * (o.cfg.train.global_batch * o.cfg.train.seq_len) as f64),
            ("gpu_hours", gpu_hours),
            ("wall_hours", hours),
            ("cost_yen", yen),
        ] {
            obj.insert(k.into(), json!(x));
        }
        obj.insert("steps".into(), json!(steps as u64));
    }
    v
}

/// `swallow plan`.
pub fn run(o: &PlanOptions) -> Result<()> {
    if o.gpus == 0 {
        bail!("--gpus 0: expected a positive number of GPUs");
    }
    if o.tokens.is_some_and(|t| t.is_nan() || t <= 0.0) || o.price_yen.is_nan() || o.price_yen < 0.0 {
        bail!("--tokens must be > 0 and --price-per-gpu-hour >= 0");
    }
    println!("{}", header(o));
    let gpu = match o.target {
        Target::Cpu => return run_cpu(o),
        Target::Gpu(g) => g,
    };
    if o.cfg.parallel.zero == 2 {
        // Train and plan agree: no GPU plan proposes a layout `train --device cuda` refuses.
        bail!(
            "parallel.zero = 2 (--zero 2): ZeRO-2 runs on the CPU backend only for now (`train --device cuda` refuses it), \
             so there is no GPU plan for it; plan with --zero 1, or the CPU backend's memory with --gpu cpu"
        );
    }
    if o.search {
        return run_search(o, &gpu);
    }
    let l = Layout::from_config(&o.cfg, o.gpus, o.recompute)?;
    if l.tp > gpu.gpus_per_node {
        bail!("--tp {}: tensor parallelism spans more than the {} GPUs of a {} node", l.tp, gpu.gpus_per_node, gpu.name);
    }
    println!("layout: {}", l.describe());
    let stages = (0..l.pp).map(|s| memory::gpu(&o.cfg, &l, s)).collect::<Result<Vec<_>>>()?;
    println!("{}", memory_table(&stages, Some(&gpu)));
    println!("  {}", capacity(&gpu));
    let c = price(&o.cfg, &l, &gpu)?;
    match &c.time {
        Some(t) => {
            println!(
                "step: {:.3} s = pipeline {:.3} s (bubble {:.1}% from the {} schedule; of it tp comm {:.3} s, pp sends {:.3} s) + dp comm {:.3} s + optimizer {:.3} s",
                t.step_s, t.pipeline_s, 100.0 * t.bubble, l.schedule.name(), t.tp_comm_s, t.pp_comm_s, t.dp_comm_s, t.optimizer_s
            );
            println!(
                "throughput: {:.0} tokens/s | {:.0} TFLOP/s per GPU | MFU {:.1}% (peak {} TFLOP/s)",
                t.tokens_per_s, t.tflops, 100.0 * t.mfu, gpu.peak_tflops
            );
            let (steps, gpu_hours, yen, hours) = budget(o, t.step_s);
            let tokens = steps * (o.cfg.train.global_batch * o.cfg.train.seq_len) as f64;
            println!(
                "budget: {:.2}B tokens = {steps:.0} steps | {hours:.1} h on {} GPUs = {gpu_hours:.0} GPU-hours | {yen:.0} yen at {} yen per GPU-hour",
                tokens / 1e9, o.gpus, o.price_yen
            );
            print_launch(o, &l, &gpu);
        }
        None => println!("does not fit in {} GiB: no time estimate (try --search)", gib(gpu.plannable_bytes())),
    }
    println!("{}", summary_json(o, &c, &gpu));
    Ok(())
}

/// The capacity line: the memory, and what of it a plan may fill.
fn capacity(gpu: &GpuKind) -> String {
    format!(
        "capacity {} GiB per GPU; a layout fits within {} GiB ({:.0}% kept free for allocator fragmentation, NCCL buffers created later and other contexts, beyond the fixed CUDA/NCCL row)",
        gib(gpu.memory_bytes),
        gib(gpu.plannable_bytes()),
        100.0 * MEMORY_HEADROOM
    )
}

/// How to launch `l`: the mpirun line and the job scripts' variables.
fn print_launch(o: &PlanOptions, l: &Layout, gpu: &GpuKind) {
    if l.recompute == Recompute::None {
        println!("launch: none (training recomputes the attention core at least: --recompute selective or full)");
        return;
    }
    let launch = Launch { config_arg: &o.config_arg, cfg: &o.cfg, settings: &o.settings, gpus: o.gpus, gpus_per_node: gpu.gpus_per_node };
    println!("launch ($DATA: the data spec, $SAVE: the checkpoint directory, $SCHEDULER: slurm, pbs or age):");
    println!("  {}", launch.mpirun_line(l));
    for line in launch.job_script_lines(l) {
        println!("  {line}");
    }
}

fn run_search(o: &PlanOptions, gpu: &GpuKind) -> Result<()> {
    let all = search(&o.cfg, o.gpus, gpu)?;
    let fitting: Vec<&Candidate> = all.iter().filter(|c| c.time.is_some()).collect();
    println!("{} valid layouts of {} GPUs, {} fit; fastest first:", all.len(), o.gpus, fitting.len());
    println!("  {}", capacity(gpu));
    println!(
        "  {:>3} {:>3} {:>3} {:>3} {:>4} {:>3} {:>10} {:>11} {:>8} {:>8} {:>7} {:>11} {:>6} {:>8} {:>10} {:>12}",
        "#", "tp", "pp", "vpp", "dp", "mb", "recompute", "schedule", "mem GiB", "step s", "bubble", "tokens/s", "MFU", "wall h", "GPU-hours", "yen"
    );
    for (i, c) in fitting.iter().take(SHOWN).enumerate() {
        let (l, t) = (&c.layout, c.time.as_ref().expect("fitting layouts are timed"));
        let (_, gpu_hours, yen, hours) = budget(o, t.step_s);
        println!(
            "  {:>3} {:>3} {:>3} {:>3} {:>4} {:>3} {:>10} {:>11} {:>8} {:>8.3} {:>6.1}% {:>11.0} {:>5.1}% {:>8.1} {:>10.0} {:>12.0}",
            i + 1, l.tp, l.pp, l.vpp, l.dp, l.micro_batch, l.recompute.name(), l.schedule.name(), gib(c.memory.total()),
            t.step_s, 100.0 * t.bubble, t.tokens_per_s, 100.0 * t.mfu, hours, gpu_hours, yen
        );
    }
    let best = match fitting.first() {
        Some(c) => {
            println!("fastest: {}", c.layout.describe());
            print_launch(o, &c.layout, gpu);
            summary_json(o, c, gpu)
        }
        None => {
            println!(
                "no layout fits in {} GiB; the smallest needs {} GiB",
                gib(gpu.plannable_bytes()),
                all.first().map(|c| gib(c.memory.total())).unwrap_or_default()
            );
            serde_json::Value::Null
        }
    };
    println!("{}", json!({ "layouts": all.len(), "fit": fitting.len(), "best": best }));
    Ok(())
}

/// Memory of this build's CPU backend per pipeline stage (DP rank 0); no time model.
fn run_cpu(o: &PlanOptions) -> Result<()> {
    if o.search {
        bail!("--search prices GPU layouts: pass --gpu h100, h200 or a100");
    }
    let l = Layout::from_config(&o.cfg, o.gpus, o.recompute)?;
    println!("layout: {} (f32 weights, gradients, moments and activations; the attention never keeps its probabilities, so none = selective)", l.describe());
    let stages = (0..l.pp).map(|s| memory::cpu(&o.cfg, &l, s, 0)).collect::<Result<Vec<_>>>()?;
    println!("{}", memory_table(&stages, None));
    let per_stage: Vec<f64> = stages.iter().map(|m| m.total()).collect();
    println!("{}", json!({ "model": o.cfg.name, "ranks": o.gpus, "device": "cpu", "tp": l.tp, "pp": l.pp, "dp": l.dp, "bytes_per_stage": per_stage }));
    Ok(())
}
