//! The planner inside `swallow train`: the dry run's report (topology, layout, pipeline, data
//! slice, and the memory plan of every rank, gathered to rank 0) without building the model, and
//! after training the heap each rank really held next to what the planner predicted for it.

use super::hardware::GpuKind;
use super::{memory, Layout};
use crate::config::Config;
use crate::parallel::{MpiWorld, Topology};
use anyhow::Result;
use mpi::collective::CommunicatorCollectives;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Every rank's `values` (the same count on each), in rank order.
fn all_ranks(mpi: &MpiWorld, values: &[f64]) -> Vec<Vec<f64>> {
    let mut all = vec![0.0; values.len() * mpi.size()];
    mpi.world.all_gather_into(values, &mut all[..]);
    all.chunks(values.len()).map(<[f64]>::to_vec).collect()
}

/// The layout of the training run `cfg` asks for, with its recomputation.
fn train_layout(cfg: &Config, topo: &Topology) -> Result<Layout> {
    Layout::from_config(cfg, topo.world, cfg.train.recompute)
}

/// This rank's planned device bytes with the CUDA backend: the planner's bf16 model for the run's
/// layout without its fixed CUDA/NCCL overhead (what the backend itself allocates).
pub fn planned_device_bytes(cfg: &Config, topo: &Topology) -> Result<f64> {
    let m = memory::gpu(cfg, &train_layout(cfg, topo)?, topo.pp_rank)?;
    Ok(m.total() - m.overhead)
}

/// This rank's planned bytes with the CPU backend (f32, what `swallow train` allocates here).
pub fn planned_cpu_bytes(cfg: &Config, topo: &Topology) -> Result<f64> {
    let l = train_layout(cfg, topo)?;
    Ok(memory::cpu(cfg, &l, topo.pp_rank, topo.dp_rank)?.total())
}

/// Before the CPU backend allocates anything: the ranks of this node together must fit in the
/// memory the node has available (/proc/meminfo's MemAvailable), by the planner's cpu model; an
/// absurd model size is then an error naming both figures, not an allocation failure. Collective.
pub fn check_cpu_memory(cfg: &Config, mpi: &MpiWorld, topo: &Topology) -> Result<()> {
    let (_, per_node) = mpi.node_local();
    let planned = planned_cpu_bytes(cfg, topo);
    let fits = planned.and_then(|bytes| {
        let need = bytes * per_node as f64;
        match mem_available_bytes() {
            Some(have) if need > have => anyhow::bail!(
                "the model needs about {:.1} GiB per rank on the CPU backend (the planner's cpu model; {} on this node: {:.1} GiB), but this node has {:.1} GiB available: use a smaller model, more nodes, or --device cuda",
                bytes / GIB, crate::parallel::topology::ranks(per_node), need / GIB, have / GIB
            ),
            _ => Ok(()),
        }
    });
    crate::parallel::agree::agree(&mpi.world, fits)
}

/// MemAvailable of /proc/meminfo in bytes, where the OS tells it.
fn mem_available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: f64 = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024.0)
}

/// `swallow train --dry-run` after the configuration and data checks: prints (rank 0) the grid,
/// the layout, the pipeline and this step's data slices, then every rank's planned memory on the
/// CPU backend and as a bf16 run on `gpu` (with the configured recomputation), by pipeline stage.
pub fn dry_run(cfg: &Config, mpi: &MpiWorld, topo: &Topology, gpu: &GpuKind) -> Result<()> {
    let l = train_layout(cfg, topo)?;
    let (_, per_node) = mpi.node_local();
    let t = &cfg.train;
    let microbatches = l.microbatches(t.global_batch);
    let layers = crate::pipeline::layers_per_stage(cfg.model.num_layers, l.pp, l.vpp)?;
    let cpu = memory::cpu(cfg, &l, topo.pp_rank, topo.dp_rank)?.total();
    let bf16 = memory::gpu(cfg, &l, topo.pp_rank)?.total();
    let all = all_ranks(mpi, &[cpu, bf16]);
    if topo.rank != 0 {
        return Ok(());
    }
    println!(
        "topology: world {} = tp {} x dp {} x pp {} ({} on rank 0's node) | rank 0's groups: tp {:?}, dp {:?}, pp {:?}",
        topo.world, topo.tp, topo.dp, topo.pp, crate::parallel::topology::ranks(per_node), topo.tp_group(), topo.dp_group(), topo.pp_group()
    );
    println!("layout: {}", l.describe());
    println!(
        "pipeline: {} micro-batches of {} per DP rank per step; layers per virtual stage {:?}",
        microbatches, l.micro_batch, layers
    );
    let local = t.global_batch / l.dp;
    println!(
        "data: DP rank r reads samples [r x {local}, (r + 1) x {local}) of every global batch of {}, {} tokens each",
        t.global_batch,
        t.seq_len + 1
    );
    println!(
        "memory plan per rank (CPU backend f32 | bf16 on {}, {} recompute, capacity {:.2} GiB, of it {:.2} GiB plannable):",
        gpu.name,
        l.recompute.name(),
        gpu.memory_bytes / GIB,
        gpu.plannable_bytes() / GIB
    );
    let per_stage = l.tp * l.dp;
    for s in 0..l.pp {
        let ranks = &all[s * per_stage..(s + 1) * per_stage];
        let range = |i: usize, unit: f64| {
            let lo = ranks.iter().map(|r| r[i]).fold(f64::INFINITY, f64::min) / unit;
            let hi = ranks.iter().map(|r| r[i]).fold(0.0, f64::max) / unit;
            if hi - lo < 0.005 { format!("{hi:.2}") } else { format!("{lo:.2}-{hi:.2}") }
        };
        let cpu_unit = if ranks[0][0] >= GIB { (GIB, "GiB") } else { (MIB, "MiB") };
        let fits = ranks.iter().all(|r| gpu.fits(r[1]));
        println!(
            "  stage {s} (ranks {}-{}): cpu {} {} | {} {} GiB{}",
            s * per_stage,
            (s + 1) * per_stage - 1,
            range(0, cpu_unit.0),
            cpu_unit.1,
            gpu.name,
            range(1, GIB),
            if fits { "" } else { "  DOES NOT FIT" }
        );
    }
    println!(
        "dry run: configuration, topology, layout and data are valid; no model was allocated (rank 0's heap peaked at {:.1} MiB); exiting",
        crate::memstat::peak() as f64 / MIB
    );
    Ok(())
}

/// After training: each rank's measured heap peak during the steps beside its planned bytes
/// (rank 0 prints one line per rank).
pub fn report_measured(cfg: &Config, mpi: &MpiWorld, topo: &Topology, measured: f64) -> Result<()> {
    let planned = planned_cpu_bytes(cfg, topo)?;
    let heading = "memory per rank (heap held during the steps above what existed before the trainer, vs the planner's cpu model):";
    print_beside_plan(mpi, topo, heading, "measured", measured, planned);
    Ok(())
}

/// Rank 0 prints `heading`, then every rank's `what` bytes beside its planned bytes.
fn print_beside_plan(mpi: &MpiWorld, topo: &Topology, heading: &str, what: &str, bytes: f64, planned: f64) {
    let all = all_ranks(mpi, &[bytes, planned]);
    if topo.rank == 0 {
        println!("{heading}");
        for (r, v) in all.iter().enumerate() {
            println!("  rank {r}: {what} {:.2} MiB, planned {:.2} MiB ({:+.1}%)", v[0] / MIB, v[1] / MIB, 100.0 * (v[0] / v[1] - 1.0));
        }
    }
}

/// After a CUDA-backend run: each rank's peak device memory held by the backend (its buffers
/// and scratch; not the CUDA context, cuBLASLt's workspace or NCCL) beside the planner's bf16
/// model for the same layout without its fixed CUDA/NCCL overhead (rank 0 prints one line per rank).
pub fn report_device_memory(cfg: &Config, mpi: &MpiWorld, topo: &Topology, peak: f64) -> Result<()> {
    let planned = planned_device_bytes(cfg, topo)?;
    let heading = "device memory per rank (peak held by the CUDA backend, vs the planner's bf16 model without its fixed CUDA/NCCL overhead):";
    print_beside_plan(mpi, topo, heading, "peak", peak, planned);
    Ok(())
}
