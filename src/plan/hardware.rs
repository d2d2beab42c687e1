//! The one table of hardware figures the planner prices with: per GPU kind its memory, dense bf16
//! peak, the share of it the layer compute sustains, HBM and NVLink bandwidth, and the node it
//! sits in (GPUs per node, InfiniBand per node), and the share of the memory a plan may fill.
//! Sources and reasoning: docs/PLANNER.md.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuKind {
    pub name: &'static str,
    pub description: &'static str,
    /// Memory a process can use, bytes (what nvidia-smi reports as total).
    pub memory_bytes: f64,
    /// Dense bf16 tensor-core peak, TFLOP/s (the MFU denominator).
    pub peak_tflops: f64,
    /// Share of the peak that a decoder layer's compute sustains end to end (GEMMs at about 80%
    /// of peak as cuBLAS measures, attention, norms, element-wise kernels and launch gaps).
    pub sustained_fraction: f64,
    /// HBM bandwidth, GB/s (the optimizer step is bound by it).
    pub hbm_gbps: f64,
    /// NVLink bandwidth per GPU and direction, GB/s.
    pub nvlink_gbps: f64,
    pub gpus_per_node: usize,
    /// InfiniBand per node (all its HCAs, one direction), GB/s.
    pub ib_node_gbps: f64,
}

/// Share of a link's bandwidth that NCCL collectives reach (bus bandwidth / link bandwidth).
pub const LINK_EFFICIENCY: f64 = 0.8;

/// Share of a GPU's memory kept free by every plan, on top of the fixed CUDA/NCCL overhead the
/// memory model counts: what the model cannot see — the caching allocator's fragmentation (free
/// blocks too small for the next request grow over a long run), NCCL buffers created later for
/// new peers, and other processes' contexts on the GPU. A layout planned to within 10% of the
/// capacity is the one that dies of out-of-memory hours into a job.
pub const MEMORY_HEADROOM: f64 = 0.10;

const MIB: f64 = 1024.0 * 1024.0;

pub const GPU_KINDS: [GpuKind; 4] = [
    GpuKind {
        name: "h100",
        description: "H100 SXM 80 GB, 8 x 400 Gb/s InfiniBand per node (a DGX/HGX H100 node)",
        memory_bytes: 81_559.0 * MIB,
        peak_tflops: 989.0,
        sustained_fraction: 0.58,
        hbm_gbps: 3350.0,
        nvlink_gbps: 450.0,
        gpus_per_node: 8,
        ib_node_gbps: 400.0,
    },
    GpuKind {
        name: "h100-94",
        description: "H100 SXM5 94 GB, 4 x 200 Gb/s InfiniBand per node (TSUBAME 4.0's node_f)",
        memory_bytes: 94e9,
        peak_tflops: 989.0,
        sustained_fraction: 0.58,
        hbm_gbps: 3350.0,
        nvlink_gbps: 450.0,
        gpus_per_node: 4,
        ib_node_gbps: 100.0,
    },
    GpuKind {
        name: "h200",
        description: "H200 SXM 141 GB, 8 x 400 Gb/s InfiniBand per node (ABCI 3.0's rt_HF node)",
        memory_bytes: 143_771.0 * MIB,
        peak_tflops: 989.0,
        sustained_fraction: 0.58,
        hbm_gbps: 4800.0,
        nvlink_gbps: 450.0,
        gpus_per_node: 8,
        ib_node_gbps: 400.0,
    },
    GpuKind {
        name: "a100",
        description: "A100 SXM 40 GB, 4 x 200 Gb/s InfiniBand per node (ABCI-like, as Swallow ran)",
        memory_bytes: 40_960.0 * MIB,
        peak_tflops: 312.0,
        sustained_fraction: 0.68,
        hbm_gbps: 1555.0,
        nvlink_gbps: 300.0,
        gpus_per_node: 8,
        ib_node_gbps: 100.0,
    },
];

impl GpuKind {
    pub fn by_name(name: &str) -> Result<GpuKind> {
        match GPU_KINDS.iter().find(|g| g.name == name) {
            Some(g) => Ok(*g),
            None => {
                let names: Vec<&str> = GPU_KINDS.iter().map(|g| g.name).collect();
                bail!("--gpu {name:?}: expected one of {}", names.join(", "))
            }
        }
    }

    /// Bytes a plan may fill: the memory less `MEMORY_HEADROOM`.
    pub fn plannable_bytes(&self) -> f64 {
        self.memory_bytes * (1.0 - MEMORY_HEADROOM)
    }

    /// Whether `bytes` per GPU fit within the plannable memory.
    pub fn fits(&self, bytes: f64) -> bool {
        bytes <= self.plannable_bytes()
    }

    /// FLOP/s the layer compute sustains.
    pub fn sustained_flops(&self) -> f64 {
        self.peak_tflops * 1e12 * self.sustained_fraction
    }

    /// Bytes/s one GPU moves to a peer inside its node.
    pub fn intra_node_bps(&self) -> f64 {
        self.nvlink_gbps * 1e9 * LINK_EFFICIENCY
    }

    /// Bytes/s one GPU moves to other nodes while every GPU of its node does the same.
    pub fn inter_node_bps(&self) -> f64 {
        self.ib_node_gbps * 1e9 * LINK_EFFICIENCY / self.gpus_per_node as f64
    }
}
